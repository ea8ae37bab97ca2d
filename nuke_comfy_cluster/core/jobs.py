"""Jobs (one prompt each) and batches (a frame range, N iterations) with observers.

A batch's jobs are mutated only by the dispatcher thread, under the batch lock;
everyone else reads :class:`JobSnapshot` / :class:`BatchSnapshot` copies.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ClusterError, WorkflowError
from .state import JobState

PromptPreparer = Callable[[Dict[str, Any], Any], Dict[str, Any]]


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a workflow error (node, message, traceback) or infrastructure."""

    kind: str  # "workflow" | "infrastructure" | "cancelled"
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


@dataclass(frozen=True)
class JobSnapshot:
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


class Job:
    """One prompt to render once. Mutated by the dispatcher only."""

    def __init__(
        self,
        prompt: Dict[str, Any],
        *,
        index: int = 0,
        label: str = "",
        frame: Optional[int] = None,
        iteration: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.index = index
        self.prompt = prompt
        self.label = label or (str(frame) if frame is not None else f"job {index}")
        self.frame = frame
        self.iteration = iteration
        self.seed = seed
        self.state = JobState.PENDING
        self.server: Optional[str] = None
        self.prompt_id: Optional[str] = None
        self.attempt_token: Optional[str] = None  # marks our prompt in /queue extra_data
        self.attempts = 0
        self.failed_servers: List[str] = []
        self.progress_value = 0.0
        self.progress_max = 0.0
        self.current_node: Optional[str] = None
        self.queued_at: Optional[float] = None
        self.started_at: Optional[float] = None
        self.started_mono: Optional[float] = None
        #: when the server reported success; results may still be on their way to us
        self.server_done_mono: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.outputs: List[OutputFile] = []
        self.error: Optional[JobError] = None
        self.last_news: float = time.monotonic()
        self.cancel_requested = False

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(
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
        )


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
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name or f"batch {self.id[:6]}"
        self.jobs = jobs
        self.pinned = pinned
        self.prepare = prepare
        self.output_dir = output_dir
        self.sequence_name = sequence_name
        self.max_attempts = max_attempts
        self.created_at = time.time()
        self.finished_at: Optional[float] = None
        self.message = ""
        self.lock = threading.RLock()
        self._done = threading.Event()
        self._listeners: List[BatchListener] = []
        self.cancel_requested = False

    def add_listener(self, callback: BatchListener) -> None:
        """Called with a BatchSnapshot after every change, from the dispatcher thread: only enqueue."""
        with self.lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: BatchListener) -> None:
        with self.lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def snapshot(self) -> BatchSnapshot:
        with self.lock:
            jobs = tuple(j.snapshot() for j in self.jobs)
            if self.finished_at is None and all(j.state.finished for j in jobs):
                self.finished_at = max((j.finished_at or 0.0 for j in jobs), default=0.0) or time.time()
            seen = {}
            for j in jobs:
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
