"""Batch.snapshot takes again only the jobs that changed since the last one, and stays right."""

from __future__ import annotations

import threading
import time

from nuke_comfy_cluster.core.jobs import Batch, Job, JobError
from nuke_comfy_cluster.core.state import JobState


def _batch(n: int) -> Batch:
    return Batch([Job({"1": {}}, index=i, frame=i + 1) for i in range(n)], name="b")


def _fresh(batch: Batch):
    return tuple(j.snapshot() for j in batch.jobs)


def test_changes_show_in_the_next_snapshot_and_only_changed_jobs_are_taken_again():
    batch = _batch(5)
    first = batch.snapshot()
    assert [j.state for j in first.jobs] == [JobState.PENDING] * 5
    batch.jobs[2].state = JobState.DONE
    batch.jobs[2].server = "gpu1"
    second = batch.snapshot()
    assert second.jobs[2].state is JobState.DONE and second.jobs[2].server == "gpu1"
    assert all(a is b for k, (a, b) in enumerate(zip(first.jobs, second.jobs)) if k != 2)  # reused
    assert second.finished_at is None


def test_finished_and_errors_follow_the_jobs_whatever_the_order_of_changes():
    batch = _batch(4)
    batch.snapshot()
    boom = JobError("workflow", "boom", "gpu1")
    for k in (3, 1, 0):
        batch.jobs[k].state = JobState.DONE
    batch.jobs[2].state = JobState.FAILED
    batch.jobs[2].error = boom
    snap = batch.snapshot()
    assert snap.finished_at is not None and snap.errors == (boom,)
    # Retry failed: the job waits again; its error is gone from the batch's errors
    batch.jobs[2].state = JobState.PENDING
    batch.jobs[2].error = None
    snap = batch.snapshot()
    assert snap.errors == () and snap.jobs[2].state is JobState.PENDING
    assert snap.count(JobState.DONE) == 3


def test_snapshots_taken_while_another_thread_changes_jobs_end_up_exact():
    batch = _batch(2000)
    stop = threading.Event()

    def change() -> None:
        k = 0
        while not stop.is_set():
            job = batch.jobs[k % 2000]
            job.progress_value = float(k)
            job.state = JobState.RUNNING if k % 3 else JobState.DONE
            k += 1

    writer = threading.Thread(target=change)
    writer.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            batch.snapshot()
    finally:
        stop.set()
        writer.join()
    assert batch.snapshot().jobs == _fresh(batch)
