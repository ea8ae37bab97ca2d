"""Heterogeneous clusters (issue 11): a server that cannot run a workflow is left out of that
batch, with the reason; the batch fails only when no server can run it, before anything renders.

Against simulator processes started with ``--without-nodes``, ``--models`` and
``--fail-class``, which answer as ComfyUI does (400 bodies, out-of-memory execution_error).
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from tests.conftest import sim_configs
from tests.test_result_integrity import TXT2IMG, assert_own_frames

pytestmark = pytest.mark.integration

INVERT = json.loads(json.dumps(TXT2IMG))
INVERT["11"] = {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}}
INVERT["9"]["inputs"]["images"] = ["11", 0]


def ours_ran(proc):
    """Prompts of ours the simulator saw (accepted ones, from its history)."""
    history = requests.get(proc.url + "/history", timeout=5).json()
    return sum(1 for e in history.values() if "ncc_job" in e["prompt"][3])


def test_a_server_without_a_node_is_left_out_and_the_others_render_every_frame(start_sims, tmp_path):
    fast = start_sims([2.0], seconds=0.1, extra_args=["--without-nodes", "ImageInvert"])[0]
    slow = start_sims([1.0, 1.0], seconds=0.1)
    procs = [fast] + slow
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(INVERT, range(1, 13), output_dir=str(tmp_path), sequence_name="s", base_seed=4).wait(90)
    assert snap.state == "done", (snap.message, snap.errors)
    assert dict(snap.left_out) == {"sim0": "sim0: no node ImageInvert"}, snap.left_out
    assert "rendering on 2 of 3 servers" in snap.message or "left out" in snap.message, snap.message
    assert ours_ran(fast) == 0  # found before sending: nothing was refused, nothing rendered there
    assert {j.server for j in snap.jobs} == {"sim1", "sim2"}
    assert_own_frames(str(tmp_path), "s", range(1, 13), 4)


def test_no_server_can_run_it_fails_before_anything_renders_with_every_reason(start_sims, tmp_path):
    a = start_sims([1.0], seconds=0.1, extra_args=["--without-nodes", "ImageInvert"])[0]
    b = start_sims([1.0], seconds=0.1, extra_args=["--models", "other.safetensors"])[0]
    t0 = time.monotonic()
    with Cluster.from_servers(sim_configs([a, b])) as cluster:
        snap = cluster.submit_frames(INVERT, range(1, 7), output_dir=str(tmp_path), sequence_name="s").wait(30)
    took = time.monotonic() - t0
    assert snap.state == "failed" and snap.failed == 6
    (error,) = snap.errors  # one error for the batch, not one per frame or per server
    assert "No server can run this workflow" in error.message
    assert "sim0: no node ImageInvert" in error.message and "sim1: no checkpoint sim_sd15.safetensors" in error.message
    assert ours_ran(a) == 0 and ours_ran(b) == 0
    assert took < 5, took


def test_a_server_that_runs_out_of_memory_is_left_out_after_its_second_failure(start_sims, tmp_path):
    bad = start_sims([3.0], seconds=0.05, extra_args=["--fail-class", "KSampler"])[0]
    good = start_sims([1.0, 1.0], seconds=0.1)
    procs = [bad] + good
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(TXT2IMG, range(1, 13), output_dir=str(tmp_path), sequence_name="s", base_seed=2).wait(90)
    assert snap.state == "done", (snap.message, snap.errors)
    assert "sim0" in dict(snap.left_out) and "out of memory" in dict(snap.left_out)["sim0"].lower()
    assert ours_ran(bad) <= 2  # not fed every frame
    assert "sim0" in snap.message  # the final message says who was left out
    assert_own_frames(str(tmp_path), "s", range(1, 13), 2)


def test_an_error_every_server_returns_is_the_workflows_named_once(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.05, extra_args=["--fail-class", "KSampler"])
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(TXT2IMG, range(1, 5), output_dir=str(tmp_path), sequence_name="s").wait(60)
    assert snap.state == "failed"
    keys = {(e.kind, e.node_id, e.node_type) for e in snap.errors}
    assert keys == {("workflow", "3", "KSampler")}, snap.errors


def test_validate_prints_the_compatibility_matrix_without_rendering(start_sims, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    bare = start_sims([1.0], seconds=0.1, extra_args=["--without-nodes", "ImageInvert"])[0]
    full = start_sims([1.0], seconds=0.1)[0]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(INVERT), encoding="utf-8")
    servers = [
        {"name": "bare", "ip": "127.0.0.1", "port": bare.port},
        {"name": "full", "ip": "127.0.0.1", "port": full.port},
        {"name": "again", "ip": "localhost", "port": full.port},
    ]
    env = dict(os.environ, NUKE_COMFYUI_SERVERS=json.dumps(servers), PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster", "validate", "--workflow", str(wf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bare: no node ImageInvert" in out.stdout
    assert "again is the same server as full" in out.stdout
    assert "rendering on" in out.stdout and "Traceback" not in out.stderr
    assert ours_ran(bare) == 0 and ours_ran(full) == 0
    as_json = subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster", "validate", "--json", "--workflow", str(wf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(as_json.stdout)
    assert data["compatibility"]["bare"]["state"] == "incompatible"
    assert data["compatibility"]["full"]["state"] == "compatible"
