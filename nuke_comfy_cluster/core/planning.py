"""The dispatcher's planning turn: which waiting frames of each batch go where, now.

On every loop turn :meth:`PlanningMixin._plan_all` builds each server's
:class:`~.scheduler.ServerLoad` (what we have queued and running there, its queue
length and age, what it has loaded: :mod:`.setup_aware`), asks the batch's
scheduler (or the round robin / priority strategy) for targets and starts the
submits; with no usable server it waits, then fails what is left. Waiting jobs are
found with a cursor (:meth:`_waiting_jobs`), so a turn costs O(servers + frames
near the front), not O(frames).

Mixed into the Dispatcher; runs on its loop thread.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from . import balancing
from .jobs import Batch, Job, JobError
from .scheduler import ServerLoad
from .state import JobState

#: our prompts one server may hold at once when not using the scheduler's window
SIMPLE_WINDOW = 2


def _named(name: str, reason: str) -> str:
    """``name: reason`` unless the reason already starts with the name."""
    return reason if reason.startswith(name + ":") else "{}: {}".format(name, reason)


class PlanningMixin:
    """Planning, mixed into the Dispatcher (its state is made there)."""

    def _plan_all(self) -> None:
        if not self._batches:
            return
        now_wall = time.time()
        now_mono = time.monotonic()
        snaps = {s.name: s for s in self.pool.server_snapshots()}
        for batch in list(self._batches):
            if batch.cancel_requested or batch.checking:
                continue
            pending = self._waiting_jobs(batch, limit=max(256, 32 * len(snaps)))
            sched = self._schedulers.get(batch.id)
            # a first cold frame may be taken back while nothing waits (setup_aware)
            if not pending and not (sched is not None and sched.watching):
                continue
            names = [batch.pinned] if batch.pinned else list(snaps)
            usable = [
                snaps[n] for n in names if n in snaps and snaps[n].is_available(now_wall) and n not in batch.left_out
            ]
            if not usable:
                self._wait_for_servers(batch, pending, snaps, now_wall)
                continue
            if batch.id in self._waiting_since:
                del self._waiting_since[batch.id]
                batch.message = "Servers are back: continuing"
                self._touch(batch)
            loads = []
            in_flight = self._in_flight(batch)
            for snap in usable:
                # a frame being taken back is as good as gone: the server is free in a moment
                ours = [j for j in in_flight if j.server == snap.name and j.id not in self._withdrawing]
                # one prompt runs at a time: an older RUNNING one is a missed finish
                running = sorted(
                    (j for j in ours if j.state is JobState.RUNNING and j.started_mono is not None),
                    key=lambda j: j.started_mono or 0.0,
                )[-1:]
                age = now_wall - snap.last_status_check if snap.last_status_check else 1e9
                server = self.pool.get_server_by_name(snap.name)
                warm, owner = self._cache_state(batch, snap, ours, now_wall)
                loads.append(
                    ServerLoad(
                        name=snap.name,
                        priority=snap.priority,
                        queue_remaining=snap.queue_length,
                        observed_at=now_mono - age,
                        ours_queued=len(ours) - len(running),
                        ours_running_since=running[0].started_mono if running else None,
                        max_in_flight=server.config.max_in_flight if server is not None else 0,
                        warm=warm,
                        cache_owner=owner,
                    )
                )
            # Plan only over servers some waiting frame has not failed on: a plan naming the one
            # server a frame failed on would hold it back forever while the others sit idle.
            allowed = [ld for ld in loads if any(ld.name not in j.failed_servers for j in pending)]
            targets = self._targets(batch, allowed or loads, len(pending))
            for name in targets:
                job = self._next_job_for(pending, name, anywhere=not allowed)
                if job is None:
                    continue
                pending.remove(job)
                server = self.pool.get_server_by_name(name)
                if server is not None:
                    self._start_submit(batch, job, server)

    def _waiting_jobs(self, batch: Batch, limit: int) -> List[Job]:
        """The first ``limit`` jobs waiting to be sent, oldest first, without scanning the batch.

        Jobs are sent roughly in order, so a cursor skips those already sent for good;
        jobs put back to wait (failover, Retry failed) are kept aside and come first.
        The scheduler needs the exact count only near the end of a batch, where it is exact.
        """
        jobs = batch.jobs
        cur = self._cursor.get(batch.id, 0)
        while cur < len(jobs) and (jobs[cur].state is not JobState.PENDING or jobs[cur].id in self._submitting):
            cur += 1
        self._cursor[batch.id] = cur
        out: List[Job] = []
        back = self._requeued.get(batch.id)
        if back:
            for job_id, job in list(back.items()):
                if job.state is not JobState.PENDING:
                    del back[job_id]
                elif job.id not in self._submitting and job.index < cur:
                    out.append(job)
            out.sort(key=lambda j: j.index)
        i = cur
        while i < len(jobs) and len(out) < limit:
            job = jobs[i]
            if job.state is JobState.PENDING and job.id not in self._submitting:
                out.append(job)
            i += 1
        return out

    def _put_back(self, batch: Batch, job: Job) -> None:
        """A job waits again (called wherever a job goes back to PENDING)."""
        self._requeued.setdefault(batch.id, {})[job.id] = job

    def _in_flight(self, batch: Batch) -> List[Job]:
        """Our jobs of this batch queued or running on a server, from the routing tables."""
        # every attempt under way (being sent, queued, running, fetched) is in _by_token
        return [j for b, j in self._by_token.values() if b is batch and self._occupies_server(j)]

    def _occupies_server(self, job: Job) -> bool:
        """Queued or running there (a job whose result is being fetched no longer is)."""
        if job.id in self._submitting:
            return True
        return job.state in (JobState.SUBMITTED, JobState.RUNNING) and job.server_done_mono is None

    def _targets(self, batch: Batch, loads: List[ServerLoad], pending: int) -> List[str]:
        sched = self._schedulers[batch.id]
        live = {s.name: s.live for s in self.pool.server_snapshots()}
        sched.set_lead_time(0.5 if all(live.get(load.name) for load in loads) else self.pool.status_ttl)
        if self.pool.strategy == balancing.LEAST_LOADED or batch.pinned:
            targets = sched.plan(loads, pending)
            if sched.withdrawals:
                self._take_back(batch, sched.withdrawals)
            return targets
        # round robin / priority: one prompt at a time to servers with window room
        room = {
            load.name: max(
                0, (load.max_in_flight or SIMPLE_WINDOW) - load.ours_queued - (1 if load.ours_running_since else 0)
            )
            for load in loads
        }
        snaps = [s for s in self.pool.server_snapshots() if room.get(s.name)]
        targets: List[str] = []
        last = None
        while len(targets) < pending:
            name = balancing.choose(
                [s for s in snaps if room[s.name] > 0], self.pool.strategy, now=time.time(), last_pick=last
            )
            if name is None:
                break
            room[name] -= 1
            targets.append(name)
            last = name
        return targets

    @staticmethod
    def _next_job_for(pending: List[Job], server: str, anywhere: bool) -> Optional[Job]:
        for job in pending:
            if server not in job.failed_servers:
                return job
        # every usable server failed these jobs before: try again rather than stall
        return pending[0] if pending and anywhere else None

    def _wait_for_servers(self, batch: Batch, pending: List[Job], snaps: Dict[str, Any], now: float) -> None:
        since = self._waiting_since.setdefault(batch.id, time.monotonic())
        reasons = "; ".join(
            _named(s.name, s.unavailable_reason(now) or "unknown")
            for s in snaps.values()
            if not batch.pinned or s.name == batch.pinned
        )
        waited = time.monotonic() - since
        if batch.pinned and batch.pinned not in snaps:
            reasons = f"server {batch.pinned!r} is no longer configured"
        # no live counter in the text: it changes only when the reasons do (logs stay quiet)
        msg = "Waiting for a server (gives up after {:.0f} s): {}".format(
            self.wait_for_servers, reasons or "none configured"
        )
        if batch.message != msg:
            batch.message = msg
            self._touch(batch)
        if waited >= self.wait_for_servers:
            error = JobError(
                "infrastructure",
                f"No server came back within {self.wait_for_servers:.0f} s: {reasons}. Frames already rendered are kept; "
                "use Retry failed when a server is up.",
            )
            for job in batch.jobs:  # every waiting job, not only the planner's view
                if job.state is JobState.PENDING and job.id not in self._submitting:
                    self._finish(batch, job, JobState.FAILED, error)
            del self._waiting_since[batch.id]
