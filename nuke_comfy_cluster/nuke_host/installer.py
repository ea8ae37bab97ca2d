"""``python -m nuke_comfy_cluster install / uninstall``: put the plugin where Nuke finds it.

Layout written under the Nuke folder (``~/.nuke`` by default, or ``--nuke-dir``,
e.g. a studio folder on ``NUKE_PATH``)::

    <nuke_dir>/init.py                          + a marked block: nuke.pluginAddPath(<plugin>)
    <nuke_dir>/nuke_comfy_cluster_plugin/
        init.py, menu.py                        the entry points
        nuke_comfy_cluster/                     this package
        resources/                              the toolbar icon
        site-packages/                          requests, urllib3, idna, charset_normalizer,
                                                certifi, websocket (copied from this Python,
                                                no network)
        install.json                            what install did, so uninstall undoes exactly that

Install is idempotent (the block is replaced, never duplicated; the plugin folder
is rebuilt). Uninstall removes the plugin folder and the block and leaves every
other line of the user's init.py as it was; an init.py that install created and
that holds nothing else is removed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import __version__
from .icon import ICON_NAME, icon_png

PLUGIN_DIR = "nuke_comfy_cluster_plugin"
VENDOR_DIR = "site-packages"
MANIFEST = "install.json"
BEGIN = "# >>> nuke_comfy_cluster >>>"
END = "# <<< nuke_comfy_cluster <<<"

#: (distribution, top-level import name): requests, websocket-client and what they need
DEPENDENCIES = (
    ("requests", "requests"),
    ("urllib3", "urllib3"),
    ("idna", "idna"),
    ("charset-normalizer", "charset_normalizer"),
    ("certifi", "certifi"),
    ("websocket-client", "websocket"),
)
#: the oldest Python a Nuke we support runs (Nuke 14)
NUKE_PYTHON = (3, 9)
#: Nuke major version -> the Python it embeds (the Qt binding is chosen at run time)
NUKE_PYTHONS = {"14": "3.9", "15": "3.10", "16": "3.11"}

# Written when the package was installed without its checkout's top-level files;
# tests/nuke/test_install.py checks they match the repository's init.py / menu.py.
INIT_PY = """\
# ComfyUI Cluster for Nuke: runs in every session (GUI, nuke -t, render farm).
# Only makes the vendored dependencies importable; the menus come from menu.py.
try:
    from nuke_comfy_cluster.nuke_host import startup as _ncc_startup

    _ncc_startup.init()
except Exception:  # keep Nuke starting even if the plugin is broken
    import traceback

    traceback.print_exc()
"""
MENU_PY = """\
# ComfyUI Cluster for Nuke: the docked panel, the node toolbar entry and the menu commands.
# install() checks nuke.GUI and logs instead of raising, so Nuke always starts.
try:
    import nuke_comfy_cluster.nuke_host.startup as _ncc_startup

    _ncc_startup.install()
except Exception:  # keep Nuke starting even if the plugin is broken
    import traceback

    traceback.print_exc()
"""

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


@dataclass
class InstallReport:
    """What install / uninstall did, for the command line and the tests."""

    nuke_dir: str
    plugin_dir: str
    init_py: str
    actions: List[str] = field(default_factory=list)
    vendored: Dict[str, str] = field(default_factory=dict)  # distribution -> version
    warnings: List[str] = field(default_factory=list)

    def text(self) -> str:
        lines = list(self.actions)
        if self.vendored:
            lines.append("vendored: " + ", ".join(f"{k} {v}" for k, v in sorted(self.vendored.items())))
        lines += ["warning: " + w for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- locations


def default_nuke_dir() -> str:
    """The user's .nuke folder, found the way Nuke finds it (HOME first on Windows too)."""
    if os.name == "nt":
        home = os.environ.get("HOME") or os.environ.get("USERPROFILE") or os.path.expanduser("~")
    else:
        home = os.path.expanduser("~")
    return os.path.join(home, ".nuke")


def _source_root() -> Path:
    """The folder holding the package (and, in a checkout, init.py / menu.py / resources)."""
    return Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, text: str, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ncc-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_text(path: Path) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def block_for(plugin_dir: str) -> str:
    path = Path(plugin_dir).as_posix()
    return "\n".join(
        [
            BEGIN + " added by `python -m nuke_comfy_cluster install`; remove with `uninstall`",
            "import nuke",
            f"nuke.pluginAddPath({path!r})",
            END,
        ]
    )


