"""Jobs (one prompt each) and batches (a frame range, N iterations) with observers.

A batch's jobs are mutated only by the dispatcher thread, under the batch lock;
everyone else reads :class:`JobSnapshot` / :class:`BatchSnapshot` copies.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Set, Tuple

from .errors import ClusterError, WorkflowError
from .state import JobState
from .triage import BatchEvidence

PromptPreparer = Callable[[Dict[str, Any], Any], Dict[str, Any]]
#: makes a job's prompt when it is sent (frames stay small until then)
PromptFactory = Callable[["Job"], Dict[str, Any]]


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a workflow error (node, message, traceback) or infrastructure."""

    kind: str  # "workflow" | "infrastructure" | "local" (this machine) | "cancelled"
    message: str
    server: Optional[str] = None
    node_id: Optional[str] = None
    node_type: Optional[str] = None
    traceback: Optional[str] = None

    @classmethod
    def from_exception(cls, exc: BaseException, server: Optional[str] = None) -> JobError:
        if isinstance(exc, WorkflowError):
            return cls(
                "workflow",
                exc.message,
                server or exc.server,
                exc.node_id,
                exc.node_type,
                exc.traceback,
            )
        if isinstance(exc, ClusterError):
            return cls("infrastructure", exc.message, server or exc.server)
        return cls("infrastructure", f"{type(exc).__name__}: {exc}", server)

    @property
    def key(self) -> Tuple[str, Optional[str], str]:
        """Jobs failing for the same reason share a key: a batch reports each key once."""
        return (self.kind, self.node_id, self.message)


@dataclass(frozen=True)
class OutputFile:
    """One file a job produced, as the server named it, and where we have it locally."""

    node: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    local_path: Optional[str] = None
    #: the delivered sequence this file belongs to (path with ``####``), its label ("" = main)
    pattern: Optional[str] = None
    label: str = ""


@dataclass(frozen=True)
class SequenceInfo:
    """One delivered image sequence of a batch (one per saving node and image index)."""

    pattern: str  # absolute path with ####
    label: str  # "" for the main sequence, else e.g. "matte"
    frames: Tuple[int, ...]  # frames delivered so far, sorted
    existed: Tuple[int, ...] = ()  # frames that were there before the batch (overwritten)

    @property
    def first(self) -> int:
        return self.frames[0] if self.frames else 0

    @property
    def last(self) -> int:
        return self.frames[-1] if self.frames else 0


class JobSnapshot(NamedTuple):
    """One job at one instant, for readers on other threads (a NamedTuple: a 100,000-frame
    batch makes 100,000 of these, and a tuple is ten times cheaper to make than a dataclass)."""

    id: str
    index: int
    label: str
    frame: Optional[int]
    iteration: Optional[int]
    seed: Optional[int]
    state: JobState
    server: Optional[str]
    prompt_id: Optional[str]
    attempts: int
    failed_servers: Tuple[str, ...]
    progress_value: float
    progress_max: float
    current_node: Optional[str]
    queued_at: Optional[float]
    started_at: Optional[float]
    finished_at: Optional[float]
    outputs: Tuple[OutputFile, ...]
    error: Optional[JobError]
    history: Tuple[str, ...] = ()  # why earlier attempts did not deliver, oldest first

    @property
    def fraction(self) -> float:
        if self.state is JobState.DONE:
            return 1.0
        if self.progress_max > 0:
            return max(0.0, min(1.0, self.progress_value / self.progress_max))
        return 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {
            "frame": self.frame,
            "iteration": self.iteration,
            "seed": self.seed,
            "label": self.label,
            "state": self.state.value,
            "server": self.server,
            "prompt_id": self.prompt_id,
            "attempts": self.attempts,
            "failed_servers": list(self.failed_servers),
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outputs": [o.local_path or o.filename for o in self.outputs],
            "delivered": [o.local_path for o in self.outputs if o.pattern and o.local_path],
            "history": list(self.history),
            "error": None
            if self.error is None
            else {
                "kind": self.error.kind,
                "message": self.error.message,
                "server": self.error.server,
                "node_id": self.error.node_id,
                "node_type": self.error.node_type,
            },
        }


_UNTRACKED = frozenset({"_snap", "ledger_dirty", "_watch"})
#: the empty list every new job shares (lists on a job are replaced, never changed in place,
#: so that a change always passes through __setattr__; 100,000 jobs need no 400,000 lists)
_NONE: Tuple[Any, ...] = ()
#: changes too frequent or too transient for the batch ledger (it keeps states, not progress)
_NOT_LEDGERED = frozenset(
    {"node_marks", "cached_nodes", "ended_at", "last_news", "current_node", "progress_value", "progress_max"}
)


