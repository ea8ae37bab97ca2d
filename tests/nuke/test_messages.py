"""What the node says: status lines and error reports from batch snapshots (no Nuke, no servers)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Optional, Sequence

from hypothesis import given
from hypothesis import strategies as st

from nuke_comfy_cluster.core.jobs import BatchSnapshot, JobError, JobSnapshot
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.nuke_host import messages as M


def job(
    i: int,
    state: JobState,
    *,
    frame: Optional[int] = None,
    iteration: Optional[int] = None,
    server: Optional[str] = None,
    error: Optional[JobError] = None,
    failed: Sequence[str] = (),
) -> JobSnapshot:
    return JobSnapshot(
        id=str(i), index=i, label="", frame=frame, iteration=iteration, seed=None, state=state, server=server,
        prompt_id=None, attempts=1, failed_servers=tuple(failed), progress_value=0.0, progress_max=0.0,
        current_node=None, queued_at=None, started_at=None, finished_at=None, outputs=(), error=error,
    )  # fmt: skip


def batch(*jobs: JobSnapshot, message: str = "") -> BatchSnapshot:
    errors: Any = {}
    for j in jobs:
        if j.error is not None and j.error.kind != "cancelled":
            errors.setdefault(j.error.key, j.error)
    return BatchSnapshot("b", "b", tuple(jobs), None, 0.0, None, message, tuple(errors.values()))


def test_compact_numbers():
    assert M.compact_numbers([1003, 1001, 1002, 1007, 1009, 1008]) == "1001-1003, 1007-1009"
    assert M.compact_numbers([5]) == "5"
    assert M.compact_numbers([]) == ""


@given(st.sets(st.integers(-50, 50)))
def test_compact_numbers_round_trips(numbers):
    text = M.compact_numbers(numbers)
    back = set()
    for part in filter(None, text.split(", ")):
        a, sep, b = (
            part.partition("-")
            if not part.startswith("-")
            else ("-" + part[1:].partition("-")[0], *part[1:].partition("-")[1:])
        )
        back.update(range(int(a), int(b) + 1) if sep else [int(a)])
    assert back == numbers


def test_a_workflow_error_names_node_server_message_and_frames():
    err = JobError("workflow", "IndexError: index 3 is out of bounds", "gpu-2", "7", "ImageToMask", "tb")
    snap = batch(
        job(0, JobState.DONE, frame=1, server="gpu-1"),
        job(1, JobState.FAILED, frame=2, error=err),
        job(2, JobState.FAILED, frame=3, error=err),
        job(3, JobState.FAILED, frame=5, error=err),
    )
    line = M.status_line(snap)
    assert line == (
        "Failed: 1 of 4 frames done, 3 failed. "
        "Workflow error in node 7 (ImageToMask) on gpu-2: IndexError: index 3 is out of bounds [frames 2-3, 5]"
    )
    assert M.failure_popup(snap, "Comfy1").startswith("Comfy1: 3 of 4 frames failed.")


def test_an_infrastructure_error_names_every_server_that_failed_the_job():
    err = JobError("infrastructure", "connection refused", "gpu-3")
    snap = batch(job(0, JobState.FAILED, iteration=0, server="gpu-3", failed=("gpu-1", "gpu-2"), error=err))
    assert M.error_lines(snap) == ["connection refused (servers: gpu-1, gpu-2, gpu-3) [iteration 1]"]


def test_distinct_errors_are_counted_once_each():
    a = JobError("workflow", "bad", None, "1", "X")
    b = JobError("infrastructure", "gpu-1: timed out", "gpu-1")
    snap = batch(
        job(0, JobState.FAILED, frame=1, error=a),
        job(1, JobState.FAILED, frame=2, error=a),
        job(2, JobState.FAILED, frame=3, error=b),
    )
    assert M.status_line(snap).endswith("(+1 other errors, see details)")
    details = M.error_details(snap)
    assert details.count("Workflow error in node 1 (X)") == 1 and "gpu-1: timed out [frame 3]" in details


def test_running_and_done_and_cancelled_lines():
    running = batch(
        job(0, JobState.DONE, frame=1, server="a"),
        job(1, JobState.RUNNING, frame=2, server="b"),
        job(2, JobState.PENDING, frame=3),
        message="waiting for servers",
    )
    assert M.status_line(running) == "Running: 1/3 frames done | on b | waiting for servers"
    assert M.status_line(running, cancelling=True).startswith("Cancelling: ")
    done = batch(job(0, JobState.DONE, frame=1, server="a"), job(1, JobState.DONE, frame=2, server="b"))
    assert M.status_line(done) == "Done: 2 frames (a 1, b 1)"
    assert M.failure_popup(done, "n") is None
    cancel = JobError("cancelled", "cancelled by the user")
    cancelled = batch(job(0, JobState.DONE, frame=1, server="a"), job(1, JobState.CANCELLED, frame=2, error=cancel))
    assert M.status_line(cancelled) == "Cancelled: 1 of 2 frames done, 1 cancelled"
    assert M.failure_popup(cancelled, "n") is None


def test_a_detached_batch_says_resume_not_running():
    snap = batch(job(0, JobState.DONE, frame=1), job(1, JobState.RUNNING, frame=2), job(2, JobState.PENDING, frame=3))
    assert M.status_line(snap).startswith("Running: 1/3 frames done")
    detached = dataclasses.replace(snap, detached=True)
    line = M.status_line(detached)
    assert line.startswith("Detached: 1 of 3 frames done") and "Resume" in line


def test_the_close_question_names_each_node_and_both_choices():
    snap = batch(job(0, JobState.DONE, frame=1), job(1, JobState.RUNNING, frame=2))
    text = M.close_question([("ComfyCluster1", snap), ("ComfyCluster2", None)])
    assert text.startswith("ComfyUI Cluster: 2 batches are still rendering:")
    assert "    ComfyCluster1: 1 of 2 frames done" in text
    assert "    ComfyCluster2: being submitted" in text
    assert "Yes: keep rendering" in text and "Resume" in text and "No: cancel" in text
    assert "Keep it rendering" in M.close_question([("ComfyCluster1", snap)])


def test_ledger_lines_give_the_short_id_and_counts():
    summary = SimpleNamespace(batch_id="0123456789abcdef", done=3, failed=1, total=8, state="failed")
    assert M.resumable_line(summary).startswith("Unfinished: batch 01234567, 3 of 8 done, 1 failed. Press Resume")
    assert M.elsewhere_line(summary).startswith("Rendering in another session: batch 01234567")
    assert M.finished_line(summary) == "Failed while the script was closed: batch 01234567, 3 of 8 done, 1 failed."