def strip_block(text: str) -> str:
    """``text`` without our marked block(s); other lines untouched."""
    lines = text.splitlines(keepends=True)
    out: List[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if not inside and stripped.startswith(BEGIN):
            inside = True
            continue
        if inside:
            if stripped.startswith(END):
                inside = False
            continue
        out.append(line)
    return "".join(out)


def add_block(text: str, plugin_dir: str) -> str:
    """``text`` with exactly one block at the end (replacing an older one)."""
    newline = _newline_of(text) if text else "\n"
    base = strip_block(text)
    if base and not base.endswith(("\n", "\r")):
        base += newline
    return base + block_for(plugin_dir).replace("\n", newline) + newline


# --------------------------------------------------------------------------- vendoring


def _dist_files(dist_name: str, top: str) -> Optional[List[Path]]:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    base = Path(str(dist.locate_file(""))).resolve()
    files = []
    for entry in dist.files or []:
        path = Path(str(dist.locate_file(entry))).resolve()
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue  # console scripts in bin/ and the like
        if (
            rel.parts
            and (rel.parts[0] == top or rel.parts[0].endswith(".dist-info"))
            and "__pycache__" not in rel.parts
        ):
            if path.suffix not in (".pyc", ".pyo") and path.is_file():
                files.append(path)
    return files


def _needs_newer(dist_name: str, target: Tuple[int, int]) -> Tuple[str, str]:
    """(version, Requires-Python) of an installed distribution; the spec is "" when ``target`` fits it."""
    try:
        meta = importlib.metadata.metadata(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return "", ""
    spec = meta.get("Requires-Python") or ""
    low = [part.strip()[2:] for part in spec.split(",") if part.strip().startswith(">=")]
    for version in low:
        numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
        if numbers and numbers > target:
            return str(meta.get("Version") or ""), spec
    return str(meta.get("Version") or ""), ""


def _python_tuple(version: str) -> Tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def vendor(target: Path, report: InstallReport, python_version: Optional[str] = None) -> None:
    """Copy the dependencies from this Python's environment into ``target`` (no network).

    ``python_version`` is the Python they must run on (Nuke's); None: any Nuke we support,
    so a release that needs more than Nuke 14's 3.9 is pointed out.
    """
    target.mkdir(parents=True, exist_ok=True)
    want = _python_tuple(python_version) if python_version else NUKE_PYTHON
    too_new: List[str] = []
    for dist_name, top in DEPENDENCIES:
        files = _dist_files(dist_name, top)
        if files:
            base = Path(str(importlib.metadata.distribution(dist_name).locate_file(""))).resolve()
            for path in files:
                dest = target / path.relative_to(base)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(str(path), str(dest))
            version, needs = _needs_newer(dist_name, want)
            report.vendored[dist_name] = version
            if needs:
                too_new.append(f"{dist_name} {version} (Python {needs})")
            continue
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            report.warnings.append(f"{dist_name} is not installed in this Python: Nuke must provide it")
            continue
        shutil.copytree(list(spec.submodule_search_locations)[0], str(target / top), ignore=_IGNORE)
        report.vendored[dist_name] = "?"
    if too_new and python_version:
        report.warnings.append(
            "{} need{} a newer Python than {}: the plugin would fail to import there".format(
                ", ".join(too_new), "s" if len(too_new) == 1 else "", python_version
            )
        )
    elif too_new:
        newer = [n for n, p in NUKE_PYTHONS.items() if all(_fits(item, _python_tuple(p)) for item in too_new)]
        same = [n for n, p in NUKE_PYTHONS.items() if p == _running_python()]
        report.warnings.append(
            "{} need{} a newer Python than Nuke 14's 3.9{}. For Nuke 14 run `install --nuke 14` (fetches releases "
            "for 3.9 from the package index){}".format(
                ", ".join(too_new),
                "s" if len(too_new) == 1 else "",
                " (fine for Nuke " + " and ".join(newer) + ")" if newer else "",
                "; for Nuke {0}, `install --nuke {0}` says so and this warning goes".format(same[0]) if same else "",
            )
        )
    # mypyc-compiled modules for this Python are skipped by Nuke's Python, which then
    # uses the pure-Python fallbacks these packages ship alongside


def _fits(item: str, python: Tuple[int, int]) -> bool:
    """``"requests 2.34 (Python >=3.10)"`` fits ``(3, 11)``?"""
    found = re.search(r">=\s*(\d+)\.(\d+)", item)
    return found is None or (int(found.group(1)), int(found.group(2))) <= python


def _too_new(target: Path, python_version: str) -> List[str]:
    """``name<version`` for every fetched distribution whose Requires-Python excludes ours."""
    want = tuple(int(x) for x in python_version.split("."))
    bounds = []
    for info in sorted(target.glob("*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        try:
            meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = re.search(r"^Requires-Python:\s*>=\s*(\d+)\.(\d+)", meta, re.M)
        if found and (int(found.group(1)), int(found.group(2))) > want:
            bounds.append(f"{name}<{version}")
    return bounds


def vendor_for_python(target: Path, python_version: str, report: InstallReport) -> None:
    """Fetch requests and websocket-client releases that support ``python_version`` (e.g. the
    3.9 of Nuke 14) with pip, into ``target``. Needs the package index, not Nuke.

    pip's own Requires-Python check can be bypassed by local wheel folders (find-links), so
    every fetched distribution is checked again and refetched below any release that is too
    new, until all fit.
    """
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise OSError(f"--for-python takes a version like 3.9, not {python_version!r}")
    bounds: List[str] = []
    for _ in range(8):
        if target.exists():
            shutil.rmtree(str(target))
        target.mkdir(parents=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--python-version",
            python_version,
            "--only-binary=:all:",
            "--no-compile",
            "requests",
            "websocket-client",
            *bounds,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip could not fetch dependencies for Python {python_version}: {last[0]}")
        too_new = _too_new(target, python_version)
        if not too_new:
            break
        bounds += too_new
    else:
        raise OSError(f"no releases of requests / websocket-client found for Python {python_version}")
    # console scripts (normalizer, wsdump) land in bin/: Nuke never runs them
    shutil.rmtree(str(target / "bin"), ignore_errors=True)
    for info in sorted(target.glob("*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        report.vendored[name] = version


# --------------------------------------------------------------------------- install / uninstall


def _copy_plugin(plugin: Path, report: InstallReport) -> None:
    source = _source_root()
    shutil.copytree(str(source / "nuke_comfy_cluster"), str(plugin / "nuke_comfy_cluster"), ignore=_IGNORE)
    for name, fallback in (("init.py", INIT_PY), ("menu.py", MENU_PY)):
        if (source / name).is_file():
            shutil.copy2(str(source / name), str(plugin / name))
        else:
            _write_atomic(plugin / name, fallback)
    resources = source / "resources"
    if resources.is_dir():
        shutil.copytree(str(resources), str(plugin / "resources"), ignore=_IGNORE)
    else:
        (plugin / "resources").mkdir()
        (plugin / "resources" / ICON_NAME).write_bytes(icon_png())
        report.warnings.append("resources/ not found beside the package: icon drawn afresh")


def _manifest(plugin: Path) -> Dict[str, object]:
    try:
        return json.loads((plugin / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _running_python() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def install(
    nuke_dir: Optional[str] = None, for_python: Optional[str] = None, nuke: Optional[str] = None
) -> InstallReport:
    """Install (or refresh) the plugin into ``nuke_dir`` and hook it into its init.py.

    ``nuke`` ("14", "15", "16") or ``for_python`` ("3.9") names the Python the plugin
    will run on: when it is this Python, its packages are copied; otherwise matching
    releases are fetched with pip. Neither: this Python's packages, checked against Nuke 14.
    A failure leaves the Nuke folder as it was (files, old plugin, init.py).
    """
    if nuke is not None:
        if str(nuke) not in NUKE_PYTHONS:
            raise OSError("--nuke takes {}, not {!r}".format(", ".join(NUKE_PYTHONS), nuke))
        python = NUKE_PYTHONS[str(nuke)]
        if for_python and for_python != python:
            raise OSError(f"Nuke {nuke} runs Python {python}, not {for_python}: give one of --nuke / --for-python")
        for_python = python
    if for_python and not re.fullmatch(r"3\.\d{1,2}", for_python):
        raise OSError(f"--for-python takes a version like 3.9, not {for_python!r}")
    root = Path(nuke_dir or default_nuke_dir()).expanduser().resolve()
    plugin = root / PLUGIN_DIR
    init_py = root / "init.py"
    report = InstallReport(str(root), str(plugin), str(init_py))
    previous = _manifest(plugin)
    original = _read_text(init_py)
    created_init = bool(previous.get("created_init")) if previous else original is None
    made = [p for p in [root, *root.parents] if not p.exists()]  # folders this install creates

    staging: Optional[Path] = None
    old: Optional[Path] = None
    swapped = False
    try:
        # build beside, then swap in: a failed copy never leaves half a plugin behind
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ncc-install-", dir=str(root)))
        _copy_plugin(staging, report)
        if for_python and for_python != _running_python():
            vendor_for_python(staging / VENDOR_DIR, for_python, report)
        else:
            vendor(staging / VENDOR_DIR, report, for_python)
        manifest = {
            "version": __version__,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "python": for_python or _running_python(),
            "created_init": created_init,
            "vendored": report.vendored,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if plugin.exists():
            old = Path(tempfile.mkdtemp(prefix=".ncc-old-", dir=str(root)))
            os.replace(str(plugin), str(old / PLUGIN_DIR))
            report.actions.append(f"replaced {plugin}")
        else:
            report.actions.append(f"installed {plugin}")
        os.replace(str(staging), str(plugin))
        swapped = True

        text = original or ""
        updated = add_block(text, str(plugin))
        if updated != text:
            _write_atomic(init_py, updated, newline="")
            report.actions.append(
                "{} {}: nuke.pluginAddPath({})".format(
                    "created" if original is None else "updated", init_py, plugin.as_posix()
                )
            )
        else:
            report.actions.append(f"{init_py} already loads the plugin")
    except BaseException:
        _roll_back(plugin, staging, old, swapped, made)
        raise
    if old is not None:
        shutil.rmtree(str(old), ignore_errors=True)
    return report


def _roll_back(plugin: Path, staging: Optional[Path], old: Optional[Path], swapped: bool, made: List[Path]) -> None:
    """Put the Nuke folder back as install found it (init.py is written last, atomically: it never changed)."""
    if staging is not None and staging.exists():
        shutil.rmtree(str(staging), ignore_errors=True)
    if swapped:
        shutil.rmtree(str(plugin), ignore_errors=True)
    if old is not None:
        kept = old / PLUGIN_DIR
        if kept.exists() and not plugin.exists():
            os.replace(str(kept), str(plugin))
        shutil.rmtree(str(old), ignore_errors=True)
    for folder in made:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def uninstall(nuke_dir: Optional[str] = None) -> InstallReport:
    """Remove what :func:`install` added; other lines of init.py stay as they are."""
    root = Path(nuke_dir or default_nuke_dir()).expanduser().resolve()
    plugin = root / PLUGIN_DIR
    init_py = root / "init.py"
    report = InstallReport(str(root), str(plugin), str(init_py))
    manifest = _manifest(plugin)
    text = _read_text(init_py)
    if text is not None and BEGIN in text:
        rest = strip_block(text)
        if manifest.get("created_init") and not rest.strip():
            init_py.unlink()
            report.actions.append(f"removed {init_py} (install had created it)")
        else:
            _write_atomic(init_py, rest, newline="")
            report.actions.append(f"removed the nuke_comfy_cluster block from {init_py}")
    if plugin.exists():
        shutil.rmtree(str(plugin))
        report.actions.append(f"removed {plugin}")
    if not report.actions:
        report.actions.append(f"nothing to remove in {root}")
    return report


# --------------------------------------------------------------------------- command line


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nuke_comfy_cluster " + command,
        description="{} the ComfyUI Cluster plugin {} Nuke's user folder.".format(
            command.capitalize(), "into" if command == "install" else "from"
        ),
    )
    parser.add_argument(
        "--nuke-dir",
        default=None,
        help=f"the .nuke folder or a folder on NUKE_PATH (default: {default_nuke_dir()})",
    )
    if command == "install":
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--nuke",
            choices=sorted(NUKE_PYTHONS),
            help="the Nuke version the plugin is for (14: Python 3.9, 15: 3.10, 16: 3.11); when this Python "
            "is not that version, releases for it are fetched from the package index",
        )
        which.add_argument(
            "--for-python",
            metavar="X.Y",
            help="the same by Python version (3.9 for Nuke 14, 3.10 for 15, 3.11 for 16)",
        )
    return parser


def _main(command: str, argv: Optional[Sequence[str]]) -> int:
    args = _parser(command).parse_args(list(argv) if argv is not None else None)
    try:
        if command == "install":
            report = install(args.nuke_dir, for_python=args.for_python, nuke=args.nuke)
        else:
            report = uninstall(args.nuke_dir)
    except OSError as e:
        print(f"{command} failed: {e}", file=sys.stderr)
        return 1
    print(report.text())
    if command == "install":
        print("Restart Nuke: the node is under Nodes > ComfyUI Cluster, the panel under Pane > ComfyUI Cluster.")
    return 0


def main_install(argv: Optional[Sequence[str]] = None) -> int:
    return _main("install", argv)


def main_uninstall(argv: Optional[Sequence[str]] = None) -> int:
    return _main("uninstall", argv)
