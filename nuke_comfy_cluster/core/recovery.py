"""Recovery for the dispatcher: missed messages, dead or frozen servers, orphaned prompts.

Websocket messages can be lost (a reconnect, a frozen server), so the dispatcher
reconciles what it believes with ``/queue`` and ``/history``:

- a prompt in neither after the server answered again was lost with a restart:
  the job goes back to pending (elsewhere if possible);
- a server that stops answering has its jobs requeued, and the prompts it may
  still hold are remembered as orphans;
- when that server answers again, our orphans are deleted from its queue (or
  interrupted when running): the frame already went elsewhere.

Runs on the dispatcher's loop thread; network calls go through ``_io``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Optional, Set, Tuple

from .errors import ClusterError, user_message
from .jobs import Batch, Job, JobError
from .protocol import workflow_error_from_execution
from .results import history_error, history_status, parse_history_entry
from .server import parse_queue
from .state import JobState


@dataclass
class _Orphan:
    server: str
    token: str
    prompt_id: Optional[str]
    since: float


class RecoveryMixin:
    """Health checks, reconciliation and orphan clean-up, mixed into the Dispatcher."""

    _batches: List[Batch]
    _busy: Set[Tuple[str, str]]
    _orphans: List[_Orphan]

    def _check_health(self) -> None:
        now = time.monotonic()
        snaps = {s.name: s for s in self.pool.server_snapshots()}
        stale_servers: Set[str] = set()
        # only the jobs under way (every one holds an attempt token), not every frame of every batch
        for batch, job in list(self._by_token.values()):
            sched = self._schedulers.get(batch.id)
            if not job.server or not self._occupies_server(job) or job.id in self._submitting:
                continue
            snap = snaps.get(job.server)
            if snap is None:
                self._requeue(batch, job, job.server, f"{job.server} was removed from the configuration")
                continue
            if snap.enabled and not snap.status.reachable and snap.status.value != "unknown":
                stale_servers.add(job.server)
                continue
            # not frame_time(): that grows with the running frame, so a missed
            # execution_success would never look overdue
            estimate = sched.expected_frame_time(job.server) if sched is not None else None
            quiet = now - job.last_news
            limit = max(5.0, 2.0 * estimate) if estimate else 15.0
            if not snap.live and quiet > self.pool.status_ttl:
                stale_servers.add(job.server)
            elif quiet > limit:
                stale_servers.add(job.server)
        for name in stale_servers:
            self._reconcile_server(name)
        for name in {o.server for o in self._orphans}:
            snap = snaps.get(name)
            if snap is not None and snap.status.reachable:
                self._check_orphans(name)

    def _jobs_on(self, name: str) -> List[Tuple[Batch, Job]]:
        return [
            (b, j) for b, j in self._by_token.values() if j.server == name and j.prompt_id and self._occupies_server(j)
        ]

    def _reconcile_server(self, name: str) -> None:
        """Missed messages: ask /history and /queue what became of our prompts there."""
        if ("reconcile", name) in self._busy:
            return
        server = self.pool.get_server_by_name(name)
        jobs = self._jobs_on(name)
        if server is None or not jobs:
            return
        self._busy.add(("reconcile", name))
        wanted = [(b, j, j.prompt_id, j.attempt_token) for b, j in jobs]

        def work() -> None:
            results: List[Tuple[Batch, Job, Optional[str], str, Any]] = []
            failure: Optional[BaseException] = None
            try:
                running, pending = server.update_queue_detail()
                running_ids = {item[1] for item in running}
                pending_ids = {item[1] for item in pending}
                for batch, job, prompt_id, token in wanted:
                    if prompt_id in running_ids:
                        results.append((batch, job, token, "running", None))
                    elif prompt_id in pending_ids:
                        results.append((batch, job, token, "queued", None))
                    else:
                        body = server.connection.get_json(f"history/{prompt_id}")
                        entry = parse_history_entry(body, prompt_id or "")
                        results.append((batch, job, token, "history" if entry else "gone", entry))
            except (ClusterError, ValueError) as e:
                failure = e

            def done() -> None:
                self._busy.discard(("reconcile", name))
                if failure is not None:
                    reason = user_message(failure) if isinstance(failure, ClusterError) else str(failure)
                    server.mark_unreachable(reason)
                    server.record_failure(reason)
                    for batch, job, prompt_id, token in wanted:
                        if job.attempt_token == token and not job.state.finished:
                            self._orphans.append(_Orphan(name, token, prompt_id, time.monotonic()))
                            self._requeue(batch, job, name, reason)
                    return
                for batch, job, token, what, entry in results:
                    if job.attempt_token != token or job.state.finished:
                        continue
                    job.last_news = time.monotonic()
                    if what == "running":
                        with batch.lock:
                            self._mark_running(batch, job)
                        self._touch(batch)
                    elif what == "gone":
                        self._requeue(
                            batch,
                            job,
                            name,
                            f"{name}: our prompt vanished from its queue and history (server restarted?)",
                        )
                    elif what == "history":
                        status = history_status(entry)
                        if status == "success":
                            self._succeeded(batch, job, entry)
                        elif status == "error":
                            data = history_error(entry)
                            if data:
                                err = workflow_error_from_execution(data, name, job.id)
                                self._workflow_failed(batch, job, name, err, "execution")
                            elif job.cancel_requested:
                                self._finish(
                                    batch, job, JobState.CANCELLED, JobError("cancelled", "cancelled by the user")
                                )
                            else:
                                self._requeue(batch, job, name, f"{name}: the prompt was interrupted on the server")

            self._call(done)

        self._io(work)

    def _check_orphans(self, name: str) -> None:
        """Remove prompts of ours that a server kept although we gave up on them there."""
        if ("orphans", name) in self._busy:
            return
        server = self.pool.get_server_by_name(name)
        mine = [o for o in self._orphans if o.server == name]
        if server is None or not mine:
            self._orphans = [o for o in self._orphans if o.server != name]
            return
        self._busy.add(("orphans", name))
        tokens = {o.token for o in mine}
        ids = {o.prompt_id for o in mine if o.prompt_id}

        def ours(item: list) -> bool:
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            return item[1] in ids or extra.get("ncc_attempt") in tokens

        def work() -> None:
            ok = True
            try:
                running, pending = parse_queue(server.connection.get_json("queue"))
                doomed = [item[1] for item in pending if ours(item)]
                if doomed:
                    server.connection.post_json("queue", {"delete": doomed})
                for item in running:
                    if ours(item):
                        server.connection.post_json("interrupt", {"prompt_id": item[1]})
            except (ClusterError, ValueError):
                ok = False

            def done() -> None:
                self._busy.discard(("orphans", name))
                if ok:  # deleted, interrupted, or already gone: late results are ignored anyway
                    self._orphans = [o for o in self._orphans if not any(o is m for m in mine)]

            self._call(done)

        self._io(work)
