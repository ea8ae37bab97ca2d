"""The dispatcher's promises that the wider suites left unguarded (issue 17, mutation testing).

Each test drives a Cluster against simulator processes (or against a port where nothing
listens) and looks only at what a user sees: the batch's message, its frames' states and
errors, the files in the output folder, what the servers were sent.
"""

from __future__ import annotations

import os
import socket
import time
from typing import List

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.compatibility import check_servers
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.ledger import Ledger
from tests.conftest import sim_configs, wait_until

pytestmark = pytest.mark.integration

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dp/f_####"}},
}

#: a node the servers started with ``--without-nodes ImageInvert`` lack
INVERTED = dict(
    WORKFLOW,
    **{
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "dp/f_####"}},
    },
)


def _free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history(url: str) -> dict:
    return requests.get(url + "/history", timeout=5).json()


@pytest.mark.timeout(60)
def test_with_every_server_down_the_batch_says_it_waits_up_to_300_s():
    """docs/OPERATIONS.md: without a timeout a batch whose servers are all down waits up to
    300 s and says so, naming why each server is unavailable."""
    config = ServerConfig("gone", "127.0.0.1", _free_port())
    with Cluster.from_servers([config], ledger=False, status_ttl=0.5) as cluster:
        batch = cluster.submit_frames(WORKFLOW, [1, 2])
        seen = wait_until(lambda: batch.snapshot().message.startswith("Waiting for a server"), 20)
        message = batch.snapshot().message
        assert seen, message
        assert message.startswith("Waiting for a server (gives up after 300 s): gone: "), message
        assert not batch.finished  # still waiting, nothing failed yet
        assert [j.state.value for j in batch.snapshot().jobs] == ["pending", "pending"]


@pytest.mark.timeout(60)
def test_a_lone_prompt_is_frame_one_of_its_sequence(start_sims, tmp_path):
    """``submit`` of one prompt (no frame number) writes ``name.0001.png``, the number the
    sequence lock and the overwrite check reserved for it."""
    (sim,) = start_sims([1.0], seconds=0.05)
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        snap = cluster.submit(WORKFLOW, output_dir=str(tmp_path), sequence_name="still").wait(30)
    assert snap.state == "done", [(j.state, j.error) for j in snap.jobs]
    assert sorted(os.listdir(tmp_path)) == ["still.0001.png"]
    assert snap.jobs[0].outputs[0].local_path == os.path.join(str(tmp_path), "still.0001.png")


@pytest.mark.timeout(60)
def test_when_no_server_can_run_the_workflow_every_frame_fails_at_once_and_nothing_is_sent(start_sims):
    """The compatibility check finds every server lacking a node: each frame fails with every
    server's reason before any prompt is sent (not after waiting 300 s for a server)."""
    procs = start_sims([1.0, 1.0], seconds=0.05, extra_args=["--without-nodes", "ImageInvert"])
    with Cluster.from_servers(sim_configs(procs), ledger=False) as cluster:
        snap = cluster.submit_frames(INVERTED, [1, 2, 3]).wait(30)
    assert snap.state == "failed", snap.message
    assert [j.state.value for j in snap.jobs] == ["failed"] * 3
    error = snap.jobs[0].error
    assert error is not None and "sim0" in error.message and "sim1" in error.message, error
    assert "ImageInvert" in error.message, error
    assert "No server can run this workflow" in snap.message, snap.message
    for proc in procs:
        assert _history(proc.url) == {}


@pytest.mark.timeout(90)
def test_a_server_left_out_is_named_in_the_batch_message_while_the_others_render(start_sims):
    """A server whose frames keep failing where another renders them is left out; the batch
    says so in one sentence ("Rendering on 1 of 2 servers: ...") while the rest renders."""
    good = start_sims([1.0], seconds=0.3)[0]
    bad = start_sims([1.0], seconds=0.3, extra_args=["--fail-class", "EmptyImage"])[0]
    with Cluster.from_servers(sim_configs([good, bad]), ledger=False) as cluster:
        batch = cluster.submit_frames(WORKFLOW, range(1, 13))
        seen: List[str] = []
        batch.add_listener(lambda snap: seen.append(snap.message))
        snap = batch.wait(60)
    assert snap.state == "done", snap.message
    assert snap.servers == {"sim0": 12}, snap.servers
    assert "left out: sim1" in snap.message, snap.message
    during = [m for m in seen if m.startswith("Rendering on")]
    assert during and during[0].startswith("Rendering on 1 of 2 servers: sim1: "), seen


