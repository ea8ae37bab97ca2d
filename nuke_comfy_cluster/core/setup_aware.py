"""The dispatcher's side of setup-aware scheduling: what it tells the scheduler of model loads.

* **Cache state** (:mod:`.cache_view`): for each server a batch may use, whether a
  prompt sent now would find the batch's models loaded (``ServerLoad.warm``) and
  whose they are (``ServerLoad.cache_owner``), from the tail of ``GET /queue``,
  fetched when the server's queue length changes (pushed), not on a timer.
* **Cold or warm start**: ``execution_cached`` lists the nodes ComfyUI skips; a
  prompt whose static nodes are not all there loads (``job_started(cold=...)``),
  and the first node after the loaders tells how long the load took
  (``setup_finished``).
* **Probe take-back**: a cold first frame on a server not measured yet that would
  end after the rest of the batch could be done elsewhere (the scheduler's
  ``withdrawals``) is interrupted when it is still ours that runs, and waits again
  without counting as a failed attempt; the server keeps what it showed.

Mixed into the Dispatcher; runs on its loop thread (network work through ``_io``).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from .cache_view import CacheView, LoaderItem
from .errors import ClusterError, user_message
from .events import ServerEvent
from .jobs import Batch, Job
from .node_timing import split_times
from .state import JobState

log = logging.getLogger("nuke_comfy_cluster.core.dispatch")


class SetupAwareMixin:
    """Cache state, cold starts and probe take-back, mixed into the Dispatcher."""

    _cache: Dict[str, CacheView]
    _setup_items: Dict[str, FrozenSet[LoaderItem]]
    _withdrawing: Dict[str, str]  # job id -> its batch id, while it is being taken back
    taken_back: int

    # -- cache state ------------------------------------------------------------------
    def _cache_state(
        self, batch: Batch, snap: Any, ours: List[Job], now_wall: float
    ) -> Tuple[Optional[bool], Optional[str]]:
        items = self._setup_items.get(batch.id)
        if not items:
            return None, None
        view = self._cache.get(snap.name)
        if view is None:
            view = self._cache[snap.name] = CacheView()
        if view.wants_fetch(snap.queue_length):
            self._fetch_cache(snap.name, snap.queue_length, view)
        sent = [now_wall if j.id in self._submitting or not j.queued_at else j.queued_at for j in ours]
        return view.warm_for(batch.id, items, sent, now_wall)

    def _fetch_cache(self, name: str, queue_length: int, view: CacheView) -> None:
        server = self.pool.get_server_by_name(name)
        if server is None:
            return
        view.fetching = True

        def work() -> None:
            try:
                tail, at, ended = CacheView.fetch(server)
            except Exception as e:  # noqa: BLE001 - any failure: look again at the next change
                log.debug("cache state of %s: %s", name, user_message(e))
                self._call(lambda: view.failed(queue_length))
                return
            self._call(lambda: view.seen(tail, at, queue_length, ended))

        self._io(work)

    # -- cold starts --------------------------------------------------------------------
    def _note_cached(self, batch: Batch, job: Job) -> None:
        """``execution_cached`` arrived: the job starts cold when a static node must run."""
        sched = self._schedulers.get(batch.id)
        if sched is None or not batch.static_nodes or job.state is not JobState.RUNNING or not job.server:
            return
        cold = not batch.static_nodes <= set(job.cached_nodes)
        sched.job_started(job.server, job.started_mono, cold=cold)

    def _note_node(self, batch: Batch, job: Job, event: ServerEvent) -> None:
        """``executing`` a node: the first one past the loaders of a cold start ends its setup."""
        static = batch.static_nodes
        if not static or event.node is None or str(event.node) in static or not job.server:
            return
        marks = job.node_marks[:-1]  # the marks before this node
        if not any(node in static and node not in job.cached_nodes for node, _ in marks):
            return
        if any(node not in static for node, _ in marks):
            return  # already past the setup
        sched = self._schedulers.get(batch.id)
        setup_s, cold = split_times(marks, event.at, static, job.cached_nodes)
        if sched is not None and cold and setup_s is not None:
            sched.setup_finished(job.server, setup_s)

    # -- probe take-back -------------------------------------------------------------------
    def _take_back(self, batch: Batch, names: List[str]) -> None:
        """Take back our first frame on these servers (the scheduler's ``withdrawals``).

        Still queued: deleted from the queue (nothing lost). Running: interrupted, when
        the running prompt is ours (ComfyUI 0.3.39's ``/interrupt`` takes no prompt id).
        """
        sched = self._schedulers.get(batch.id)
        for name in names:
            ours = [j for j in self._in_flight(batch) if j.server == name and j.id not in self._withdrawing]
            running = [j for j in ours if j.state is JobState.RUNNING]
            queued = [j for j in ours if j.state is JobState.SUBMITTED]
            job = running[0] if running else (queued[-1] if queued else None)
            server = self.pool.get_server_by_name(name)
            if job is None or server is None or not job.prompt_id:
                continue
            self._withdrawing[job.id] = batch.id
            log.info("%s: taking %s back from %s (the other servers finish sooner)", batch.name, job.label, name)
            if sched is not None:
                sched.job_withdrawn(name)
            self._io(
                lambda server=server, job=job, prompt_id=job.prompt_id: self._take_back_from(
                    batch, server, job, prompt_id
                )
            )

    def _take_back_from(self, batch: Batch, server: Any, job: Job, prompt_id: str) -> None:
        """I/O worker: delete or interrupt one prompt of ours; report back to the loop."""
        try:
            running, pending = server.update_queue_detail()
            if any(item[1] == prompt_id for item in pending):
                server.connection.post_json("queue", {"delete": [prompt_id]})
                running, pending = server.update_queue_detail()
                if not any(item[1] == prompt_id for item in running + pending):
                    self._call(lambda: self._withdrawn(batch, job, prompt_id))
                    return
            if any(item[1] == prompt_id for item in running):
                # the interrupted event puts it back (see _withdrawn)
                server.connection.post_json("interrupt", {"prompt_id": prompt_id})
                return
        except ClusterError as e:
            log.warning("take back on %s: %s", server.name, user_message(e))
        # it ended meanwhile (or the server is gone): nothing to take back, it goes its way
        self._call(lambda: self._withdrawing.pop(job.id, None))

    def _withdrawn(self, batch: Batch, job: Job, prompt_id: Optional[str] = None) -> bool:
        """A take-back is done (deleted, or its interrupt arrived): the frame waits again,
        no attempt spent. ``prompt_id``: the prompt deleted (the job may have moved on)."""
        if prompt_id is not None and job.prompt_id != prompt_id:
            return False
        if self._withdrawing.pop(job.id, None) is None:
            return False
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        if job.attempt_token:
            self._by_token.pop(job.attempt_token, None)
        self.taken_back += 1
        with batch.lock:
            job.history = list(job.history) + [f"taken back from {job.server}: other servers finish sooner"]
            job.attempts = max(0, job.attempts - 1)
            job.wait_again()
        self._put_back(batch, job)
        self._touch(batch)
        return True


def forget_withdrawals(withdrawing: Dict[str, str], batch_id: str) -> None:
    """A batch is gone: so are its take-backs still under way."""
    for job_id in [k for k, b in withdrawing.items() if b == batch_id]:
        del withdrawing[job_id]