#: Job attributes that start as None
_EMPTY_AT_START = (
    "server",
    "prompt_id",
    "attempt_token",
    "sent_digest",
    "current_node",
    "queued_at",
    "started_at",
    "started_mono",
    "server_done_mono",
    "finished_at",
    "error",
    "ended_at",
)


class Job:
    """One prompt to render once. Mutated by the dispatcher only.

    The prompt is either given or made by ``factory(job)`` each time it is needed, so
    a 100,000-frame batch holds frame numbers, not 100,000 prompts.
    """

    __slots__ = (
        "_snap",
        "_watch",
        "ledger_dirty",
        "id",
        "index",
        "_prompt",
        "_factory",
        "label",
        "frame",
        "iteration",
        "seed",
        "state",
        "server",
        "prompt_id",
        "attempt_token",
        "sent_digest",
        "attempts",
        "collisions",
        "failed_servers",
        "progress_value",
        "progress_max",
        "current_node",
        "queued_at",
        "started_at",
        "started_mono",
        "server_done_mono",
        "finished_at",
        "outputs",
        "error",
        "history",
        "node_marks",
        "cached_nodes",
        "ended_at",
        "last_news",
        "cancel_requested",
    )

    def __init__(
        self,
        prompt: Optional[Dict[str, Any]] = None,
        *,
        index: int = 0,
        label: str = "",
        frame: Optional[int] = None,
        iteration: Optional[int] = None,
        seed: Optional[int] = None,
        factory: Optional[PromptFactory] = None,
    ) -> None:
        if prompt is None and factory is None:
            raise ValueError("a job needs a prompt or a prompt factory")
        # Set through object.__setattr__: a new job has nothing to track yet, and a
        # 100,000-frame batch makes 100,000 of these (the tracking costs 5x the job).
        put = object.__setattr__
        put(self, "_snap", None)
        put(self, "_watch", None)  # (its batch's set of changed positions, its position there)
        put(self, "ledger_dirty", True)
        put(self, "id", uuid.uuid4().hex)
        put(self, "index", index)
        put(self, "_prompt", prompt)
        put(self, "_factory", factory)
        put(self, "label", label or (str(frame) if frame is not None else f"job {index}"))
        put(self, "frame", frame)
        put(self, "iteration", iteration)
        put(self, "seed", seed)
        put(self, "state", JobState.PENDING)
        for name in _EMPTY_AT_START:
            put(self, name, None)
        put(self, "attempts", 0)
        put(self, "collisions", 0)  # renders lost to another prompt writing the same file name
        # lists are replaced, never mutated: one shared empty tuple until the first change
        for name in ("failed_servers", "outputs", "history", "node_marks"):
            put(self, name, _NONE)
        put(self, "progress_value", 0.0)
        put(self, "progress_max", 0.0)
        put(self, "cached_nodes", ())
        put(self, "last_news", time.monotonic())
        put(self, "cancel_requested", False)

    # Attribute notes (what the slots hold): attempt_token marks our prompt in /queue
    # extra_data; sent_digest is what this attempt's render must carry; server_done_mono
    # is when the server reported success (results may still be on their way); history
    # holds earlier attempts' failures, oldest first; node_marks / cached_nodes / ended_at
    # are this attempt's ``executing`` marks (node, wall time), cached nodes and end.

    def __setattr__(self, name: str, value: Any) -> None:
        # any change makes the cached snapshot stale (snapshots of 100,000 jobs stay cheap);
        # a change the ledger keeps marks the job for the next ledger write
        object.__setattr__(self, name, value)
        if name not in _UNTRACKED:
            object.__setattr__(self, "_snap", None)
            watch = self._watch
            if watch is not None:
                watch[0].add(watch[1])
            if name not in _NOT_LEDGERED:
                object.__setattr__(self, "ledger_dirty", True)

    def wait_again(self) -> None:
        """Back to PENDING with nothing of the attempt that ended kept (caller holds the batch lock)."""
        self.state = JobState.PENDING
        self.server = None
        self.prompt_id = None
        self.started_at = self.started_mono = self.server_done_mono = None
        self.progress_value = self.progress_max = 0.0
        self.outputs = []
        self.node_marks, self.cached_nodes, self.ended_at = [], (), None

    @property
    def prompt(self) -> Dict[str, Any]:
        if self._prompt is not None:
            return self._prompt
        assert self._factory is not None
        return self._factory(self)

    def snapshot(self) -> JobSnapshot:
        snap = self._snap
        if snap is not None:
            return snap
        snap = JobSnapshot(
            id=self.id,
            index=self.index,
            label=self.label,
            frame=self.frame,
            iteration=self.iteration,
            seed=self.seed,
            state=self.state,
            server=self.server,
            prompt_id=self.prompt_id,
            attempts=self.attempts,
            failed_servers=tuple(self.failed_servers),
            progress_value=self.progress_value,
            progress_max=self.progress_max,
            current_node=self.current_node,
            queued_at=self.queued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            outputs=tuple(self.outputs),
            error=self.error,
            history=tuple(self.history),
        )
        self._snap = snap
        return snap


