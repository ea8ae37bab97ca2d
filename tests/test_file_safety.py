"""File names a server sends are untrusted: they never write or read outside the target folder.

A small real HTTP server stands in for a hostile (or broken) ComfyUI: its
``/history`` names output files with ``..``, absolute paths, drive letters, UNC
shares, NUL bytes, device names and odd Unicode. ``fetch_output`` (download and
shared-drive read) and a whole batch through the dispatcher are run against it,
and the disk is checked afterwards. (Saves of the configuration killed mid-write
and concurrent saves are tested in ``test_config_store.py``; here every failure
point of one save is forced deterministically.)
"""

from __future__ import annotations

import http.server
import json
import os
import tempfile
import threading
import uuid
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

import pytest

from nuke_comfy_cluster.core import config_store
from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig, parse_servers, servers_to_json
from nuke_comfy_cluster.core.errors import ClusterError, ConfigError, ServerRejected
from nuke_comfy_cluster.core.jobs import OutputFile
from nuke_comfy_cluster.core.results import ensure_safe_name, fetch_output
from nuke_comfy_cluster.core.server import ComfyUIServer
from nuke_comfy_cluster.core.state import JobState

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
MARK = "ncc-escape-" + uuid.uuid4().hex[:8]

#: (subfolder, filename) a server might send; none may land outside the folder
HOSTILE: List[Tuple[str, str]] = [
    ("..", f"{MARK}.png"),
    ("a/../..", f"{MARK}.png"),
    ("a\\..\\..", f"{MARK}.png"),
    ("", f"../{MARK}.png"),
    ("", f"..\\{MARK}.png"),
    ("/tmp", f"{MARK}.png"),
    ("", f"/tmp/{MARK}.png"),
    ("\\\\server\\share", f"{MARK}.png"),
    ("//server/share", f"{MARK}.png"),
    ("C:\\Windows", f"{MARK}.png"),
    ("", f"C:{MARK}.png"),
    ("", f"{MARK}.png\x00.txt"),
    ("sub\x00", f"{MARK}.png"),
    ("", f"{MARK}.png:stream"),
    ("", "CON"),
    ("", "lpt1.png"),
    ("", ".."),
    ("", ""),
    ("", "..."),
    ("", "\uff0e\uff0e/" + MARK),  # full-width dots, then a separator
]
#: odd but harmless: allowed, and kept inside
ODD_BUT_SAFE: List[Tuple[str, str]] = [
    ("", "\u202egnp.exe"),  # right-to-left override
    ("日本", "ファイル….png"),
    ("", "e\u0301.png"),  # combining accent
    ("", "\uff0e\uff0e.png"),  # full-width dots are just characters
    ("a b", " lead.png"),
    ("", "..a.png"),
]


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Enough of ComfyUI for the client: status, submit, queue, history naming ``names``, view."""

    names: List[Tuple[str, str]] = []
    output_directory = ""
    lock = threading.Lock()
    prompts: Dict[str, Tuple[str, str]] = {}
    views: List[Dict[str, Any]] = []

    def _json(self, data: Any, status: int = 200) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path == "/prompt":
            self._json({"exec_info": {"queue_remaining": 0}})
        elif url.path == "/system_stats":
            argv = ["main.py"] + (["--output-directory", self.output_directory] if self.output_directory else [])
            self._json({"system": {"comfyui_version": "0.3.39", "argv": argv}, "devices": []})
        elif url.path == "/queue":
            self._json({"queue_running": [], "queue_pending": []})
        elif url.path.startswith("/history/"):
            prompt_id = url.path.split("/", 2)[2]
            with self.lock:
                sub, name = self.prompts.get(prompt_id, ("", "x.png"))
            image = {"filename": name, "subfolder": sub, "type": "output"}
            self._json(
                {
                    prompt_id: {
                        "prompt": [0, prompt_id, {}, {}, ["9"]],
                        "outputs": {"9": {"images": [image]}},
                        "status": {"status_str": "success", "completed": True, "messages": []},
                    }
                }
            )
        elif url.path == "/view":
            with self.lock:
                self.views.append({k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()})
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        else:
            self._json({}, 404)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        prompt_id = str(uuid.uuid4())
        with self.lock:
            self.prompts[prompt_id] = self.names[len(self.prompts) % len(self.names)]
        self._json({"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile_server():
    """start(names, output_directory="") -> (port, handler class); stopped after the test."""
    started = []

    def start(names, output_directory=""):
        handler = type(
            "H", (_Hostile,), {"names": list(names), "output_directory": output_directory, "prompts": {}, "views": []}
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        started.append((server, thread))
        return server.server_address[1], handler

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _files_under(root: str) -> List[str]:
    found = []
    for folder, _dirs, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files]
    return found


def _no_escape_anywhere(sandbox: str, inside: str) -> None:
    outside = [
        f for f in _files_under(sandbox) if not os.path.realpath(f).startswith(os.path.realpath(inside) + os.sep)
    ]
    assert outside == [], outside
    for root in (tempfile.gettempdir(), os.getcwd(), os.path.dirname(sandbox), "/"):
        assert not any(MARK in name for name in os.listdir(root)), root


# --------------------------------------------------------------------------- fetch_output


@pytest.mark.timeout(60)
def test_downloads_with_hostile_names_are_refused_and_write_nothing(hostile_server, tmp_path):
    port, handler = hostile_server([("", "x.png")])
    server = ComfyUIServer(ServerConfig("h", "127.0.0.1", port))
    sandbox = tmp_path / "sandbox"
    target = sandbox / "deep" / "downloads"
    target.mkdir(parents=True)
    try:
        for sub, name in HOSTILE:
            with pytest.raises(ServerRejected, match="unsafe"):
                fetch_output(server, OutputFile("9", name, sub), str(target))
        assert handler.views == []  # refused before asking the server for the bytes
        for sub, name in ODD_BUT_SAFE:
            got = fetch_output(server, OutputFile("9", name, sub), str(target))
            assert os.path.commonpath([os.path.realpath(got.local_path), str(target.resolve())]) == str(
                target.resolve()
            )
            with open(got.local_path, "rb") as f:
                assert f.read() == PNG
    finally:
        server.close()
    _no_escape_anywhere(str(sandbox), str(target))
    assert len(handler.views) == len(ODD_BUT_SAFE)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_symlink_planted_in_the_download_folder_is_not_followed(hostile_server, tmp_path):
    port, _handler = hostile_server([("", "x.png")])
    server = ComfyUIServer(ServerConfig("h", "127.0.0.1", port))
    target = tmp_path / "downloads"
    target.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    try:
        os.symlink(str(victim), str(target / "x.png"))
        os.symlink(str(tmp_path), str(target / "up"))
    except OSError:
        pytest.skip("cannot create symlinks here")
    try:
        with pytest.raises(ServerRejected):
            fetch_output(server, OutputFile("9", "x.png", ""), str(target))
        with pytest.raises(ServerRejected):
            fetch_output(server, OutputFile("9", "victim.txt", "up"), str(target))
    finally:
        server.close()
    assert victim.read_text() == "precious"


@pytest.mark.timeout(60)
def test_reading_through_the_shared_drive_stays_in_the_output_folder(hostile_server, tmp_path):
    share = tmp_path / "share"
    (share / "out").mkdir(parents=True)
    (share / "out" / "good.png").write_bytes(PNG)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    port, handler = hostile_server([("", "x.png")], output_directory="/remote/share/out")
    server = ComfyUIServer(ServerConfig("h", "127.0.0.1", port, dir_local=str(share), dir_remote="/remote/share"))
    downloads = tmp_path / "downloads"
    try:
        got = fetch_output(server, OutputFile("9", "good.png", ""), str(downloads))
        assert got.local_path == str(share / "out" / "good.png")  # read in place
        for sub, name in [("..", "secret.png"), ("../..", "secret.png"), ("", "../../secret.png"), ("", str(secret))]:
            with pytest.raises(ServerRejected):
                fetch_output(server, OutputFile("9", name, sub), str(downloads))
    finally:
        server.close()
    assert handler.views == []
    assert not downloads.exists() or _files_under(str(downloads)) == []


# --------------------------------------------------------------------------- through a whole batch


@pytest.mark.timeout(90)
def test_a_batch_from_a_hostile_server_fails_clearly_and_writes_only_inside(hostile_server, tmp_path):
    hostile = HOSTILE[:6]
    port, handler = hostile_server(hostile)
    out = tmp_path / "sandbox" / "shot" / "comfy"
    config = ServerConfig("hostile", "127.0.0.1", port)
    with Cluster.from_servers([config], use_websocket=False, status_ttl=0.5) as cluster:
        snap = cluster.submit_frames(
            {
                "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "f_####"}},
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            },
            [1, 2, 3],
            output_dir=str(out),
            sequence_name="comfy",
        ).wait(60)
    assert snap.finished and [j.state for j in snap.jobs] == [JobState.FAILED] * 3, [
        (j.state, j.error) for j in snap.jobs
    ]
    assert all("unsafe" in j.error.message for j in snap.jobs), [j.error.message for j in snap.jobs]
    assert "unsafe" in snap.message
    assert handler.views == []
    _no_escape_anywhere(str(tmp_path / "sandbox"), str(out))


def test_sequence_names_chosen_by_the_user_are_plain_names(tmp_path):
    for bad in ("../x", "/abs", "a/b", "..", ".", "", "C:\\x" if os.name == "nt" else "a/../b"):
        with pytest.raises(ClusterError):
            ensure_safe_name(bad)
    assert ensure_safe_name("shot_010_comfy") == "shot_010_comfy"


# --------------------------------------------------------------------------- config saves


_SAVE_STEPS = ("mkstemp", "fsync", "chmod", "replace")


@pytest.mark.parametrize("step", _SAVE_STEPS)
def test_a_save_failing_at_any_step_keeps_a_complete_file_and_a_backup(tmp_path, monkeypatch, step):
    """Each file operation of a save fails in turn (its 1st call, its 2nd, ... as many as one
    save makes): the file is the old one or the new one, complete; backups are complete; no
    temporary file is left behind."""
    module, name = {
        "mkstemp": (config_store.tempfile, "mkstemp"),
        "fsync": (config_store.os, "fsync"),
        "chmod": (config_store.os, "chmod"),
        "replace": (config_store.os, "replace"),
    }[step]
    original = getattr(module, name)
    old = servers_to_json([ServerConfig("old", "10.0.0.1", 8188)])
    new = servers_to_json([ServerConfig(f"new{i}", "10.0.0.2", 8188 + i) for i in range(50)])

    def save_failing_at(path, call):
        """Save ``new`` over ``old`` with the ``call``-th call of the step failing (0: none);
        returns (saved, how many calls of the step the save made)."""
        config_store.save_servers(path, old)
        calls = {"n": 0}

        def wrapper(*args, **kw):
            calls["n"] += 1
            if calls["n"] == call:
                raise OSError(28, "No space left on device")
            return original(*args, **kw)

        monkeypatch.setattr(module, name, wrapper)
        try:
            config_store.save_servers(path, new)
            saved = True
        except ConfigError as e:
            saved = False
            assert str(path.parent) in str(e) or "servers" in str(e)
        finally:
            monkeypatch.setattr(module, name, original)
        return saved, calls["n"]

    saved, made = save_failing_at(tmp_path / "dry" / "servers.json", 0)
    assert saved and made >= 1, f"a save never calls {step}: nothing to test"
    for call in range(1, made + 1):
        path = tmp_path / f"fail{call}" / "servers.json"
        saved, seen = save_failing_at(path, call)
        assert seen >= call, f"the {call}. call of {step} never happened: the fault was not injected"
        text = path.read_text(encoding="utf-8")
        assert text == (new if saved else old), (step, call)
        servers, issues = parse_servers(text)
        assert servers and not [i for i in issues if i.level == "error"]
        for backup in config_store.list_backups(path):
            assert backup.path.read_text(encoding="utf-8") in (old, new)
        leftovers = [p for p in path.parent.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == [], (step, call)
        if saved:
            assert config_store.list_backups(path), "a save that replaced the file kept no backup"
