"""Batches against real simulator processes: spread, failover, cancel, errors, results."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.errors import NoServerAvailable
from nuke_comfy_cluster.core.state import JobState
from tests.conftest import protocol_dir, sim_configs, wait_until

pytestmark = pytest.mark.integration

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "shot/f_####"}},
}


def executed_jobs(procs):
    """job id -> how many times a server ran it to success (across every server's history)."""
    counts = {}
    for proc in procs:
        if not proc.alive:
            continue
        history = requests.get(proc.url + "/history", timeout=5).json()
        for entry in history.values():
            extra = entry["prompt"][3]
            if entry["status"]["status_str"] == "success" and "ncc_job" in extra:
                counts[extra["ncc_job"]] = counts.get(extra["ncc_job"], 0) + 1
    return counts


def assert_each_frame_once(snap, out, name, frames):
    assert snap.state == "done", [(j.label, j.state, j.error) for j in snap.jobs if j.state is not JobState.DONE]
    assert sorted(j.frame for j in snap.jobs) == list(frames)
    files = sorted(f for f in os.listdir(out) if f.startswith(name + "."))
    assert files == [f"{name}.{f:04d}.png" for f in frames]
    for f in files:
        with open(os.path.join(out, f), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_frames_spread_and_each_delivered_once(start_sims, tmp_path):
    procs = start_sims([1.0, 0.5, 0.25], seconds=0.3)
    frames = range(1001, 1019)
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=str(tmp_path), sequence_name="sh")
        snap = batch.wait(60)
    assert_each_frame_once(snap, str(tmp_path), "sh", frames)
    per = snap.servers
    assert per.get("sim0", 0) > per.get("sim1", 0) > 0, per  # the fast server takes the most
    counts = executed_jobs(procs)
    assert sorted(counts.values()) == [1] * len(frames)  # no prompt of ours ran twice anywhere
    assert set(counts) == {j.id for j in snap.jobs}


def test_server_killed_mid_batch(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0, 1.0], seconds=0.4)
    frames = range(1, 25)
    with Cluster.from_servers(sim_configs(procs), status_ttl=1.0) as cluster:
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=str(tmp_path), sequence_name="k")
        assert wait_until(lambda: batch.snapshot().done >= 4, 30)
        procs[0].kill()
        snap = batch.wait(90)
    assert_each_frame_once(snap, str(tmp_path), "k", frames)
    assert any("sim0" in j.failed_servers for j in snap.jobs)
    counts = executed_jobs(procs)
    assert all(v == 1 for v in counts.values())


def test_hung_server_does_not_stall_the_batch(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0, 1.0], seconds=0.4)
    frames = range(1, 19)
    with Cluster.from_servers(sim_configs(procs), status_ttl=1.0) as cluster:
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=str(tmp_path), sequence_name="h")

        def waiting_on_sim1():
            return [
                j.label
                for j in batch.snapshot().jobs
                if j.server == "sim1" and j.state in (JobState.SUBMITTED, JobState.RUNNING)
            ]

        def sim1_learned_and_busy():
            snap = batch.snapshot()
            done_there = any(j.server == "sim1" and j.state is JobState.DONE for j in snap.jobs)
            return done_there and snap.running >= 2 and waiting_on_sim1()

        # frozen once sim1's frame time is known (before that the silence limit is 15 s)
        assert wait_until(sim1_learned_and_busy, 30)
        procs[1].sigstop()
        assert waiting_on_sim1(), "premise: frames of ours wait on the frozen server"
        # documented: silent for max(5 s, 2 x frame time), then /queue times out (3 s): ~8 s;
        # 12 s leaves room for a loaded machine
        assert wait_until(lambda: not waiting_on_sim1(), 12), waiting_on_sim1()
        snap = batch.wait(60)
        procs[1].sigcont()
        # the frozen server's prompt finishes after SIGCONT: a late result, ignored
        time.sleep(1.5)
        late = batch.snapshot()
    assert_each_frame_once(snap, str(tmp_path), "h", frames)
    assert [j.state for j in late.jobs] == [JobState.DONE] * len(frames)
    assert len({j.id for j in late.jobs}) == len(frames)


def test_server_restarted_with_queue_lost(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.6)
    frames = range(1, 13)
    with Cluster.from_servers(sim_configs(procs), status_ttl=1.0) as cluster:
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=str(tmp_path), sequence_name="r")
        assert wait_until(
            lambda: any(j.server == "sim0" and j.state is JobState.RUNNING for j in batch.snapshot().jobs), 30
        )
        procs[0].kill()
        procs[0].restart()
        snap = batch.wait(90)
    assert_each_frame_once(snap, str(tmp_path), "r", frames)
    assert any("sim0" in j.failed_servers for j in snap.jobs)


def test_workflow_validation_error_is_reported_once(start_sims):
    procs = start_sims([1.0, 1.0], seconds=0.2)
    workflow = json.loads((protocol_dir() / "workflows" / "invalid_input.json").read_text())
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(workflow, range(1, 11)).wait(30)
    assert snap.state == "failed"
    assert len(snap.errors) == 1, snap.errors
    err = snap.errors[0]
    assert err.kind == "workflow" and err.node_id == "1" and err.node_type == "EmptyImage"
    # not retried elsewhere: each server saw at most one submit of it
    assert sum(j.attempts for j in snap.jobs) <= 2


