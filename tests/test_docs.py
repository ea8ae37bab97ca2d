"""The guides tell the truth: every command they show runs, every example parses.

Every fenced code block in ``docs/*.md`` and ``README.md`` is searched for Python
invocations (``python -m nuke_comfy_cluster ...``, ``python examples/...py``,
``python -m benchmarks...``) and ``bash scripts/...``, wherever they stand on a
line (a crontab line, a systemd ``ExecStart=``, a Nagios ``command_line``). Each
one is either RUN here, in a subprocess with its own temporary home, against two
live simulator processes on 127.0.0.1, asserting its documented exit code
(``# exit N`` after it on the line, else 0) and no traceback, or, for the few
listed in :data:`NOT_RUN` with the reason, checked as far as possible without
running it (``--help`` works and lists every flag the guide uses; scripts exist
and parse).

Absolute paths the guides use as examples (the studio share, the install folder,
node_exporter's folder) are mapped to the temporary home: :data:`PLACEHOLDERS`.
Nothing here talks to an address other than 127.0.0.1: commands that reach
servers always get the simulators' configuration.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from nuke_comfy_cluster.core import config as config_mod
from nuke_comfy_cluster.core import config_store
from nuke_comfy_cluster.core.config import load_config, parse_servers
from nuke_comfy_cluster.core.templating import has_frame_token, validate_workflow
from tests.conftest import REPO

pytestmark = pytest.mark.integration

DOCS = sorted((REPO / "docs").glob("*.md")) + ([REPO / "README.md"] if (REPO / "README.md").is_file() else [])
EXAMPLES = REPO / "examples"
PACKAGE = REPO / "nuke_comfy_cluster"

#: commands a guide shows that this test does not run, and why. They are still
#: checked: ``--help`` answers and lists every flag the guide uses, or the script
#: exists and ``bash -n`` accepts it.
NOT_RUN: Dict[str, str] = {
    "nuke_comfy_cluster panel": "opens a Qt window; tests/ui covers the panel",
    "nuke_comfy_cluster install": "writes into a Nuke user folder; tests/nuke/test_install.py covers it",
    "nuke_comfy_cluster uninstall": "removes from a Nuke user folder; tests/nuke/test_install.py covers it",
    "nuke_comfy_cluster.sim": "a server that runs until stopped; this test starts it through SimProcess",
    "benchmarks": "minutes of load; their own smoke tests and docs/PERFORMANCE.md hold their output",
    "scripts/run": "creates .venv with pip first; the demo it runs is run here as `python -m nuke_comfy_cluster demo`",
    "scripts/test": "the whole suite, which CI runs (.ci/run)",
    "scripts/setup.sh": "installs with pip and apt",
    "scripts/mutation": "one test run per planted bug: minutes (--quick) to hours; docs/RELIABILITY.md holds its figures",
    "main.py": "ComfyUI's own start command, not part of this repository",
    "venv": "creates a virtual environment, a setup step for Nuke's Python (docs/NUKE.md)",
    "pip": "installs packages from the network",
}

#: example paths in the guides -> where they point during the test ({home}, {config}, {repo})
PLACEHOLDERS: Dict[str, str] = {
    "/studio/pipeline/comfyui_servers.json": "{config}",
    "/opt/nuke_comfy_cluster": "{repo}",
    "/var/lib/node_exporter/textfile_collector": "{home}/textfile_collector",
    "/var/log": "{home}/log",
}

#: environment variables the guides may name although the code does not read them
UNREAD_VARIABLES: Dict[str, str] = {
    "NUKE_COMFYUI_URL": "docs/MIGRATION.md explains that it is NOT read and how to convert it",
}

#: messages docs/TROUBLESHOOTING.md must explain; each must also still exist in the code
MESSAGES = (
    # http / server status
    "connection refused or dropped",
    "is the server up and reachable?",
    "server hung or overloaded",
    "TLS error with",
    "request to",
    "answered HTTP",
    "answered a body that is not JSON",
    "answered an unexpected body",
    "cooling down after failures",
    "Not checked yet",
    "websocket push (live)",
    "which DNS does not allow",
    # configuration: source and file
    "is wrapped in quotes; they were removed",
    "it is a folder, not a JSON file",
    "not a regular file",
    "not a usable file name",
    "not a server list",
    "points to a missing file",
    "points to a folder",
    "points to something that is not a file",
    "points to an unreadable file",
    "points to a file too large",
    "points to a file that is not UTF-8 text",
    "has no usable entry",
    "holds no servers",
    "skipped because of errors",
    "none is enabled",
    " — using the default server",
    " — using single server",
    "are not set either",
    # configuration: JSON text
    "JSON does not allow a comma after the last item",
    "JSON strings use double quotes",
    "names must be in double quotes",
    "a backslash must be doubled",
    "is not usable JSON: nested too deeply",
    "holds one server object, not an array",
    '"servers" must be an array of server objects',
    "unknown top-level key",
    "expected an array of server objects",
    # configuration: entries
    "expected an object like",
    "unknown field",
    "is given more than once; the last one is used",
    "leading/trailing spaces removed",
    "names are compared ignoring case); entry ignored",
    'put the port in "port"',
    'give the host only, or write the whole address as "url"',
    "host names use letters, digits, '-' and '.'",
    "expected a valid IPv4 address",
    "expected a valid IPv6 address",
    "expected an IPv6 address inside [brackets]",
    "expected an integer 1-65535",
    "write it as a number",
    'the scheme must be "http" or "https"',
    "must not hold a user name or password",
    "a path, query or fragment is not supported",
    "disagrees with",
    "websockets follow the scheme: https uses wss",
    "expected a folder path as a string",
    "empty while the other folder is set: paths will not be mapped for this server",
    "expected an integer (lower = preferred)",
    "expected true or false",
    "the prefix is added when sending, so it was removed",
    "not allowed in an HTTP header",
    "is not a valid HTTP header name",
    "expected an object of header names to string values",
    "expected an integer >= 0 (0 = scheduler default)",
    "is not set: paths will not be mapped",
    # configuration file
    "Not saved: ",
    "Not restored: backup",
    "another program has been saving it for more than",
    "disk full",
    "read-only file system",
    "file or folder not found",
    "to back up",
    "no backups of",
    "was not imported: fix the errors above",
    # submitting
    "is a UI-format workflow; export it with 'Save (API Format)'",
    "is not an API-format ComfyUI workflow",
    "has no class_type",
    "inputs is not an object",
    "is configured (configured:",
    "was chosen for this submission but is not available",
    "No ComfyUI server is available",
    "ComfyUI rejected the workflow: ",
    "Workflow rejected: ",
    " attempts; last: ",
    "our prompt vanished from its queue and history (server restarted?)",
    "the prompt was interrupted on the server",
    "could not fetch the result",
    "could not write",
    "was removed from the configuration",
    ": unexpected ",
    "Waiting for a server (",
    "is no longer configured",
    "Servers are back: continuing",
    "No server came back within",
    "Frames already rendered are kept; ",
    "use Retry failed when a server is up.",
    "cancelled by the user",
    "must be a plain file name",
    # paths
    "The server sent an unsafe",
    "leads outside the output folder",
    "reserved device name on Windows",
    # command line
    "--frames: cannot read",
    "is an empty range",
    "names a frame twice",
    "cannot read workflow",
    "timed out: cancelled what was left",
    "interrupted",
    # panel and config editor
    "No configuration loaded",
    "Not used: ",
    "Last error: ",
    "submissions pinned to it will fail",
    "Refresh failed: ",
    "Submit failed: ",
    "servers available",
    "Unexpected error: ",
    "Not saved: fix the errors first",
    "does not exist yet: showing the servers in use",
    "holds inline JSON, which this editor cannot change",
    "Fix the JSON text first: the table edits an array of servers",
    "Fix the JSON text to edit the table.",
    "The text holds one server object, not an array: press Add to make it a list.",
    "Nothing to export: no valid server in the editor",
    "Nothing imported from",
    "the panel is closing",
    # the Nuke node
    "No workflow file: choose an API-format JSON file",
    "Cannot read the workflow",
    "which the workflow no longer has: reload the workflow",
    "is empty: last is before first",
    "Iterations must be at least 1",
    "must be a plain file name (no folders)",
    "is already running: cancel it first",
    "Not submitted: ",
    "Failed: the inputs could not be rendered",
    "Nothing to cancel: this node is not running",
    "Rendering inputs...",
    "Submitting to the cluster...",
    "cannot use this workflow",
    "no workflow loaded",
    "other errors, see details",
)

#: fenced blocks in these languages hold output, data or code, not shell commands
_NOT_SHELL = {"text", "json", "python", "yaml", "yml", "toml", "diff", "output"}


# --------------------------------------------------------------------------- reading the guides


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> List[Block]:
    blocks: List[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        body: List[str] = []
        j = i + 1
        while j < len(lines) and not re.match(
            r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$", lines[j]
        ):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        blocks.append(Block(path, i + 1, lang, "\n".join(body)))
        i = j + 1
    return blocks


def all_blocks() -> List[Block]:
    return [b for doc in DOCS for b in fenced_blocks(doc)]


@dataclass(frozen=True)
class Command:
    where: str
    kind: str  # "python" | "script"
    argv: Tuple[str, ...]  # after the interpreter (python) or the script path first (script)
    expected: int = 0
    text: str = ""

    @property
    def key(self) -> Tuple[str, Tuple[str, ...], int]:
        return (self.kind, self.argv, self.expected)


_PYTHON = re.compile(r"(?:^|(?<=[\s=;&|(`]))(?P<exe>(?!-)[^\s'\";&|()`=]*\bpython(?:3(?:\.\d+)?)?(?:\.exe)?)(?=\s)")
_SCRIPT = re.compile(r"(?:^|(?<=[\s;&|(]))(?:bash|sh)\s+(?P<script>[^\s;&|]*scripts/[\w.-]+)(?P<rest>[^\n]*)")
_EXIT = re.compile(r"\bexit(?: code)?\s+(\d+)")


def cut_command(rest: str) -> Tuple[str, str]:
    """(the command's own text, the comment after it) from what follows the interpreter.

    Stops at the first unquoted shell operator, redirection or ``#`` comment.
    """
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "|;&<>)`":
            return rest[:i], _comment(rest[i:])
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i], rest[i + 1 :]
        elif ch.isdigit() and rest[i + 1 : i + 2] == ">" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i], _comment(rest[i:])
    return rest, ""


def _comment(tail: str) -> str:
    m = re.search(r"(?:^|\s)#(.*)$", tail)
    return m.group(1) if m else ""


def commands_in(block: Block) -> List[Command]:
    if block.lang in _NOT_SHELL:
        return []
    found: List[Command] = []
    text = re.sub(r"\\\n\s*", " ", block.body)  # line continuations
    for offset, line in enumerate(text.splitlines(), start=1):
        where = f"{block.where}+{offset}"
        if line.lstrip().startswith(("#", "rem ", "REM ", "::")):
            continue  # a comment line, not a command
        for m in _PYTHON.finditer(line):
            own, comment = cut_command(line[m.end() :])
            argv = tuple(shlex.split(own))
            if not argv:
                continue
            exit_match = _EXIT.search(comment)
            expected = int(exit_match.group(1)) if exit_match else 0
            found.append(Command(where, "python", argv, expected, line.strip()))
        for m in _SCRIPT.finditer(line):
            own, _ = cut_command(m.group("rest"))
            found.append(Command(where, "script", (m.group("script"),) + tuple(shlex.split(own)), 0, line.strip()))
    return found


def all_commands() -> List[Command]:
    return [c for b in all_blocks() for c in commands_in(b)]


def classify(cmd: Command) -> Tuple[str, str]:
    """("run", "") or ("check", reason from NOT_RUN), or ("unknown", why) for a failure."""
    argv = cmd.argv
    if cmd.kind == "script":
        name = argv[0]
        for key, reason in NOT_RUN.items():
            if key.startswith("scripts/") and name.endswith(key):
                return "check", reason
        return "unknown", f"no rule for script {name}"
    if argv[0] == "-m" and len(argv) > 1:
        module = argv[1]
        if module == "nuke_comfy_cluster":
            sub = next((a for a in argv[2:] if not a.startswith("-")), "")
            reason = NOT_RUN.get(f"nuke_comfy_cluster {sub}")
            if reason:
                return "check", reason
            if any("…" in a or "..." in a for a in argv):
                return "check", "a usage line with a placeholder: the command before it must answer --help"
            return "run", ""
        if module.startswith("nuke_comfy_cluster.sim"):
            return "check", NOT_RUN["nuke_comfy_cluster.sim"]
        if module.startswith("benchmarks."):
            return "check", NOT_RUN["benchmarks"]
        if module in ("venv", "pip"):
            return "check", NOT_RUN[module]
        return "unknown", f"no rule for module {module}"
    if argv[0] == "main.py":
        return "check", NOT_RUN["main.py"]
    if argv[0].endswith(".py") and "examples/" in argv[0]:
        return "run", ""
    return "unknown", "no rule for this python command"


# --------------------------------------------------------------------------- running them


@dataclass
class Outcome:
    returncode: Optional[int]
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)
    argv: List[str] = field(default_factory=list)  # as run: placeholders and ~ replaced


def _substitute(token: str, env: Dict[str, str], paths: Dict[str, str]) -> str:
    for example, target in PLACEHOLDERS.items():
        if token.startswith(example):
            token = target.format(**paths) + token[len(example) :]
    if token == "~" or token.startswith("~/"):
        token = env["HOME"] + token[1:]
    token = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), token)
    return token


def _live_config(ports: List[int]) -> str:
    servers = [{"name": f"gpu{i + 1}", "ip": "127.0.0.1", "port": port, "priority": i} for i, port in enumerate(ports)]
    return json.dumps(servers, indent=2) + "\n"


def _prepare_home(home: Path, ports: List[int]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """A home as a reader of the guides has it: a configuration file with a backup, both live."""
    nuke_dir = home / ".nuke"
    nuke_dir.mkdir(parents=True)
    config = nuke_dir / "comfyui_servers.json"
    config.write_text(_live_config(ports), encoding="utf-8")
    config_store.backup_now(config)
    (home / "comfyui_servers.json").write_text(_live_config(ports), encoding="utf-8")  # MIGRATION's export
    for folder in ("textfile_collector", "log"):
        (home / folder).mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NUKE_COMFYUI_", "NUKE_COMFY_CLUSTER_")) and k.lower() not in ("http_proxy", "https_proxy")
    }
    env.update(
        HOME=str(home),
        USERPROFILE=str(home),
        NUKE_COMFY_CLUSTER_HOME=str(nuke_dir),
        NUKE_COMFYUI_SERVERS=str(config),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        PYTHONDONTWRITEBYTECODE="1",
        QT_QPA_PLATFORM="offscreen",
        no_proxy="127.0.0.1,localhost",
    )
    return env, {"home": str(home), "config": str(config), "repo": str(REPO)}


def run_documented(cmd: Command, home: Path, ports: List[int]) -> Outcome:
    env, paths = _prepare_home(home, ports)
    argv = [sys.executable] + [_substitute(a, env, paths) for a in cmd.argv]
    started = time.monotonic()
    if "--watch" in cmd.argv:
        outcome = _run_watch(argv, env, started)
    else:
        try:
            done = subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
            outcome = Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as e:
            outcome = Outcome(None, str(e.stdout or ""), str(e.stderr or ""), time.monotonic() - started, ["timed out"])
    outcome.argv = argv[1:]
    return outcome


def _option(argv: List[str], flag: str) -> Optional[str]:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _positionals(argv: List[str]) -> List[str]:
    with_value = {"--file", "--frames", "--iterations", "--seed", "--server", "--out", "--name", "--timeout", "--watch"}
    out: List[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in with_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def what_went_wrong(out: Outcome) -> Optional[str]:
    """Beyond the exit code: did the command do what the guide says it does? None when it did."""
    argv = out.argv
    if argv[:2] != ["-m", "nuke_comfy_cluster"]:
        script = Path(argv[0]).name
        if script == "check_comfy_cluster.py" and not out.stdout.startswith(
            "COMFY CLUSTER OK - 2/2 enabled servers up"
        ):
            return "the Nagios check did not report OK"
        if script == "comfy_cluster_textfile.py":
            metrics = Path(argv[1]).read_text(encoding="utf-8").splitlines()
            if "comfy_cluster_health 0" not in metrics or "comfy_cluster_check_ok 1" not in metrics:
                return "the .prom file does not say the cluster is healthy"
        return None
    rest = argv[2:]
    sub, args = rest[0], rest[1:]
    if "--watch" in args:
        return None  # checked by its exit code and output
    if sub == "health":
        if "--json" in args:
            data = json.loads(out.stdout.strip().splitlines()[-1])
            if data["exit_code"] != 0 or [s["status"] for s in data["servers"]] != ["online"] * 2:
                return "health --json did not see both live servers online"
        elif not out.stdout.startswith("OK Using 2 servers from "):
            return "health did not say OK for the two live servers"
    elif sub == "status":
        if "--json" in args:
            if [s["name"] for s in json.loads(out.stdout)["servers"]] != ["gpu1", "gpu2"]:
                return "status --json does not list the live servers"
        elif "NAME" not in out.stdout or "gpu2" not in out.stdout:
            return "status printed no table"
    elif sub == "validate":
        if "--json" in args:
            if json.loads(out.stdout)["valid"] is not True:
                return "validate --json did not say valid"
        elif out.stdout.strip().splitlines()[-1] != "valid":
            return "validate did not end with 'valid'"
    elif sub == "backup":
        if not Path(out.stdout.strip()).is_file():
            return "backup did not print the path of a new file"
    elif sub == "restore":
        expected = "restored " if _positionals(args) else "  1  "
        if expected not in out.stdout:
            return f"restore did not print {expected!r}"
    elif sub == "export":
        dest = Path(_positionals(args)[0])
        servers, issues = parse_servers(dest.read_text(encoding="utf-8"), origin=str(dest))
        if len(servers) != 2 or issues:
            return "export did not write the two servers in use"
    elif sub == "import":
        target = Path(_option(args, "--file") or out.stdout.split(" into ", 1)[1].split(" (")[0].strip())
        source = Path(REPO, _positionals(args)[0])
        if [s.name for s in parse_servers(target.read_text(encoding="utf-8"))[0]] != [
            s.name for s in parse_servers(source.read_text(encoding="utf-8"))[0]
        ]:
            return "import did not write the imported servers"
    elif sub == "submit":
        if "--json" in args and json.loads(out.stdout)["state"] != "done":
            return "submit --json did not report done"
        folder = _option(args, "--out")
        if folder:
            count = int(_option(args, "--iterations") or 0)
            frames = _option(args, "--frames")
            if frames:
                first, last = (int(x) for x in frames.split("-"))
                count = last - first + 1
            if len(list(Path(folder).glob("*.png"))) != count:
                return f"submit did not deliver {count} images into {folder}"
    elif sub == "demo":
        if "makespan" not in out.stdout:
            return "the demo printed no summary"
    return None


def _run_watch(argv: List[str], env: Dict[str, str], started: float) -> Outcome:
    """A --watch command runs until Ctrl-C: let it print once, then send SIGINT."""
    out_path = Path(env["HOME"]) / "watch.out"
    err_path = Path(env["HOME"]) / "watch.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None and out_path.stat().st_size == 0:
                time.sleep(0.1)
            time.sleep(0.3)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            code: Optional[int] = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            code = None
    return Outcome(
        code,
        out_path.read_text(encoding="utf-8", errors="replace"),
        err_path.read_text(encoding="utf-8", errors="replace"),
        time.monotonic() - started,
        ["watch: SIGINT sent"],
    )


def _unique(commands: List[Command]) -> List[Command]:
    seen: Dict[Tuple[str, Tuple[str, ...], int], Command] = {}
    for c in commands:
        seen.setdefault(c.key, c)
    return list(seen.values())


COMMANDS = _unique(all_commands())
TO_RUN = [c for c in COMMANDS if classify(c)[0] == "run"]
TO_CHECK = [c for c in COMMANDS if classify(c)[0] == "check"]


def _id(cmd: Command) -> str:
    return "{} {}".format(cmd.where, " ".join(cmd.argv))[:120]


@pytest.fixture(scope="module")
def live_ports():
    from nuke_comfy_cluster.sim.process import start_cluster, stop_all

    procs = start_cluster([1.0, 0.5], seconds=0.05)
    try:
        yield [p.port for p in procs]
    finally:
        stop_all(procs)


@pytest.fixture(scope="module")
def outcomes(live_ports, tmp_path_factory) -> Dict[Tuple[str, Tuple[str, ...], int], Outcome]:
    """Every runnable documented command, run once, a few at a time."""
    root = tmp_path_factory.mktemp("doc-commands")

    def one(item: Tuple[int, Command]) -> Tuple[Tuple[str, Tuple[str, ...], int], Outcome]:
        index, cmd = item
        return cmd.key, run_documented(cmd, root / f"home{index}", live_ports)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, enumerate(TO_RUN)))


# --------------------------------------------------------------------------- the harness itself


def test_the_guides_exist_and_show_commands():
    names = {p.name for p in DOCS}
    for guide in ("CONFIGURATION.md", "LOAD_BALANCING.md", "TROUBLESHOOTING.md", "MIGRATION.md", "OPERATIONS.md"):
        assert guide in names
    per_doc: Dict[str, int] = {}
    for c in COMMANDS:
        doc = c.where.split(":")[0]
        per_doc[doc] = per_doc.get(doc, 0) + 1
    assert per_doc.get("docs/OPERATIONS.md", 0) >= 15, per_doc
    assert per_doc.get("docs/MIGRATION.md", 0) >= 4, per_doc


@pytest.mark.parametrize(
    "line, argv, expected",
    [
        (
            '*/5 * * * * cd /x && out=$(.venv/bin/python -m nuke_comfy_cluster health 2>&1) || echo "$out"',
            ("-m", "nuke_comfy_cluster", "health"),
            0,
        ),
        (
            "ExecStart=/opt/x/.venv/bin/python /opt/x/examples/a.py /var/a.prom",
            ("/opt/x/examples/a.py", "/var/a.prom"),
            0,
        ),
        (
            "python -m nuke_comfy_cluster validate bad.json   # exit 1: it has errors",
            ("-m", "nuke_comfy_cluster", "validate", "bad.json"),
            1,
        ),
        (
            "$ python3 -m nuke_comfy_cluster export '~/a b.json' > /dev/null",
            ("-m", "nuke_comfy_cluster", "export", "~/a b.json"),
            0,
        ),
        ("python -m nuke_comfy_cluster \\\n    status --json", ("-m", "nuke_comfy_cluster", "status", "--json"), 0),
    ],
)
def test_command_extraction(line, argv, expected):
    cmds = commands_in(Block(REPO / "README.md", 1, "bash", line))
    assert [(c.argv, c.expected) for c in cmds] == [(argv, expected)]


def test_output_blocks_are_not_commands():
    assert commands_in(Block(REPO / "README.md", 1, "text", "usage: python -m nuke_comfy_cluster [-h]")) == []


def test_every_command_is_classified():
    unknown = [(c.where, c.text, classify(c)[1]) for c in COMMANDS if classify(c)[0] == "unknown"]
    assert not unknown, f"add a rule or a NOT_RUN entry with the reason: {unknown}"


# --------------------------------------------------------------------------- running and checking them


@pytest.mark.parametrize("cmd", TO_RUN, ids=_id)
def test_documented_command_runs(cmd, outcomes):
    out = outcomes[cmd.key]
    both = out.stdout + out.stderr
    detail = "{}\n$ python {}\n--- stdout\n{}\n--- stderr\n{}".format(
        cmd.where, " ".join(cmd.argv), out.stdout[-3000:], out.stderr[-3000:]
    )
    assert "Traceback" not in both, detail
    if "--watch" in cmd.argv:
        assert out.returncode == 130, detail
        assert out.stdout.strip(), detail
        assert "interrupted" in out.stderr, detail
    else:
        assert out.returncode == cmd.expected, detail
        if cmd.expected == 0:
            assert what_went_wrong(out) is None, what_went_wrong(out) + "\n" + detail


def _help_text(argv: List[str]) -> str:
    done = subprocess.run(
        [sys.executable] + argv + ["--help"], cwd=str(REPO), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "usage:" in done.stdout
    return done.stdout


@pytest.mark.parametrize("cmd", TO_CHECK, ids=_id)
def test_documented_command_not_run_is_checked(cmd):
    kind, reason = classify(cmd)
    assert kind == "check" and reason
    argv = list(cmd.argv)
    if cmd.kind == "script":
        script = REPO / argv[0]
        assert script.is_file(), f"{cmd.where}: {argv[0]} does not exist"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        for flag in (a for a in argv[1:] if a.startswith("-")):
            assert flag in script.read_text(encoding="utf-8"), f"{cmd.where}: {argv[0]} does not handle {flag}"
        return
    if argv[0] == "main.py" or argv[1] in ("venv", "pip"):
        return  # not ours: nothing of this repository to check
    for i, token in enumerate(argv):
        if "…" in token or "..." in token:
            argv = argv[:i]
            break
    base = argv[:3] if argv[1] == "nuke_comfy_cluster" and len(argv) > 2 else argv[:2]
    if argv[1] == "nuke_comfy_cluster" and len(argv) > 2 and argv[2].startswith("-"):
        base = argv[:2]
    modules = [base[1]]
    brace = re.fullmatch(r"(.*)\{(.+)\}", base[1])
    if brace:
        modules = [brace.group(1) + name for name in brace.group(2).split(",")]
    for module in modules:
        text = _help_text(["-m", module] + base[2:])
        for flag in (a.split("=")[0] for a in argv[len(base) :] if a.startswith("--")):
            assert flag in text, f"{cmd.where}: {module} does not accept {flag}"


# --------------------------------------------------------------------------- JSON and variables


def _is_server_config(data: object) -> bool:
    def server_like(item: object) -> bool:
        return isinstance(item, dict) and ("ip" in item or "url" in item) and "status" not in item

    if isinstance(data, list):
        return bool(data) and all(server_like(item) for item in data)
    if isinstance(data, dict) and "servers" in data:
        extra = [k for k in data if k not in ("servers", "version", "$schema") and not k.startswith("_")]
        return not extra and isinstance(data["servers"], list)
    return False


def test_json_blocks_parse_and_server_lists_have_no_issue():
    checked = 0
    for block in all_blocks():
        if block.lang != "json":
            continue
        try:
            data = json.loads(block.body)
        except ValueError as e:
            pytest.fail(f"{block.where}: not valid JSON: {e}")
        if _is_server_config(data):
            servers, issues = parse_servers(block.body, origin=block.where)
            assert servers, block.where
            issues = [i for i in issues if "placeholder" not in i.message]  # REPLACE-WITH-YOUR-TOKEN is meant
            assert not issues, (block.where, [i.message for i in issues])
            checked += 1
    assert checked >= 8


_INLINE_VALUE = re.compile(r"""NUKE_COMFYUI_SERVERS=(?P<value>'[^']*'|"[^"]*"|\S+)""")


def test_inline_variable_values_load_without_issue():
    """``export NUKE_COMFYUI_SERVERS='[...]'`` and Windows ``set`` lines, loaded as Nuke would."""
    checked = 0
    for block in all_blocks():
        for line in block.body.splitlines():
            line = line.strip()
            if line.lower().startswith("set ") and "NUKE_COMFYUI_SERVERS=" in line:
                value = line.split("=", 1)[1]
            else:
                m = _INLINE_VALUE.search(line)
                if not m:
                    continue
                value = m.group("value")
                if value[:1] in "'\"" and value[-1:] == value[:1]:
                    value = value[1:-1]
            if value[:1] not in "[{":
                continue  # a path: where it points is the reader's
            loaded = load_config({"NUKE_COMFYUI_SERVERS": value})
            assert loaded.source == "inline", (block.where, line)
            assert not loaded.issues, (block.where, [i.message for i in loaded.issues])
            checked += 1
    assert checked >= 2


def test_ini_blocks_parse():
    for block in all_blocks():
        if block.lang == "ini":
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(block.body)
            assert parser.sections(), block.where


def test_example_server_files_load_without_issue():
    files = sorted(EXAMPLES.glob("servers-*.json"))
    assert len(files) >= 5
    for path in files:
        servers, issues = parse_servers(path.read_text(encoding="utf-8"), origin=str(path))
        issues = [i for i in issues if "placeholder" not in i.message]  # REPLACE-WITH-YOUR-TOKEN is meant
        assert servers and not issues, (path.name, [i.message for i in issues])
        loaded = load_config({"NUKE_COMFYUI_SERVERS": str(path)})
        assert loaded.source == "file" and loaded.ok and len(loaded.servers) == len(servers), loaded.notice
        assert loaded.notice.startswith(f"Using {len(servers)} server"), loaded.notice


def test_example_workflow_is_api_format_with_a_frame_token():
    workflow = json.loads((EXAMPLES / "workflow_api.json").read_text(encoding="utf-8"))
    validate_workflow(workflow)
    prefixes = [n["inputs"].get("filename_prefix", "") for n in workflow.values()]
    assert any(has_frame_token(p) for p in prefixes if isinstance(p, str))


def test_every_example_is_referenced_by_a_guide():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    for path in sorted(EXAMPLES.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".py"):
            assert str(path.relative_to(REPO)) in text, f"{path.relative_to(REPO)} is in no guide"


def _package_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py")))


def test_documented_variables_exist():
    source = _package_source()
    names = set()
    for doc in DOCS:
        names |= set(re.findall(r"\bNUKE_COMFY[A-Z_]*[A-Z]", doc.read_text(encoding="utf-8")))
    assert "NUKE_COMFYUI_SERVERS" in names
    for name in sorted(names):
        if name in UNREAD_VARIABLES:
            # the guide says it is not read: keep that true
            assert f'"{name}"' not in source, f"{name} is read now: update {UNREAD_VARIABLES[name]}"
            continue
        assert f'"{name}"' in source, f"{name} is in a guide but the code never reads it"


def test_configuration_documents_exactly_the_fields():
    text = (REPO / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    section = text.split("### Fields", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert sorted(rows) == sorted(config_mod.FIELDS)


def test_operations_documents_every_command_and_flag():
    from nuke_comfy_cluster.cli import build_parser

    text = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    parser = build_parser()
    assert "--verbose" in text
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        row = re.search(r"^\|[^\n]*`" + re.escape(name) + r"[ `][^\n]*", text, re.M)
        assert row, f"{name} is not in the table of OPERATIONS.md"
        heading = re.search(r"^(#{2,3}) " + re.escape(name) + r"\s*$", text, re.M)
        section = ""
        if heading:
            rest = text[heading.end() :]
            end = re.search(r"^#{2," + str(len(heading.group(1))) + r"} ", rest, re.M)
            section = rest[: end.start()] if end else rest
        if name in ("panel", "install", "uninstall"):
            continue  # their own parsers, documented in docs/NUKE.md
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in row.group(0) or flag in section, f"{name} {flag} is not documented"


def test_troubleshooting_explains_every_message():
    guide = (REPO / "docs" / "TROUBLESHOOTING.md").read_text(encoding="utf-8")
    source = _package_source()
    missing_in_code = [m for m in MESSAGES if m not in source]
    missing_in_guide = [m for m in MESSAGES if m not in guide]
    assert not missing_in_code, (
        f"the code no longer says these: update TROUBLESHOOTING.md and MESSAGES: {missing_in_code}"
    )
    assert not missing_in_guide, f"TROUBLESHOOTING.md does not explain: {missing_in_guide}"


def test_python_blocks_compile_and_their_imports_exist():
    import importlib

    checked = 0
    for block in all_blocks():
        if block.lang != "python":
            continue
        tree = ast.parse(block.body, filename=block.where)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nuke_comfy_cluster"):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        importlib.import_module(f"{node.module}.{alias.name}")  # a submodule, or ImportError
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "env":
                from nuke_comfy_cluster.core import env

                assert hasattr(env, node.attr), f"{block.where}: env.{node.attr} does not exist"
        checked += 1
    assert checked >= 3


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_relative_links_and_anchors_resolve():
    broken: List[str] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} does not exist")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#{1,6} (.+)$", dest.read_text(encoding="utf-8"), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{doc.relative_to(REPO)}: {target} has no such heading")
    assert not broken, broken


# --------------------------------------------------------------------------- monitoring wrappers


def _wrapper_env(tmp_path: Path, servers: List[dict]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUKE_COMFYUI_")}
    env["NUKE_COMFYUI_SERVERS"] = json.dumps(servers)
    env["NUKE_COMFY_CLUSTER_HOME"] = str(tmp_path / "home")
    return env


def test_monitoring_wrappers_report_a_dead_server(live_ports, tmp_path):
    servers = [
        {"name": "gpu1", "ip": "127.0.0.1", "port": live_ports[0]},
        {"name": "gpu9", "ip": "127.0.0.1", "port": 9},  # nothing listens on the discard port
    ]
    env = _wrapper_env(tmp_path, servers)
    check = subprocess.run(
        [sys.executable, str(EXAMPLES / "monitoring" / "check_comfy_cluster.py")],
        cwd=str(tmp_path),  # the wrapper finds the package by itself
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.startswith("COMFY CLUSTER WARNING - 1/2 enabled servers up; down: gpu9 (")
    assert "| up=1;;;0;2 queue=" in check.stdout

    prom = tmp_path / "comfy.prom"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "monitoring" / "comfy_cluster_textfile.py"), str(prom)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    metrics = prom.read_text(encoding="utf-8")
    for line in (
        "comfy_cluster_check_ok 1",
        "comfy_cluster_health 1",
        "comfy_cluster_config_errors 0",
        'comfy_cluster_server_up{server="gpu1"} 1',
        'comfy_cluster_server_up{server="gpu9"} 0',
    ):
        assert line in metrics.splitlines(), metrics
    assert 'comfy_cluster_server_queue_running{server="gpu9"}' not in metrics
    assert not list(tmp_path.glob(".comfy_cluster.*.tmp"))


def test_monitoring_wrappers_on_a_broken_configuration(tmp_path):
    env = _wrapper_env(tmp_path, [])
    env["NUKE_COMFYUI_SERVERS"] = '[{"name": "gpu1", "ip": "127.0.0.1", "port": 70000}]'
    env["NUKE_COMFYUI_PORT"] = "9"  # the fallback server: loopback, nothing listens
    check = subprocess.run(
        [sys.executable, str(EXAMPLES / "monitoring" / "check_comfy_cluster.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2, check.stdout + check.stderr
    assert check.stdout.startswith("COMFY CLUSTER CRITICAL - ") and "config error: " in check.stdout
