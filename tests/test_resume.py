"""A client killed mid-batch, then resumed: every frame once, its own render, nothing re-run.

The client is a real process (the Python API in a subprocess) that is SIGKILLed
while frames run and wait on two simulators; the batch is then resumed in this
process from the ledger. Renders are counted in the simulators' own histories.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.ledger import Ledger
from tests.conftest import REPO, sim_configs
from tests.test_result_integrity import TXT2IMG, assert_own_frames

pytestmark = pytest.mark.integration

CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from nuke_comfy_cluster.core.api import Cluster
    from nuke_comfy_cluster.core.config import ServerConfig
    ports, out, wf = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    servers = [ServerConfig(f"sim{i}", "127.0.0.1", p, priority=i) for i, p in enumerate(ports)]
    cluster = Cluster.from_servers(servers)
    batch = cluster.submit_frames(wf, range(1, 13), output_dir=out, sequence_name="shot", base_seed=11)
    print("BATCH", batch.id, flush=True)
    batch.wait(600)
    """
)


def render_log(procs):
    """Every successful render of ours: (server port, ncc_job, attempt, start ms), for messages."""
    out = []
    for proc in procs:
        for entry in requests.get(proc.url + "/history", timeout=5).json().values():
            extra = entry["prompt"][3]
            if entry["status"]["status_str"] == "success" and "ncc_job" in extra:
                start = dict((m[0], m[1]) for m in entry["status"]["messages"]).get("execution_start", {})
                out.append((proc.port, extra["ncc_job"][:8], extra.get("ncc_attempt", "")[:8], start.get("timestamp")))
    return sorted(out, key=lambda r: (r[1], r[3] or 0))


def renders_per_job(procs):
    counts = {}
    for proc in procs:
        for entry in requests.get(proc.url + "/history", timeout=5).json().values():
            extra = entry["prompt"][3]
            if entry["status"]["status_str"] == "success" and "ncc_job" in extra:
                counts[extra["ncc_job"]] = counts.get(extra["ncc_job"], 0) + 1
    return counts


def start_client_and_kill_it(procs, out, min_delivered):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, json.dumps([p.port for p in procs]), str(out), json.dumps(TXT2IMG)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("BATCH"), line
        batch_id = line.split()[1]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            delivered = [n for n in os.listdir(out) if n.startswith("shot.")] if out.exists() else []
            if len(delivered) >= min_delivered:
                break
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    return batch_id, sorted(os.listdir(out))


def test_killed_client_resumes_without_rendering_anything_twice(start_sims, tmp_path):
    procs = start_sims([1.0, 0.7], seconds=0.6)
    out = tmp_path / "out"
    batch_id, before = start_client_and_kill_it(procs, out, min_delivered=3)
    delivered_before = [n for n in before if n.startswith("shot.")]
    assert 3 <= len(delivered_before) < 12, before  # the premise: killed mid-batch
    queued = sum(
        len(q["queue_running"]) + len(q["queue_pending"])
        for q in (requests.get(p.url + "/queue", timeout=5).json() for p in procs)
    )
    assert queued >= 1  # prompts of the dead client were still on the servers

    ledger = Ledger()
    assert ledger.load(batch_id).state == "unfinished"
    t0 = time.monotonic()
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        batch = cluster.resume(batch_id[:8])
        resumed_in = time.monotonic() - t0
        # every frame in the sequence is kept, also one moved there just before the ledger heard of it
        assert cluster.resumed_counts["kept"] == len(delivered_before)
        snap = batch.wait(120)
    assert snap.state == "done", (snap.message, snap.errors)
    assert_own_frames(str(out), "shot", range(1, 13), 11)
    assert sorted(os.listdir(out)) == [f"shot.{f:04d}.png" for f in range(1, 13)]  # no lock, no staging
    counts = renders_per_job(procs)
    assert len(counts) == 12 and max(counts.values()) == 1, counts  # nothing rendered twice
    assert ledger.load(batch_id).state == "done"
    assert resumed_in < 10


def test_resume_after_a_server_restart_sends_the_lost_frames_again(start_sims, tmp_path):
    (sim,) = start_sims([1.0], seconds=0.6)
    out = tmp_path / "out"
    batch_id, before = start_client_and_kill_it([sim], out, min_delivered=2)
    sim.stop()  # its queue and history are gone with it
    sim.start()
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        snap = cluster.resume(batch_id).wait(120)
        counts = cluster.resumed_counts
    assert snap.state == "done", (snap.message, snap.errors)
    assert counts["kept"] == len([n for n in before if n.startswith("shot.")])
    assert_own_frames(str(out), "shot", range(1, 13), 11)
    # only the frames not delivered before the kill were rendered after the restart
    assert sum(renders_per_job([sim]).values()) == 12 - counts["kept"]


def test_a_finished_batch_cannot_be_resumed_and_names_it(start_sims, tmp_path):
    (sim,) = start_sims([1.0], seconds=0.05)
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        batch = cluster.submit_frames(TXT2IMG, range(1, 3), output_dir=str(tmp_path), sequence_name="a", base_seed=1)
        assert batch.wait(60).state == "done"
        from nuke_comfy_cluster.core.errors import ConfigError

        with pytest.raises(ConfigError, match="is done: nothing to resume"):
            cluster.resume(batch.id)


def test_submit_resume_with_the_same_arguments_continues_a_killed_cli_run(start_sims, tmp_path):
    """The CLI killed (SIGKILL, like a farm wrapper's hard stop), then run again with --resume."""
    procs = start_sims([1.0, 0.7], seconds=0.5)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(TXT2IMG), encoding="utf-8")
    out = tmp_path / "out"
    servers = json.dumps([{"name": f"sim{i}", "ip": "127.0.0.1", "port": p.port} for i, p in enumerate(procs)])
    env = dict(os.environ, NUKE_COMFYUI_SERVERS=servers, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "nuke_comfy_cluster", "submit", str(wf), "--frames", "1-10", "--seed", "11"]
    args += ["--out", str(out), "--name", "shot"]
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and len([n for n in os.listdir(out) if n.startswith("shot.")]) >= 3:
                break
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    again = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming batch" in again.stderr
    assert_own_frames(str(out), "shot", range(1, 11), 11)
    counts = renders_per_job(procs)
    assert len(counts) == 10 and max(counts.values()) == 1, (counts, render_log(procs), again.stderr[-3000:])