def test_execution_error_carries_node_message_traceback(start_sims):
    procs = start_sims([1.0], seconds=0.2)
    workflow = json.loads((protocol_dir() / "workflows" / "runtime_error.json").read_text())
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(workflow, range(1, 4)).wait(30)
    assert [j.state for j in snap.jobs] == [JobState.FAILED] * 3
    assert all(j.attempts == 1 for j in snap.jobs)  # workflow errors are not retried
    assert len(snap.errors) == 1
    err = snap.errors[0]
    assert err.node_id and err.node_type and err.traceback and err.message


def test_cancel_batch_running_on_several_servers_spares_other_artists(start_sims):
    """At the cancel, another artist's long prompt runs on sim0 (ours queued behind it) and one
    of ours runs on sim1: ours are deleted or interrupted, theirs runs to the end."""
    procs = start_sims([1.0, 1.0], seconds=3.0)
    other = requests.post(
        procs[0].url + "/prompt",
        json={"prompt": WORKFLOW, "client_id": "other-artist", "extra_data": {"sim_seconds": 8.0}},
        timeout=5,
    )
    other_id = other.json()["prompt_id"]

    def running(proc):
        return [item[1] for item in requests.get(proc.url + "/queue", timeout=5).json()["queue_running"]]

    assert wait_until(lambda: running(procs[0]) == [other_id], 10)
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        batch = cluster.submit_frames(WORKFLOW, range(1, 9))

        def ours_running_on_sim1():
            return [j for j in batch.snapshot().jobs if j.server == "sim1" and j.prompt_id in running(procs[1])]

        assert wait_until(
            lambda: sum(1 for j in batch.snapshot().jobs if j.prompt_id) >= 3 and ours_running_on_sim1(), 20
        )
        ours_running = ours_running_on_sim1()[0]
        assert running(procs[0]) == [other_id], "premise: the other artist's prompt runs at the cancel"
        cancelled_at = time.time()
        cluster.cancel(batch)
        snap = batch.wait(20)
    assert snap.finished and snap.state in ("cancelled", "failed")
    assert all(j.state in (JobState.CANCELLED, JobState.DONE) for j in snap.jobs)
    assert snap.count(JobState.CANCELLED) >= 6

    def queues_free_of_ours():
        for proc in procs:
            q = requests.get(proc.url + "/queue", timeout=5).json()
            for item in q["queue_running"] + q["queue_pending"]:
                if item[3].get("client_id") != "other-artist":
                    return False
        return True

    assert wait_until(queues_free_of_ours, 10)
    # ours that ran at the cancel was interrupted, not left to render a frame nobody wants
    entry = requests.get(procs[1].url + "/history/" + ours_running.prompt_id, timeout=5).json()[ours_running.prompt_id]
    ended = max(m[1]["timestamp"] for m in entry["status"]["messages"]) / 1000.0
    # (unless it ended in the instant between the cancel and the server's answer to /queue)
    assert entry["status"]["status_str"] == "error" or ended < cancelled_at + 0.3, entry["status"]
    assert wait_until(lambda: other_id in requests.get(procs[0].url + "/history", timeout=5).json(), 15)
    entry = requests.get(procs[0].url + "/history/" + other_id, timeout=5).json()[other_id]
    assert entry["status"]["status_str"] == "success"  # the other artist's job was not interrupted


def test_pinned_to_a_dead_server_fails_clearly(start_sims):
    a, b = start_sims([1.0, 1.0], seconds=0.2)
    b.kill()
    with Cluster.from_servers(sim_configs([a, b])) as cluster:
        cluster.pool.update_all_server_status()
        with pytest.raises(NoServerAvailable, match="sim1"):
            cluster.submit_frames(WORKFLOW, range(1, 3), server="sim1")
        snap = cluster.submit_frames(WORKFLOW, range(1, 3), server="sim0").wait(30)
    assert snap.state == "done" and snap.servers == {"sim0": 2}


def test_results_through_shared_directory_and_through_download(start_sims, tmp_path):
    share = tmp_path / "share"
    (share / "out").mkdir(parents=True)
    (share / "in").mkdir()
    shared, private = (
        start_sims([1.0], seconds=0.2, output_dir=str(share / "out"), input_dir=str(share / "in"))[0],
        None,
    )
    private = start_sims([1.0], seconds=0.2)[0]
    servers = [
        ServerConfig("shared", "127.0.0.1", shared.port, dir_local=str(share), dir_remote=str(share)),
        ServerConfig("private", "127.0.0.1", private.port),
    ]
    with Cluster.from_servers(servers) as cluster:
        a = cluster.submit(WORKFLOW, server="shared").wait(30)
        b = cluster.submit(WORKFLOW, server="private").wait(30)
    path_a = a.jobs[0].outputs[0].local_path
    path_b = b.jobs[0].outputs[0].local_path
    assert path_a.startswith(str(share / "out")), path_a  # read in place, not downloaded
    assert os.path.isfile(path_a)
    assert not path_b.startswith(str(share)) and os.path.isfile(path_b)
    with open(path_b, "rb") as f:
        assert f.read(4) == b"\x89PNG"
