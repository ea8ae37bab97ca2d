"""Job outputs, unit by unit: history parsing, fetching (shared drive or ``/view``), checking, staging.

``core/results.py`` against a small HTTP server on 127.0.0.1 that answers what the
client asks of ComfyUI here (``/system_stats`` for the output folder, ``/view`` for
the bytes) and records every ``/view``; the shared drive is a temporary folder.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

import pytest

from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.delivery import SuspectResult
from nuke_comfy_cluster.core.errors import ConfigError, MalformedResponse, ServerRejected
from nuke_comfy_cluster.core.jobs import OutputFile
from nuke_comfy_cluster.core.results import (
    collect_attempt,
    ensure_safe_name,
    fetch_content,
    fetch_output,
    history_error,
    history_outputs,
    history_status,
    outputs_from_node_output,
    parse_history_entry,
    shared_output_dir,
)
from nuke_comfy_cluster.core.server import ComfyUIServer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
OTHER_PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 24
HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"


# --------------------------------------------------------------------------- what a history says


def test_a_nodes_saved_files_become_outputs_previews_and_junk_do_not():
    output = {
        "images": [
            {"filename": "a.png", "subfolder": "shot", "type": "output"},
            {"filename": "b.png"},  # no type, no subfolder: a saved file at the top
            {"filename": "p.png", "subfolder": "", "type": "temp"},  # a preview
            {"filename": "q.png", "type": "input"},
            {"filename": "c.png", "subfolder": 3, "type": 7},  # odd types: defaults
            {"subfolder": "x", "type": "output"},  # no name
            {"filename": 12, "type": "output"},
            "not a file",
        ],
        "gifs": [{"filename": "v.mp4", "subfolder": "", "type": "output"}],
        "videos": "not a list",
        "text": ["ignored"],
    }
    assert outputs_from_node_output(9, output) == [
        OutputFile("9", "a.png", "shot", "output"),
        OutputFile("9", "b.png", "", "output"),
        OutputFile("9", "c.png", "", "output"),
        OutputFile("9", "v.mp4", "", "output"),
    ]
    assert outputs_from_node_output("9", {"files": [{"filename": "f.exr", "type": "output"}]}) == [
        OutputFile("9", "f.exr", "", "output")
    ]
    for junk in (None, [], "images", 3):
        assert outputs_from_node_output("9", junk) == []
    assert outputs_from_node_output("9", {}) == []


def test_a_history_entry_is_found_or_refused_clearly():
    entry = {"outputs": {}, "status": {"status_str": "success"}}
    assert parse_history_entry({"p1": entry, "p2": {}}, "p1") is entry
    assert parse_history_entry({}, "p1") is None  # not (yet) known there
    assert parse_history_entry({"p2": entry}, "p1") is None
    with pytest.raises(MalformedResponse, match="history is not an object"):
        parse_history_entry([entry], "p1")
    with pytest.raises(MalformedResponse, match="history entry is not an object"):
        parse_history_entry({"p1": ["x"]}, "p1")


def test_history_outputs_in_node_order():
    entry = {
        "outputs": {
            "9": {"images": [{"filename": "nine.png", "subfolder": "", "type": "output"}]},
            "10": {"images": [{"filename": "ten.png", "subfolder": "", "type": "output"}]},
            "2": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]},
        }
    }
    assert [o.filename for o in history_outputs(entry)] == ["ten.png", "nine.png"]
    assert [o.node for o in history_outputs(entry)] == ["10", "9"]
    assert history_outputs({"outputs": []}) == []
    assert history_outputs({}) == []


def test_history_status_and_error():
    error = {"node_id": "3", "exception_message": "boom", "traceback": ["x"]}
    entry = {
        "status": {
            "status_str": "error",
            "messages": [
                "junk",
                ["execution_start", {"prompt_id": "p"}],
                ["execution_error"],
                ["execution_error", "not a dict"],
                ["execution_error", error],
            ],
        }
    }
    assert history_status(entry) == "error"
    assert history_error(entry) is error
    assert history_status({"status": {"status_str": "success", "messages": []}}) == "success"
    for odd in ({}, {"status": None}, {"status": "success"}, {"status": {"status_str": 5}}, {"status": {}}):
        assert history_status(odd) == ""
        assert history_error(odd) == {}
    assert history_error({"status": {"messages": [["execution_start", {"a": 1}]]}}) == {}
    assert history_error({"status": {"messages": "x"}}) == {}


def test_sequence_names_must_be_plain_file_names():
    assert ensure_safe_name("shot_010") == "shot_010"
    assert ensure_safe_name("...a") == "...a"
    for bad in ("", ".", "..", "a/b", "/abs", "dir/"):
        with pytest.raises(ConfigError, match="must be a plain file name"):
            ensure_safe_name(bad)


# --------------------------------------------------------------------------- a server to fetch from


class _Comfy(http.server.BaseHTTPRequestHandler):
    """``/system_stats`` naming ``output_directory``; ``/view`` serving ``files`` ((subfolder, name) -> (bytes, type))."""

    output_directory = ""
    files: Dict[Tuple[str, str], Tuple[bytes, str]] = {}
    views: List[Dict[str, str]] = []

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path == "/system_stats":
            argv = ["main.py"] + (["--output-directory", self.output_directory] if self.output_directory else [])
            body = json.dumps({"system": {"comfyui_version": "0.3.39", "argv": argv}, "devices": []})
            self._send(200, body.encode(), "application/json")
        elif url.path == "/view":
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            self.views.append(query)
            found = self.files.get((query.get("subfolder", ""), query.get("filename", "")))
            if found is None:
                self._send(404, b"{}", "application/json")
            else:
                self._send(200, found[0], found[1])
        else:
            self._send(404, b"{}", "application/json")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def comfy():
    """comfy(files, output_directory="", **config) -> (ComfyUIServer, handler class); stopped after."""
    started = []

    def start(files: Dict[Tuple[str, str], Tuple[bytes, str]], output_directory: str = "", **config: Any):
        handler = type("H", (_Comfy,), {"files": dict(files), "output_directory": output_directory, "views": []})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        server = ComfyUIServer(ServerConfig("c", "127.0.0.1", httpd.server_address[1], **config))
        started.append((httpd, thread, server))
        return server, handler

    yield start
    for httpd, thread, server in started:
        server.close()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def share(tmp_path):
    """A shared drive: ``/remote/share`` on the server is ``tmp_path/share`` here; its output folder is ``out``."""
    (tmp_path / "share" / "out" / "shot").mkdir(parents=True)
    return tmp_path / "share"


def _shared(comfy, share, files=None, output_directory="/remote/share/out"):
    return comfy(files or {}, output_directory, dir_local=str(share), dir_remote="/remote/share")


# --------------------------------------------------------------------------- where outputs are read


def test_the_shared_output_folder_is_used_only_when_it_is_under_the_mapping(comfy, share, tmp_path):
    server, _ = _shared(comfy, share)
    assert shared_output_dir(server) == str(share / "out")
    elsewhere = tmp_path / "local_out"  # a folder that exists here, but is not the mapped share
    elsewhere.mkdir()
    for output_directory, config in [
        ("/remote/share/out", {"dir_local": str(share)}),  # half a mapping
        ("/remote/share/out", {"dir_remote": "/remote/share"}),
        (str(elsewhere), {"dir_remote": str(tmp_path)}),  # half a mapping, even where the path exists here
        ("", {"dir_local": str(share), "dir_remote": "/remote/share"}),  # default output folder: unknown
        ("/remote/other/out", {"dir_local": str(share), "dir_remote": "/remote/share"}),
        (str(elsewhere), {"dir_local": str(share), "dir_remote": "/remote/share"}),
        ("/remote/share/not_mounted", {"dir_local": str(share), "dir_remote": "/remote/share"}),
        ("/remote/share/out", {}),
    ]:
        server, _ = comfy({}, output_directory, **config)
        assert shared_output_dir(server) is None, (output_directory, config)
    dead = ComfyUIServer(ServerConfig("dead", "127.0.0.1", 9, dir_local=str(share), dir_remote="/remote/share"))
    try:
        assert shared_output_dir(dead) is None  # no answer: download (which will say why)
    finally:
        dead.close()


def test_an_output_on_the_shared_drive_is_read_in_place(comfy, share, tmp_path):
    (share / "out" / "shot" / "a.png").write_bytes(PNG)
    server, handler = _shared(comfy, share)
    got = fetch_output(server, OutputFile("9", "a.png", "shot"), str(tmp_path / "dl"))
    assert got == OutputFile("9", "a.png", "shot", "output", str(share / "out" / "shot" / "a.png"))
    assert fetch_content(server, OutputFile("9", "a.png", "shot")) == (PNG, "", str(share / "out" / "shot" / "a.png"))
    assert handler.views == [] and not (tmp_path / "dl").exists()


def test_an_output_missing_from_the_shared_drive_is_downloaded(comfy, share, tmp_path):
    server, handler = _shared(comfy, share, {("shot", "late.png"): (PNG, "image/png")})
    got = fetch_output(server, OutputFile("9", "late.png", "shot"), str(tmp_path / "dl"))
    assert got.local_path == str(tmp_path / "dl" / "shot" / "late.png")
    assert fetch_content(server, OutputFile("9", "late.png", "shot")) == (PNG, "image/png", "/view")
    assert [v["filename"] for v in handler.views] == ["late.png", "late.png"]


def test_without_a_shared_drive_outputs_are_downloaded_into_the_folder(comfy, tmp_path):
    files = {("", "a.png"): (PNG, "image/png"), ("sub/deep", "b.png"): (OTHER_PNG, "image/png")}
    server, handler = comfy(files)
    target = tmp_path / "new" / "downloads"  # made on the way
    got = [
        fetch_output(server, OutputFile("9", "a.png", "", "output"), str(target)),
        fetch_output(server, OutputFile("9", "b.png", "sub/deep", "output"), str(target)),
        fetch_output(server, OutputFile("9", "a.png", "", "output"), str(target)),  # again: replaced
    ]
    assert got[1] == OutputFile("9", "b.png", "sub/deep", "output", str(target / "sub" / "deep" / "b.png"))
    assert (target / "a.png").read_bytes() == PNG and (target / "sub" / "deep" / "b.png").read_bytes() == OTHER_PNG
    assert sorted(os.listdir(target)) == ["a.png", "sub"]  # no temporary file left
    assert handler.views[1] == {"filename": "b.png", "subfolder": "sub/deep", "type": "output"}


def test_a_download_that_cannot_be_written_leaves_no_temporary_file(comfy, tmp_path):
    server, _ = comfy({("", "a.png"): (PNG, "image/png")})
    target = tmp_path / "downloads"
    (target / "a.png").mkdir(parents=True)  # the name is taken by a folder
    with pytest.raises(OSError):
        fetch_output(server, OutputFile("9", "a.png"), str(target))
    assert os.listdir(target) == ["a.png"]


def test_hostile_names_are_refused_before_asking_for_the_bytes(comfy, share):
    server, handler = _shared(comfy, share)
    for sub, name in [("..", "a.png"), ("", "../../a.png"), ("/etc", "passwd")]:
        with pytest.raises(ServerRejected, match="unsafe"):
            fetch_content(server, OutputFile("9", name, sub))
        with pytest.raises(ServerRejected, match="unsafe"):
            fetch_content(server, OutputFile("9", name, sub), prefer_shared=False)
    assert handler.views == []


# --------------------------------------------------------------------------- collecting one attempt


def test_an_attempt_is_checked_and_staged_in_order(comfy, tmp_path):
    files = {("", "a.png"): (PNG, "image/png"), ("s", "b.png"): (OTHER_PNG, "image/png; charset=binary")}
    server, handler = comfy(files)
    staging = str(tmp_path / "staging")
    outs = [OutputFile("9", "a.png", "", "output"), OutputFile("10", "b.png", "s", "output")]
    staged = collect_attempt(server, outs, staging, None)
    assert staged == [
        OutputFile("9", "a.png", "", "output", os.path.join(staging, "00_a.png")),
        OutputFile("10", "b.png", "s", "output", os.path.join(staging, "01_b.png")),
    ]
    assert [open(o.local_path, "rb").read() for o in staged] == [PNG, OTHER_PNG]
    assert len(handler.views) == 2
    assert collect_attempt(server, [], staging, None) == []


def test_a_suspect_download_fails_the_attempt_after_one_request(comfy, tmp_path):
    server, handler = comfy({("", "a.png"): (PNG, "image/png"), ("", "b.png"): (HTML, "text/html")})
    staging = tmp_path / "staging"
    with pytest.raises(SuspectResult, match="b.png: the server sent text/html"):
        collect_attempt(server, [OutputFile("9", "b.png")], str(staging), None)
    assert len(handler.views) == 1  # /view is not asked twice for the same bytes
    assert not staging.exists()


def test_a_suspect_file_on_the_shared_drive_is_fetched_again_through_view(comfy, share, tmp_path):
    """Another prompt's render under our name on the share (or a stale network cache): /view
    is asked once more; its answer is checked the same way."""
    (share / "out" / "a.png").write_bytes(b"")  # half written, say
    server, handler = _shared(comfy, share, {("", "a.png"): (PNG, "image/png")})
    staging = str(tmp_path / "staging")
    for in_place in (False, True):
        staged = collect_attempt(server, [OutputFile("9", "a.png")], staging, None, in_place=in_place)
        assert staged == [OutputFile("9", "a.png", "", "output", os.path.join(staging, "00_a.png"))]
        assert open(staged[0].local_path, "rb").read() == PNG
    assert len(handler.views) == 2
    handler.files[("", "a.png")] = (HTML, "text/html")  # still wrong through /view: nothing kept
    with pytest.raises(SuspectResult, match="text/html"):
        collect_attempt(server, [OutputFile("9", "a.png")], str(tmp_path / "again"), None)
    assert not (tmp_path / "again").exists()


def test_a_checked_file_on_the_shared_drive_is_copied_or_left_in_place(comfy, share, tmp_path):
    (share / "out" / "shot" / "a.png").write_bytes(PNG)
    (share / "out" / "b.png").write_bytes(OTHER_PNG)
    server, handler = _shared(comfy, share)
    outs = [OutputFile("9", "a.png", "shot"), OutputFile("9", "b.png")]
    staging = str(tmp_path / "staging")
    copied = collect_attempt(server, outs, staging, None)
    assert [o.local_path for o in copied] == [os.path.join(staging, "00_a.png"), os.path.join(staging, "01_b.png")]
    assert [open(o.local_path, "rb").read() for o in copied] == [PNG, OTHER_PNG]
    in_place = collect_attempt(server, outs, str(tmp_path / "unused"), None, in_place=True)
    assert [o.local_path for o in in_place] == [str(share / "out" / "shot" / "a.png"), str(share / "out" / "b.png")]
    assert not (tmp_path / "unused").exists() and handler.views == []
    assert (share / "out" / "b.png").read_bytes() == OTHER_PNG  # the server's file is never moved
