"""The command line as a TD runs it: real processes, real exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def run(args, env_extra=None, timeout=60):
    env = dict(os.environ)
    for var in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT"):
        env.pop(var, None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster"] + args,
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout,
    )


def servers_json(procs, extra=()):
    entries = [{"name": f"sim{i}", "ip": "127.0.0.1", "port": p.port, "priority": i} for i, p in enumerate(procs)]
    return json.dumps(entries + list(extra))


@pytest.mark.parametrize(
    "value, needle",
    [
        ('[{"name": "a", "ip": "10.0.0.1", "port": 8188,}]', "line 1, column"),
        ('[{"name": "a", "ip": "10.0.0.1", "port": "abc"}]', "port"),
        ('[{"name": "a", "ip": "10.0.0.1", "port": 70000}]', "port"),
        ('[{"name": "a", "ip": "bad host!", "port": 1}]', "ip"),
        ('[{"name": "a", "ip": "h", "port": 1}, {"name": "a", "ip": "h", "port": 2}]', "a"),
        ("/nonexistent/servers.json", "/nonexistent/servers.json"),
    ],
)
def test_validate_names_the_problem_without_traceback(value, needle):
    out = run(["validate"], {"NUKE_COMFYUI_SERVERS": value})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert needle in out.stdout


def test_validate_good_file_and_json_output(tmp_path):
    f = tmp_path / "servers.json"
    f.write_text('[{"name": "gpu1", "ip": "10.0.0.5", "port": 8188, "priority": 0, "enabled": true}]')
    out = run(["validate", str(f), "--json"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["valid"] is True and data["servers"] == ["gpu1"]


def test_status_json_against_live_dead_and_hung(start_sims):
    live, dead, hung = start_sims([1.0, 1.0, 1.0], seconds=0.5)
    dead.kill()
    hung.sigstop()
    try:
        out = run(["status", "--json"], {"NUKE_COMFYUI_SERVERS": servers_json([live, dead, hung])})
    finally:
        hung.sigcont()
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["source"] == "inline" and isinstance(data["warnings"], list)
    by = {s["name"]: s for s in data["servers"]}
    assert by["sim0"]["status"] == "online" and by["sim0"]["latency_ms"] is not None
    assert by["sim1"]["status"] == "offline" and by["sim2"]["status"] == "offline"
    for s in data["servers"]:
        assert {"name", "status", "queue_running", "queue_pending", "priority", "enabled", "latency_ms"} <= set(s)


def test_health_exit_codes(start_sims):
    a, b = start_sims([1.0, 1.0], seconds=0.2)
    both = {"NUKE_COMFYUI_SERVERS": servers_json([a, b])}
    assert run(["health"], both).returncode == 0
    b.kill()
    out = run(["health"], both)
    assert out.returncode == 1 and "DEGRADED" in out.stdout
    a.kill()
    assert run(["health", "--json"], both).returncode == 2
    assert run(["health"], {"NUKE_COMFYUI_SERVERS": "[not json"}).returncode == 2


def test_submit_frames_json_and_out(start_sims, tmp_path):
    procs = start_sims([1.0, 0.5], seconds=0.2)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x_####"}},
    }))
    out_dir = tmp_path / "out"
    out = run(["submit", str(wf), "--frames", "1-6", "--out", str(out_dir), "--json"],
              {"NUKE_COMFYUI_SERVERS": servers_json(procs)}, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["makespan_s"] > 0 and [j["frame"] for j in data["jobs"]] == [1, 2, 3, 4, 5, 6]
    assert all(j["state"] == "done" and j["prompt_id"] and j["server"] for j in data["jobs"])
    assert sorted(os.listdir(out_dir / "")) == [".downloads"] + [f"wf.{i:04d}.png" for i in range(1, 7)]


def test_submit_to_unreachable_cluster_fails_cleanly(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    out = run(["submit", str(wf), "--server", "gpu9"], {"NUKE_COMFYUI_SERVERS": '[{"name": "gpu1", "ip": "127.0.0.1", "port": 9}]'})
    assert out.returncode == 2 and "gpu9" in out.stderr and "Traceback" not in out.stderr


def test_demo_runs_headless():
    out = run(["demo", "--frames", "6", "--seconds", "0.2"], timeout=120)
    assert out.returncode == 0, out.stderr
    assert "makespan" in out.stdout and "sim-1.0x" in out.stdout
