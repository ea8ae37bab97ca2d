"""Servers behind an authenticating proxy: the token works, and it never shows.

The simulator's ``--require-token`` answers 401 to any request (HTTP or websocket
handshake) without ``Authorization: Bearer <token>``, as a reverse proxy would.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import stat
import subprocess
import sys
import threading

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig, load_config, redact, servers_to_json
from nuke_comfy_cluster.core.config_store import export_config, list_backups, save_servers
from nuke_comfy_cluster.core.errors import ServerRejected, user_message
from nuke_comfy_cluster.core.http import ServerConnection
from nuke_comfy_cluster.core.server import ComfyUIServer
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-T0ken-4c1d"
HEADER_SECRET = "hdr-v4lue-9f2e"
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sec_####"}},
}


@pytest.fixture
def guarded(start_sims):
    (sim,) = start_sims([1.0], seconds=0.1, extra_args=["--require-token", TOKEN])
    return sim


def _leaks(text: str) -> bool:
    return TOKEN in text or HEADER_SECRET in text


def test_the_guard_really_refuses_without_the_token(guarded):
    ok = ComfyUIServer(ServerConfig("ok", "127.0.0.1", guarded.port, token=TOKEN))
    bare = ComfyUIServer(ServerConfig("bare", "127.0.0.1", guarded.port))
    try:
        assert ok.update_status().status.reachable
        snap = bare.update_status()
        assert not snap.status.reachable and "401" in (snap.last_error or "")
        with pytest.raises(ServerRejected) as e:
            bare.connection.get_json("queue")
        assert e.value.status == 401
    finally:
        ok.close()
        bare.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "auth",
    [{"token": TOKEN}, {"headers": {"Authorization": f"Bearer {TOKEN}", "X-Studio-Key": HEADER_SECRET}}],
    ids=["token", "headers"],
)
def test_a_batch_runs_through_the_proxy_and_nothing_shows_the_secret(guarded, tmp_path, caplog, auth):
    caplog.set_level(logging.DEBUG)
    config = ServerConfig("proxied", "127.0.0.1", guarded.port, **auth)
    with Cluster.from_servers([config]) as cluster:
        assert wait_until(lambda: cluster.pool.server_snapshots()[0].live, 10)  # the websocket got in too
        snap = cluster.submit_frames(WORKFLOW, [1, 2], output_dir=str(tmp_path), sequence_name="s").wait(30)
        assert snap.state == "done", [(j.state, j.error) for j in snap.jobs]
        shown = [
            repr(config),
            str(config),
            repr(cluster.pool.servers[0]),
            repr(cluster.pool.servers[0].connection),
            repr(cluster.pool.snapshot()),
            repr(snap),
            json.dumps([j.as_dict() for j in snap.jobs]),
            str(redact(config)),
            redact(servers_to_json([config])),
            servers_to_json([config], include_secrets=False),
        ]
    assert sorted(os.listdir(tmp_path)) == ["s.0001.png", "s.0002.png"]  # the sequence, nothing else
    assert not any(_leaks(text) for text in shown), [t for t in shown if _leaks(t)]
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    assert not _leaks(caplog.text)


@pytest.mark.timeout(60)
def test_a_wrong_token_is_reported_clearly_and_is_never_echoed(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = TOKEN[::-1]
    config = ServerConfig("proxied", "127.0.0.1", guarded.port, token=wrong)
    with Cluster.from_servers([config], wait_for_servers=2.0) as cluster:
        snap = cluster.submit_frames(WORKFLOW, [1]).wait(20)
        server_snap = cluster.pool.server_snapshots()[0]
    assert snap.state == "failed"
    said = [snap.message, server_snap.last_error or ""] + [e.message for e in snap.errors]
    assert any("401" in s for s in said), said
    with pytest.raises(ServerRejected) as e:
        ServerConnection(config).get_json("prompt")
    said.append(user_message(e.value))
    said.append(repr(e.value.body))
    for text in said + [caplog.text]:
        assert wrong not in text and TOKEN not in text


@pytest.mark.timeout(60)
def test_status_json_validate_and_export_leave_the_secret_out(guarded, start_sims, tmp_path):
    # a second guarded server: one server listed twice would be used once (duplicate detection)
    (other,) = start_sims([1.0], seconds=0.1, extra_args=["--require-token", TOKEN])
    servers = json.dumps(
        [
            {"name": "proxied", "ip": "127.0.0.1", "port": guarded.port, "token": TOKEN},
            {"name": "keyed", "ip": "127.0.0.1", "port": other.port, "headers": {"X-Studio-Key": HEADER_SECRET}},
        ]
    )
    env = dict(os.environ, NUKE_COMFYUI_SERVERS=servers)

    def run(*args):
        out = subprocess.run(
            [sys.executable, "-m", "nuke_comfy_cluster", "-v", *args],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
        )
        assert not _leaks(out.stdout) and not _leaks(out.stderr), (args, out.stdout, out.stderr)
        return out

    status = run("status", "--json")
    by = {s["name"]: s for s in json.loads(status.stdout)["servers"]}
    assert by["proxied"]["status"] == "online"  # the token was sent
    assert by["keyed"]["status"] == "error" and "401" in by["keyed"]["last_error"]  # a header is not the token
    run("validate", "--json")
    plain, full = tmp_path / "plain.json", tmp_path / "full.json"
    run("export", str(plain))
    assert not _leaks(plain.read_text(encoding="utf-8"))
    assert "token" not in json.loads(plain.read_text(encoding="utf-8"))[0]
    out = subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster", "export", "--include-secrets", str(full)],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert out.returncode == 0 and not _leaks(out.stdout + out.stderr)
    assert TOKEN in full.read_text(encoding="utf-8")  # asked for: written...
    if os.name == "posix":
        assert stat.S_IMODE(full.stat().st_mode) == 0o600  # ...readable by its owner only


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_files_holding_a_secret_are_private(tmp_path):
    path = tmp_path / "cfg" / "servers.json"
    plain = [ServerConfig("a", "10.0.0.1", 8188)]
    secret = [ServerConfig("a", "10.0.0.1", 8188, token=TOKEN)]
    save_servers(path, plain)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    save_servers(path, secret)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_servers(path, plain)  # the backup made now holds the token
    for backup in list_backups(path):
        assert stat.S_IMODE(backup.path.stat().st_mode) == 0o600
    assert any(TOKEN in b.path.read_text(encoding="utf-8") for b in list_backups(path))
    out = export_config(secret, tmp_path / "out.json")
    assert TOKEN not in out.read_text(encoding="utf-8")
    out = export_config(secret, tmp_path / "out-secret.json", include_secrets=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_the_configuration_notice_and_issues_never_show_a_token(caplog):
    caplog.set_level(logging.DEBUG)
    bad = json.dumps(
        [
            {"name": "a", "ip": "10.0.0.1", "port": 99999, "token": TOKEN},
            {"name": "b", "ip": "10.0.0.1", "port": 1, "token": 5, "headers": {"X-K": HEADER_SECRET, "bad key": 1}},
            {"name": "c", "url": f"https://user:{TOKEN}@gpu.lan:8443", "token": "\x00" + TOKEN},
        ]
    )
    load = load_config({"NUKE_COMFYUI_SERVERS": bad})
    texts = [load.notice, *load.warnings, *load.errors, repr(load), caplog.text]
    assert load.errors, "the entries were meant to be invalid"
    assert not any(_leaks(t) for t in texts), [t for t in texts if _leaks(t)]


class _PostGuard(http.server.BaseHTTPRequestHandler):
    """A reverse proxy that lets reads through to the simulator but refuses POSTs with 401."""

    upstream = ""

    def do_GET(self):  # noqa: N802 - http.server's naming
        upstream = requests.get(self.upstream + self.path, timeout=5)
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>401 Authorization Required</body></html>"
        self.send_response(401)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
def test_a_proxy_refusing_the_submit_is_not_a_workflow_error(start_sims):
    """A 401 from a proxy in front of one server used to be read as ComfyUI rejecting the
    workflow: the whole batch failed. It is that server's problem: the frames go elsewhere."""
    behind, direct = start_sims([1.0, 1.0], seconds=0.1)
    handler = type("Guard", (_PostGuard,), {"upstream": behind.url})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        servers = [
            ServerConfig("proxied", "127.0.0.1", proxy.server_address[1], priority=0),
            ServerConfig("direct", "127.0.0.1", direct.port, priority=1),
        ]
        with Cluster.from_servers(servers, use_websocket=False, status_ttl=1.0) as cluster:
            snap = cluster.submit_frames(WORKFLOW, [1, 2, 3]).wait(40)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)
    assert snap.state == "done", (snap.message, snap.errors)
    assert snap.servers == {"direct": 3}
    tried = [j for j in snap.jobs if "proxied" in j.failed_servers]
    assert tried, "no frame was sent to the guarded server: nothing was tested"