@dataclass(frozen=True)
class BatchSnapshot:
    id: str
    name: str
    jobs: Tuple[JobSnapshot, ...]
    pinned: Optional[str]
    created_at: float
    finished_at: Optional[float]
    message: str = ""  # the latest thing the user should know (waiting for servers, ...)
    errors: Tuple[JobError, ...] = field(default_factory=tuple)  # one per distinct failure
    #: servers left out of this batch and why ("no node ControlNetApplyAdvanced")
    left_out: Tuple[Tuple[str, str], ...] = ()
    output_dir: Optional[str] = None
    sequence_name: Optional[str] = None
    existed: Tuple[int, ...] = ()  # frames of the sequence that were there before (overwritten)
    detached: bool = False  # the client let go before the end: resume it to finish
    #: (server, model loads, seconds they took) for the servers where frames of this batch
    #: loaded the workflow's models (cold starts); the seconds are 0 when not timed
    loads: Tuple[Tuple[str, int, float], ...] = ()

    @property
    def sequences(self) -> Tuple[SequenceInfo, ...]:
        """The delivered sequences, the main one first (each saving node, each image index)."""
        frames: Dict[Tuple[str, str], List[int]] = {}
        for j in self.jobs:
            for o in j.outputs:
                if o.pattern and j.frame is not None:
                    frames.setdefault((o.pattern, o.label), []).append(j.frame)
                elif o.pattern:
                    frames.setdefault((o.pattern, o.label), []).append(1)
        out = [
            SequenceInfo(pattern, label, tuple(sorted(set(fs))), tuple(f for f in self.existed if f in set(fs)))
            for (pattern, label), fs in frames.items()
        ]
        out.sort(key=lambda s: (s.label != "", s.label, s.pattern))
        return tuple(out)

    def count(self, state: JobState) -> int:
        return sum(1 for j in self.jobs if j.state is state)

    @property
    def done(self) -> int:
        return self.count(JobState.DONE)

    @property
    def failed(self) -> int:
        return self.count(JobState.FAILED)

    @property
    def running(self) -> int:
        return self.count(JobState.RUNNING)

    @property
    def finished(self) -> bool:
        return all(j.state.finished for j in self.jobs)

    @property
    def ok(self) -> bool:
        return all(j.state is JobState.DONE for j in self.jobs)

    @property
    def progress(self) -> float:
        if not self.jobs:
            return 1.0
        return sum(j.fraction for j in self.jobs) / len(self.jobs)

    @property
    def servers(self) -> Dict[str, int]:
        """Frames done per server."""
        out: Dict[str, int] = {}
        for j in self.jobs:
            if j.state is JobState.DONE and j.server:
                out[j.server] = out.get(j.server, 0) + 1
        return out

    @property
    def state(self) -> str:
        if not self.finished:
            if self.detached:
                return "detached"
            return "running" if any(j.state is not JobState.PENDING for j in self.jobs) else "pending"
        if self.ok:
            return "done"
        if all(j.state is JobState.CANCELLED for j in self.jobs if j.state is not JobState.DONE):
            return "cancelled"
        return "failed"

    @property
    def makespan(self) -> Optional[float]:
        if self.finished_at is None:
            return None
        return self.finished_at - self.created_at


BatchListener = Callable[[BatchSnapshot], None]