@pytest.mark.timeout(90)
def test_retry_failed_clears_the_old_failure_from_the_message(start_sims):
    """After "Retry failed" the batch no longer says why it failed before while its frames
    render again; the message at the end is about the new outcome."""
    port = _free_port()
    config = ServerConfig("late", "127.0.0.1", port)
    with Cluster.from_servers([config], ledger=False, status_ttl=0.5, wait_for_servers=0.5) as cluster:
        batch = cluster.submit_frames(WORKFLOW, [1, 2])
        failed = batch.wait(30)
        assert [j.state.value for j in failed.jobs] == ["failed", "failed"], failed.message
        assert "No server came back" in failed.message
        (sim,) = start_sims([1.0], seconds=0.5, port=port)
        assert wait_until(lambda: cluster.pool.server_snapshots()[0].status.reachable, 20)
        seen = []
        batch.add_listener(lambda snap: seen.append((snap.state, snap.message)))
        cluster.retry_failed(batch)
        assert wait_until(lambda: batch.snapshot().state == "done", 40), batch.snapshot().message
    unfinished = [m for state, m in seen if state not in ("done", "failed")]
    assert unfinished, seen  # premise: the batch was seen rendering again
    assert not [m for m in unfinished if "No server came back" in m], seen
    assert "No server came back" not in batch.snapshot().message


@pytest.mark.timeout(90)
def test_a_frame_out_of_attempts_after_a_garbled_submit_answer_ends_the_batch(start_sims):
    """With one attempt per frame, a submit whose answer cannot be read fails the frame, and
    the batch ends there and then (``wait`` returns), saying why."""
    (sim,) = start_sims([1.0], seconds=0.2)
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        assert wait_until(lambda: cluster.pool.server_snapshots()[0].live, 10)
        time.sleep(0.3)  # the connect-time status poll is answered
        check_servers(cluster.pool.servers, WORKFLOW)  # so that our POST /prompt is the next JSON answer
        sim.set_fault(malformed_json=1)
        batch = cluster.submit_frames(WORKFLOW, [7], max_attempts=1)
        snap = batch.wait(10)
        assert batch.finished, "wait() did not return: the batch was not told its last frame failed"
    assert snap.state == "failed", (snap.message, [(j.state, j.error) for j in snap.jobs])
    job = snap.jobs[0]
    assert job.attempts == 1 and job.error is not None and job.error.kind == "infrastructure", job
    assert "after 1 attempts" in job.error.message, job.error


@pytest.mark.timeout(90)
def test_a_retried_frame_waits_without_the_prompt_id_of_its_failed_attempt(start_sims):
    """After "Retry failed" a frame waits as a new frame: it no longer shows the prompt of
    the attempt that failed (a panel or a resume would look that prompt up on the server)."""
    (sim,) = start_sims([1.0], seconds=0.1, extra_args=["--fail-class", "EmptyImage"])
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        batch = cluster.submit_frames(WORKFLOW, [1, 2])
        failed = batch.wait(30)
        assert [j.state.value for j in failed.jobs] == ["failed", "failed"], failed.message
        old = {j.prompt_id for j in failed.jobs}
        assert None not in old, failed.jobs  # premise: both attempts reached the server
        seen = []
        batch.add_listener(lambda snap: seen.extend(j for j in snap.jobs if j.state.value == "pending"))
        time.sleep(0.3)  # observers are told at most every 0.1 s: the retry's first change is shown
        cluster.retry_failed(batch)
        assert wait_until(lambda: seen and batch.finished, 30), batch.snapshot().message
    assert seen, "premise: the retried frames were seen waiting"
    stale = [(j.label, j.prompt_id) for j in seen if j.prompt_id in old]
    assert not stale, stale


