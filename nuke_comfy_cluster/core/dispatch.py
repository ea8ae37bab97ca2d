"""The dispatcher: spreads batches over the pool, follows them, fails over, cancels.

One loop thread owns every :class:`~.jobs.Job` mutation. Network calls (submit,
history, delete, interrupt, downloads) run on a small worker pool and post their
results back to the loop as closures, so a hung server never stalls the loop or
another server. Websocket events arrive through the pool and are routed by
prompt_id; events that arrive before the ``POST /prompt`` answer are buffered.

Exactly-once delivery: each submit carries an attempt token in ``extra_data``. A
submit that timed out may still run on the server, so it is remembered as an
orphan: when that server answers again, our orphaned prompts are deleted from its
queue (or interrupted when running), and late results of any attempt other than
the job's current one are ignored.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from . import balancing
from .admission import AdmissionMixin, _fingerprint
from .cache_view import CacheView, LoaderItem, loader_items
from .cost_store import CostStore
from .delivering import DeliveryMixin
from .delivery import (
    remove_staging,
    sequence_labels,
)
from .errors import (
    ClusterError,
    user_message,
)
from .events import EventType, ServerEvent
from .jobs import Batch, Job, JobError
from .ledger import Ledger
from .node_timing import static_nodes
from .planning import PlanningMixin, _named
from .pool import ComfyUIServerPool
from .protocol import workflow_error_from_execution
from .recovery import RecoveryMixin, _Orphan
from .results import (
    outputs_from_node_output,
)
from .scheduler import Scheduler
from .server import ComfyUIServer
from .setup_aware import SetupAwareMixin, forget_withdrawals
from .state import JobState
from .submitting import SubmitMixin
from .triage import EXECUTION

log = logging.getLogger(__name__)

#: how long a batch waits for any server to come back before failing what is left
DEFAULT_WAIT_FOR_SERVERS_S = 300.0


class Dispatcher(PlanningMixin, SubmitMixin, AdmissionMixin, DeliveryMixin, RecoveryMixin, SetupAwareMixin):
    """Runs batches on a pool. Start it once; submit batches from any thread."""

    def __init__(
        self,
        pool: ComfyUIServerPool,
        *,
        max_attempts: int = 3,
        wait_for_servers: float = DEFAULT_WAIT_FOR_SERVERS_S,
        tick: float = 0.2,
        download_dir: Optional[str] = None,
        scheduler_factory: Optional[Callable[[], Scheduler]] = None,
        ledger: Optional[Ledger] = None,
        cost_store: Optional[CostStore] = None,
    ) -> None:
        self.pool = pool
        #: learned frame and setup costs kept between sessions (None: this process only)
        self.cost_store = cost_store
        #: where batches are kept so that a later process can resume them (None: nowhere)
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.wait_for_servers = wait_for_servers
        self.tick = tick
        self.download_dir = download_dir or os.path.join(tempfile.gettempdir(), "nuke_comfy_cluster", "downloads")
        self._scheduler_factory = scheduler_factory or (lambda: Scheduler(time.monotonic, withdraw_probes=True))
        self._inbox: queue.Queue[Optional[Callable[[], None]]] = queue.Queue()
        self._workers: Optional[ThreadPoolExecutor] = None
        self._thread: Optional[threading.Thread] = None
        self._batches: List[Batch] = []
        self._schedulers: Dict[str, Scheduler] = {}
        self._batch_listeners: List[Callable[[Batch], None]] = []
        self._learned: Dict[str, Scheduler] = {}  # workflow fingerprint -> latest scheduler
        self._waiting_since: Dict[str, float] = {}
        self._by_prompt: Dict[str, Tuple[Batch, Job]] = {}
        self._by_token: Dict[str, Tuple[Batch, Job]] = {}
        self._submitting: Dict[str, Job] = {}  # job id -> job, for jobs with a POST under way
        #: per batch: index below which no job waits any more, and jobs put back to wait since
        self._cursor: Dict[str, int] = {}
        self._requeued: Dict[str, Dict[str, Job]] = {}
        self._busy: Set[Tuple[str, str]] = set()  # (kind, key) of background checks under way
        self._early: Dict[str, List[ServerEvent]] = {}
        self._cache: Dict[str, CacheView] = {}  # server -> its cache as last seen (setup_aware)
        self._setup_items: Dict[str, FrozenSet[LoaderItem]] = {}  # batch id -> its workflow's loaders
        self._withdrawing: Dict[str, str] = {}  # job id -> batch id, while taken back (setup_aware)
        self._orphans: List[_Orphan] = []
        self._dirty: Set[str] = set()
        self._last_flush = 0.0
        self._last_check = 0.0
        self._running = False
        self.ignored_late_results = 0  # counted for the fault benchmarks
        self.taken_back = 0  # first frames taken back to go elsewhere (setup_aware), for the benchmarks

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ncc-dispatch-io")
        self.pool.add_event_listener(self._on_event)
        self.pool.start()
        self._thread = threading.Thread(target=self._loop, name="ncc-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, *, cancel: bool = True) -> None:
        """Stop the loop. ``cancel``: our unfinished batches are cancelled first (their queued
        prompts deleted, running ones interrupted), waiting up to ``timeout`` for the servers;
        otherwise they are detached (left rendering, to be resumed later). Either way every
        ``wait()`` returns and no thread is left."""
        if not self._running:
            return
        # batches whose last job just ended: let the loop finish them (lock, staging, ledger) first
        flushed = threading.Event()
        self._call(lambda: (self._flush(force=True), flushed.set()))
        flushed.wait(min(timeout, 2.0))
        unfinished = [b for b in self._batches if not b.finished]
        if cancel and unfinished:
            for batch in unfinished:
                self.cancel(batch)
            deadline = time.monotonic() + timeout
            for batch in unfinished:
                batch.wait(max(0.0, deadline - time.monotonic()))
        self._running = False
        self.pool.remove_event_listener(self._on_event)
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._workers is not None:
            self._workers.shutdown(wait=False)
            self._workers = None
        for batch in list(self._batches):
            if not batch.finished:
                if batch.ledger_writer is not None:
                    self._record(batch)
                    batch.ledger_writer.close()  # unfinished in the ledger: resumable
                    batch.ledger_writer = None
                self._release(batch)
                batch.detach(
                    "Detached: the prompts already on servers keep rendering; "
                    f"resume with: python -m nuke_comfy_cluster resume {batch.id}"
                    if not cancel
                    else "Stopped before the servers confirmed the cancel; clean up with: "
                    "python -m nuke_comfy_cluster cleanup"
                )
        self._batches = []

    # -- public API (any thread) -------------------------------------------------------
    def submit_batch(self, batch: Batch) -> Batch:
        """Queue a batch; it starts on the next loop turn. Returns it for chaining."""
        if batch.pinned:
            self.pool.choose_server(batch.pinned)  # raises NoServerAvailable with the reason
        self._call(lambda: self._add_batch(batch))
        for callback in list(self._batch_listeners):
            try:
                callback(batch)
            except Exception:  # noqa: BLE001 - an observer must not stop a submission
                log.exception("batch listener failed")
        return batch

    def add_batch_listener(self, callback: Callable[[Batch], None]) -> None:
        """Called with every batch submitted from now on, on the submitting thread: only enqueue."""
        self._batch_listeners.append(callback)

    def remove_batch_listener(self, callback: Callable[[Batch], None]) -> None:
        if callback in self._batch_listeners:
            self._batch_listeners.remove(callback)

    def cancel(self, batch: Batch) -> None:
        self._call(lambda: self._cancel_batch(batch))

    def retry_failed(self, batch: Batch) -> None:
        self._call(lambda: self._retry_failed(batch))

    @property
    def batches(self) -> List[Batch]:
        return list(self._batches)

    # -- loop -------------------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        self._inbox.put(fn)

    def _io(self, fn: Callable[[], None]) -> None:
        workers = self._workers
        if workers is None:
            return
        try:
            workers.submit(self._guarded, fn)
        except RuntimeError:  # shut down
            pass

    @staticmethod
    def _guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a bug in a worker must be loud, not fatal
            log.exception("dispatcher worker failed")

    def _loop(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=self._wait_time())
            except queue.Empty:
                item = None
                if not self._running:
                    return
            else:
                if item is None:
                    return
            handled = 0
            while item is not None:
                try:
                    item()
                except Exception:  # noqa: BLE001
                    log.exception("dispatcher step failed")
                handled += 1
                if handled >= 500:
                    break  # plan and flush now and then under a flood; the rest stays in the inbox
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            if item is None and not self._running:
                return
            try:
                now = time.monotonic()
                if now - self._last_check >= 0.5:
                    self._last_check = now
                    self._check_health()
                self._plan_all()
                self._flush()
            except Exception:  # noqa: BLE001
                log.exception("dispatcher planning failed")

    def _touch(self, batch: Batch) -> None:
        self._dirty.add(batch.id)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        # a snapshot costs O(frames): big batches tell their observers a little less often
        interval = 0.1 if sum(len(b.jobs) for b in self._batches) < 5000 else 0.5
        if not self._dirty or (not force and now - self._last_flush < interval):
            return
        self._last_flush = now
        dirty, self._dirty = self._dirty, set()
        for batch in list(self._batches):
            if batch.id in dirty:
                self._record(batch)
                if all(j.state.finished for j in batch.jobs):
                    self._release(batch)  # before anyone waiting on the batch is woken
                    self._keep_costs(batch)
                    batch.message = self._final_message(batch)
                    if batch.ledger_writer is not None:
                        batch.ledger_writer.mark_finished(batch.snapshot().state, batch.message)
                        batch.ledger_writer = None
                batch.changed()
                if batch.finished:
                    self._forget(batch)

    @staticmethod
    def _final_message(batch: Batch) -> str:
        """What the batch ended as, now (earlier server errors stay in each job's history)."""
        counts: Dict[JobState, int] = {}
        for job in batch.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        parts = [
            f"{counts[state]} {state.value}"
            for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
            if counts.get(state)
        ]
        text = ", ".join(parts) or "nothing to do"
        if batch.local_error:
            text += f"; could not write the result: {batch.local_error}"
        elif counts.get(JobState.FAILED):
            first = next(j.error for j in batch.jobs if j.state is JobState.FAILED and j.error is not None)
            text += f"; {first.message}"
        if batch.left_out:
            text += "; left out: " + "; ".join(_named(n, r) for n, r in sorted(batch.left_out.items()))
        return text[0].upper() + text[1:]

    def _release(self, batch: Batch) -> None:
        """A finished batch leaves nothing behind: its lock and staging folders go."""
        if batch.lock_file is not None:
            batch.lock_file.release()
            batch.lock_file = None
        remove_staging(self._output_dir(batch), batch.id)

    def _forget(self, batch: Batch) -> None:
        self._release(batch)
        self._batches = [b for b in self._batches if b is not batch]
        self._schedulers.pop(batch.id, None)
        self._waiting_since.pop(batch.id, None)
        self._cursor.pop(batch.id, None)
        self._requeued.pop(batch.id, None)
        self._setup_items.pop(batch.id, None)
        forget_withdrawals(self._withdrawing, batch.id)

    # -- batches ----------------------------------------------------------------------
    def _wait_time(self) -> float:
        """Until the next top-up a scheduler expects without an event, at most one tick."""
        now = time.monotonic()
        wakeups = [s.next_wakeup for s in self._schedulers.values() if s.next_wakeup is not None]
        if not wakeups:
            return self.tick
        return max(0.005, min(self.tick, min(wakeups) - now))

    def _why(self, batch: Batch, job: Job, name: str) -> str:
        """The scheduler's reason for a choice, for ``-v`` logs."""
        if batch.pinned:
            return "pinned"
        if self.pool.strategy != balancing.LEAST_LOADED:
            return self.pool.strategy
        sched = self._schedulers.get(batch.id)
        ft = sched.frame_time(name) if sched is not None else None
        parts = ["earliest estimated finish"]
        parts.append(f"{ft:.2f} s/frame there" if ft is not None else "probe: no frame time yet")
        if job.failed_servers:
            parts.append("failed before on " + ", ".join(job.failed_servers))
        return "; ".join(parts)

    def _output_dir(self, batch: Batch) -> str:
        """Where the batch's sequences go: its output folder, else a per-batch temp folder."""
        return batch.output_dir or os.path.join(self.download_dir, batch.id)

    def _add_batch(self, batch: Batch) -> None:
        if batch.max_attempts <= 0:
            batch.max_attempts = self.max_attempts
        if not batch.labels:
            workflow = batch.workflow if batch.workflow is not None else (batch.jobs[0].prompt if batch.jobs else {})
            batch.labels = sequence_labels(workflow)
            # two frames' prompts tell the nodes that are the same in every frame (the setup)
            batch.static_nodes = static_nodes(j.prompt for j in batch.jobs[:2])
        # what a server must have loaded for this workflow (see setup_aware)
        self._setup_items[batch.id] = loader_items(batch.jobs[0].prompt) if batch.jobs else frozenset()
        self._keep_in_ledger(batch)
        self._check_compatibility(batch)
        for job in batch.jobs:  # a resumed batch: follow the prompts it left on servers
            if job.state in (JobState.SUBMITTED, JobState.RUNNING) and job.prompt_id and job.server:
                token = job.attempt_token or uuid.uuid4().hex
                job.attempt_token = token
                self._by_prompt[job.prompt_id] = (batch, job)
                self._by_token[token] = (batch, job)
        self._batches.append(batch)
        scheduler = self._scheduler_factory()
        # the same workflow again: start from the speeds the last batch learned (no new probes)
        previous = self._learned.get(_fingerprint(batch))
        if previous is not None:
            scheduler.learn_from(previous)
        elif self.cost_store is not None:
            # the same workflow in an earlier session: start warm, with no probe frames
            scheduler.seed(self.cost_store.load(_fingerprint(batch), self._identities()))
        self._schedulers[batch.id] = scheduler
        self._learned[_fingerprint(batch)] = scheduler
        if len(self._learned) > 32:
            self._learned.pop(next(iter(self._learned)))
        self._touch(batch)

    def _retry_failed(self, batch: Batch) -> None:
        with batch.lock:
            for job in batch.jobs:
                if job.state is JobState.FAILED:
                    job.state = JobState.PENDING
                    self._cursor[batch.id] = 0
                    job.error = None
                    job.failed_servers = []
                    job.attempts = 0
                    job.server = None
                    job.prompt_id = None
            batch.finished_at = None
            batch.message = ""
            batch._done.clear()  # noqa: SLF001 - the dispatcher owns batch state
        if batch not in self._batches:
            self._add_batch(batch)
        self._touch(batch)

    def _finish(self, batch: Batch, job: Job, state: JobState, error: Optional[JobError] = None) -> None:
        with batch.lock:
            job.state = state
            job.error = error
            job.finished_at = time.time()
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        if job.attempt_token:
            self._by_token.pop(job.attempt_token, None)
        self._touch(batch)

    def _requeue(self, batch: Batch, job: Job, server: str, reason: str) -> None:
        """An infrastructure failure: the job goes back to pending, elsewhere if possible."""
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        if job.attempt_token:
            self._by_token.pop(job.attempt_token, None)
        sched = self._schedulers.get(batch.id)
        if sched is not None:
            sched.job_failed(server)
        with batch.lock:
            job.history = list(job.history) + [reason]
            if server not in job.failed_servers:
                job.failed_servers = list(job.failed_servers) + [server]
            if job.attempts >= batch.max_attempts:
                job.state = JobState.FAILED
                job.error = JobError(
                    "infrastructure",
                    "{} failed on {} after {} attempts; last: {}".format(
                        job.label, ", ".join(job.failed_servers), job.attempts, reason
                    ),
                    server,
                )
                job.finished_at = time.time()
            else:
                job.wait_again()
                self._put_back(batch, job)
            batch.message = reason
        self._touch(batch)

    def _cancel_batch(self, batch: Batch) -> None:
        batch.cancel_requested = True
        per_server: Dict[str, List[Job]] = {}
        with batch.lock:
            for job in batch.jobs:
                if job.state.finished:
                    continue
                job.cancel_requested = True
                if job.state is JobState.PENDING and job.id not in self._submitting:
                    job.state = JobState.CANCELLED
                    job.error = JobError("cancelled", "cancelled by the user")
                    job.finished_at = time.time()
                elif job.server and job.prompt_id:
                    per_server.setdefault(job.server, []).append(job)
        for name, jobs in per_server.items():
            server = self.pool.get_server_by_name(name)
            if server is None:
                continue
            self._io(lambda s=server, js=list(jobs): self._cancel_on_server(batch, s, js))
        self._touch(batch)

    def _cancel_on_server(self, batch: Batch, server: ComfyUIServer, jobs: List[Job]) -> None:
        """Delete our queued prompts; interrupt only when the running prompt is ours."""
        ids = {j.prompt_id for j in jobs if j.prompt_id}
        try:
            running, pending = server.update_queue_detail()
            pending_ids = [item[1] for item in pending if item[1] in ids]
            if pending_ids:
                server.connection.post_json("queue", {"delete": pending_ids})
            running_ours = [item[1] for item in running if item[1] in ids]
            for prompt_id in running_ours:
                server.connection.post_json("interrupt", {"prompt_id": prompt_id})
        except ClusterError as e:
            log.warning("cancel on %s: %s", server.name, user_message(e))

        def done() -> None:
            for job in jobs:
                if not job.state.finished:
                    self._finish(batch, job, JobState.CANCELLED, JobError("cancelled", "cancelled by the user"))

        self._call(done)

    # -- events -----------------------------------------------------------------------
    def _on_event(self, event: ServerEvent) -> None:
        # pool thread: only enqueue
        self._call(lambda: self._route(event))

    def _route(self, event: ServerEvent) -> None:
        if self._orphans and any(o.server == event.server for o in self._orphans):
            # a server we gave up on speaks again (SIGCONT, a network back): remove our
            # orphaned prompts now, before its queue runs them, not at the next status poll
            self._check_orphans(event.server)
        if event.prompt_id:
            target = self._by_prompt.get(event.prompt_id)
            if target is not None:
                self._handle_job_event(target[0], target[1], event)
                return
            if self._submitting and event.type is not EventType.STATUS:
                # may belong to a submit whose answer has not been processed yet
                self._early.setdefault(event.prompt_id, []).append(event)
                if len(self._early) > 256:
                    self._early.pop(next(iter(self._early)))
            elif event.is_final:
                self.ignored_late_results += 1
            return
        if event.type in (EventType.CONNECTED, EventType.DISCONNECTED):
            if event.type is EventType.DISCONNECTED or event.data.get("reconnect"):
                self._reconcile_server(event.server)

    def _handle_job_event(self, batch: Batch, job: Job, event: ServerEvent) -> None:
        if job.server != event.server:
            return
        job.last_news = time.monotonic()
        kind = event.type
        with batch.lock:
            if kind is EventType.EXECUTION_START:
                self._mark_running(batch, job)
            elif kind is EventType.EXECUTING:
                if job.state is JobState.SUBMITTED:
                    self._mark_running(batch, job)
                job.current_node = event.node
                if event.node is not None:
                    job.node_marks = list(job.node_marks) + [(event.node, event.at)]
                    self._note_node(batch, job, event)
            elif kind is EventType.EXECUTION_CACHED:
                if job.state is JobState.SUBMITTED:
                    self._mark_running(batch, job)
                nodes = event.data.get("nodes")
                job.cached_nodes = tuple(str(n) for n in nodes) if isinstance(nodes, list) else ()
                self._note_cached(batch, job)
            elif kind is EventType.PROGRESS:
                if job.state is JobState.SUBMITTED:
                    self._mark_running(batch, job)
                value, maximum = event.data.get("value"), event.data.get("max")
                if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 0:
                    job.progress_value, job.progress_max = float(value), float(maximum)
            elif kind is EventType.EXECUTED:
                node = event.data.get("node")
                job.outputs = list(job.outputs) + outputs_from_node_output(str(node), event.data.get("output"))
        if kind is EventType.EXECUTION_SUCCESS:
            job.ended_at = event.at
            self._succeeded(batch, job)
        elif kind is EventType.EXECUTION_ERROR:
            error = workflow_error_from_execution(event.data, event.server, job.id)
            self._workflow_failed(batch, job, event.server, error, EXECUTION)
        elif kind is EventType.EXECUTION_INTERRUPTED:
            if self._withdrawn(batch, job):
                pass
            elif job.cancel_requested:
                self._finish(batch, job, JobState.CANCELLED, JobError("cancelled", "cancelled by the user"))
            else:
                self._requeue(batch, job, event.server, f"{event.server}: the prompt was interrupted on the server")
        self._touch(batch)

    def _mark_running(self, batch: Batch, job: Job) -> None:
        if job.state is JobState.RUNNING:
            return
        job.state = JobState.RUNNING
        job.started_at = time.time()
        job.started_mono = time.monotonic()
        sched = self._schedulers.get(batch.id)
        if sched is not None and job.server:
            sched.job_started(job.server, job.started_mono)