class Batch:
    """A group of jobs submitted together; observe it or wait for it."""

    def __init__(
        self,
        jobs: List[Job],
        *,
        name: str = "",
        pinned: Optional[str] = None,
        prepare: Optional[PromptPreparer] = None,
        output_dir: Optional[str] = None,
        sequence_name: Optional[str] = None,
        max_attempts: int = 3,
        workflow: Optional[Dict[str, Any]] = None,
        batch_id: Optional[str] = None,
    ) -> None:
        self.id = batch_id or uuid.uuid4().hex
        self.name = name or f"batch {self.id[:6]}"
        self.jobs = jobs
        self.pinned = pinned
        self.prepare = prepare
        self.output_dir = output_dir
        self.sequence_name = sequence_name
        self.max_attempts = max_attempts
        #: the workflow the jobs come from (saving nodes name the sequences); None = the first job's prompt
        self.workflow = workflow
        #: saving node id -> sequence label ("" = the main sequence); set by the dispatcher
        self.labels: Dict[str, str] = {}
        #: what each server did with this batch and which are left out of it, and why
        self.evidence = BatchEvidence()
        self.left_out: Dict[str, str] = self.evidence.left_out
        self.checking = False  # the servers' compatibility is being checked: nothing is sent yet
        #: nodes the same in every frame (loaders, encoders): their time is setup, not per frame
        self.static_nodes: FrozenSet[str] = frozenset()
        #: per server: seconds spent loading models for this batch (setup of cold starts)
        self.loads: Dict[str, float] = {}
        self.load_counts: Dict[str, int] = {}  # per server: how many of its frames loaded them
        self.existed: Tuple[int, ...] = ()
        self.lock_file: Any = None  # the SequenceLock held while the batch writes its sequence
        self.ledger_writer: Any = None  # the batch's BatchWriter in the ledger, when kept there
        self.ledger_options: Any = None  # what the ledger keeps to resume it (ledger SubmitOptions)
        self.local_error: Optional[str] = None
        self.created_at = time.time()
        self.finished_at: Optional[float] = None
        self.message = ""
        self.lock = threading.RLock()
        self._done = threading.Event()
        self._listeners: List[BatchListener] = []
        self.cancel_requested = False
        self.detached = False
        # Snapshots are made often (every change observers see) and a batch may hold
        # 100,000 jobs: each job marks its position here when it changes, and a snapshot
        # takes only those again (see snapshot()).
        self._changed: Set[int] = set()
        self._snaps: Optional[List[JobSnapshot]] = None
        self._first_open = 0  # no job before this position is unfinished (as of the last snapshot)
        self._with_error: Set[int] = set()  # positions of jobs that carry an error
        for i, job in enumerate(jobs):
            object.__setattr__(job, "_watch", (self._changed, i))

    def detach(self, message: str) -> None:
        """The client lets go of an unfinished batch (its prompts may still render): wake waiters."""
        with self.lock:
            self.detached = True
            self.message = message
        self.changed()
        self._done.set()

    def add_listener(self, callback: BatchListener) -> None:
        """Called with a BatchSnapshot after every change, from the dispatcher thread: only enqueue."""
        with self.lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: BatchListener) -> None:
        with self.lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _refresh(self) -> List[JobSnapshot]:
        """The jobs' snapshots, taking again only those changed since the last call."""
        snaps = self._snaps
        if snaps is None:
            self._changed.clear()
            snaps = self._snaps = [j.snapshot() for j in self.jobs]
            self._with_error = {i for i, j in enumerate(snaps) if j.error is not None}
            return snaps
        changed = self._changed
        first_open = self._first_open
        while changed:
            try:
                i = changed.pop()  # atomic: the dispatcher may add while we take
            except KeyError:
                break
            snap = snaps[i] = self.jobs[i].snapshot()
            if snap.error is not None:
                self._with_error.add(i)
            else:
                self._with_error.discard(i)
            if i < first_open and not snap.state.finished:
                first_open = i  # back to waiting (Retry failed, a resume)
        self._first_open = first_open
        return snaps

    def snapshot(self) -> BatchSnapshot:
        with self.lock:
            snaps = self._refresh()
            n = len(snaps)
            k = self._first_open
            while k < n and snaps[k].state.finished:
                k += 1
            self._first_open = k
            jobs = tuple(snaps)
            if self.finished_at is None and k >= n:
                self.finished_at = max((j.finished_at or 0.0 for j in jobs), default=0.0) or time.time()
            seen = {}
            for i in sorted(self._with_error):
                j = snaps[i]
                if j.error is not None and j.error.kind != "cancelled" and j.error.key not in seen:
                    seen[j.error.key] = j.error
            return BatchSnapshot(
                id=self.id,
                name=self.name,
                jobs=jobs,
                pinned=self.pinned,
                created_at=self.created_at,
                finished_at=self.finished_at,
                message=self.message,
                errors=tuple(seen.values()),
                left_out=tuple(sorted(self.left_out.items())),
                output_dir=self.output_dir,
                sequence_name=self.sequence_name,
                existed=self.existed,
                detached=self.detached,
                loads=tuple((s, n, round(self.loads.get(s, 0.0), 3)) for s, n in sorted(self.load_counts.items())),
            )

    def changed(self) -> None:
        snap = self.snapshot()
        with self.lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(snap)
            except Exception:  # noqa: BLE001 - an observer must not stop dispatch
                import logging

                logging.getLogger(__name__).exception("batch listener failed")
        if snap.finished:
            self._done.set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> BatchSnapshot:
        """Block until every job is finished (or the timeout passes); returns the snapshot."""
        self._done.wait(timeout)
        return self.snapshot()