@pytest.mark.timeout(60)
def test_a_400_validation_answer_is_the_workflows_fault_not_the_servers(start_sims):
    """ComfyUI answers a prompt that fails validation with 400 and ``node_errors``: the batch
    stops at once with that reason; the frame is not sent again as if the server had failed."""
    (sim,) = start_sims([1.0], seconds=0.05)
    bad = dict(WORKFLOW, **{"1": dict(WORKFLOW["1"], inputs=dict(WORKFLOW["1"]["inputs"], width=-5))})
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        snap = cluster.submit_frames(bad, [1, 2]).wait(30)
    assert snap.state == "failed", snap.message
    for job in snap.jobs:
        assert job.error is not None and job.error.kind != "infrastructure", job.error
        assert "smaller than min" in job.error.message, job.error
    assert sum(j.attempts for j in snap.jobs) == 1, [(j.label, j.attempts) for j in snap.jobs]


@pytest.mark.timeout(90)
def test_a_resumed_batch_keeps_the_attempt_marks_its_prompts_carry(start_sims, tmp_path):
    """A resumed batch follows the prompts the last process left on the servers under the
    attempt marks those prompts carry (``extra_data.ncc_attempt``): the ledger keeps naming
    them, so a later ``cleanup`` or resume still recognises them as ours."""
    (sim,) = start_sims([1.0], seconds=3.0)
    ledger = Ledger(tmp_path / "ledger")
    out = str(tmp_path / "out")
    first = Cluster.from_servers(sim_configs([sim]), ledger=ledger)
    try:
        batch = first.submit_frames(WORKFLOW, [1, 2], output_dir=out, sequence_name="r")
        assert wait_until(lambda: all(j.prompt_id for j in batch.snapshot().jobs), 20), batch.snapshot().jobs
    finally:
        first.close(detach=True)
    second = Cluster.from_servers(sim_configs([sim]), ledger=ledger)
    try:
        resumed = second.resume(batch.id)
        assert wait_until(lambda: len(resumed.snapshot().jobs) == 2, 5)
        time.sleep(0.5)  # the loop has taken the batch over and written it down
    finally:
        second.close(detach=True)
    queue = requests.get(sim.url + "/queue", timeout=5).json()
    marks = {item[1]: item[3].get("ncc_attempt") for item in queue["queue_running"] + queue["queue_pending"]}
    updates = ledger.load(batch.id).jobs
    under_way = [u for u in updates.values() if u.state in ("submitted", "running")]
    assert under_way, updates  # premise: a prompt of the first process was still on the server
    for update in under_way:
        assert update.prompt_id in marks, (update, marks)
        assert update.attempt == marks[update.prompt_id], (update, marks)


@pytest.mark.timeout(60)
def test_a_result_fetched_after_its_frame_was_cancelled_is_ignored_and_counted(start_sims):
    """The frame is cancelled while it renders; its result, fetched after the cancel was
    settled, is dropped (the frame stays cancelled) and counted as a late result (the fault
    benchmarks report that count)."""
    (sim,) = start_sims([1.0], seconds=1.0)
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        batch = cluster.submit_frames(WORKFLOW, [1])
        assert wait_until(lambda: batch.snapshot().jobs[0].state.value == "running", 20)
        # every HTTP answer now takes 3 s: the cancel's look at the queue is answered after
        # the frame ended (its websocket news is not delayed) and before its result is fetched
        sim.set_fault(latency=3.0)
        cluster.cancel(batch)
        snap = batch.wait(20)
        assert snap.jobs[0].state.value == "cancelled", snap.jobs[0]
        assert wait_until(lambda: cluster.dispatcher.ignored_late_results > 0, 15)
        late = cluster.dispatcher.ignored_late_results
        sim.set_fault(latency=0.0)
    assert late == 1, late
    assert batch.snapshot().jobs[0].state.value == "cancelled"
