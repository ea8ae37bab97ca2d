"""The batch ledger's record types (see :mod:`.ledger` for the files they live in).

All are small frozen dataclasses; ``to_json`` / ``from_json`` use short keys because
a 100,000-frame batch writes several lines per frame.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .errors import ClusterError

FORMAT_VERSION = 1
FINISHED_STATES = ("done", "failed", "cancelled")
JOB_STATES = ("pending", "submitted", "running", "done", "failed", "cancelled")


class LedgerError(ClusterError):
    """The ledger cannot be read or written (names the file and the cause)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SubmitOptions:
    """What a resume needs to submit the batch again as it was."""

    frames: Optional[str] = None  # frame list as text ("1001-1100"), None for iterations / one prompt
    iterations: Optional[int] = None
    seed: Optional[int] = None
    frame: Optional[int] = None  # the frame of an iterations batch, if any
    output_dir: Optional[str] = None
    sequence_name: Optional[str] = None
    server: Optional[str] = None  # pinned server
    extra: Mapping[str, Any] = field(default_factory=dict)  # JSON-able, for options added later

    def as_dict(self) -> Dict[str, Any]:
        out = {
            k: getattr(self, k)
            for k in ("frames", "iterations", "seed", "frame", "output_dir", "sequence_name", "server")
        }
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmitOptions:
        extra = data.get("extra")
        return cls(
            frames=opt(data.get("frames"), str),
            iterations=opt(data.get("iterations"), int),
            seed=opt(data.get("seed"), int),
            frame=opt(data.get("frame"), int),
            output_dir=opt(data.get("output_dir"), str),
            sequence_name=opt(data.get("sequence_name"), str),
            server=opt(data.get("server"), str),
            extra=dict(extra) if isinstance(extra, dict) else {},
        )


@dataclass(frozen=True)
class JobSpec:
    """One job of a batch as it was created; ``index`` is its position in the batch."""

    index: int
    job_id: str
    frame: Optional[int] = None
    iteration: Optional[int] = None
    seed: Optional[int] = None
    label: str = ""


@dataclass(frozen=True)
class BatchRecord:
    """A batch as submitted. ``workflow`` (the template, before frame substitution) or ``workflow_path``."""

    batch_id: str
    name: str
    created: float
    workflow_hash: str
    options: SubmitOptions
    jobs: Tuple[JobSpec, ...]
    workflow: Optional[Dict[str, Any]] = None
    workflow_path: Optional[str] = None
    client_id: Optional[str] = None
    host: str = ""

    def header(self) -> Dict[str, Any]:
        return {
            "format": "ncc-batch",
            "version": FORMAT_VERSION,
            "batch_id": self.batch_id,
            "name": self.name,
            "created": self.created,
            "workflow_hash": self.workflow_hash,
            "workflow_path": self.workflow_path,
            "client_id": self.client_id,
            "host": self.host,
            "options": self.options.as_dict(),
            "jobs": len(self.jobs),
            "workflow": self.workflow,
        }


@dataclass(frozen=True)
class JobUpdate:
    """A job's whole state at one moment; ``index`` is its position in :attr:`BatchRecord.jobs`."""

    index: int
    state: str  # a JobState value: pending, submitted, running, done, failed, cancelled
    server: Optional[str] = None
    prompt_id: Optional[str] = None
    attempt: Optional[str] = None  # the attempt token (``extra_data.ncc_attempt``)
    attempts: int = 0
    failed_servers: Tuple[str, ...] = ()
    files: Tuple[str, ...] = ()  # delivered files (absolute paths)
    error: Optional[str] = None
    at: float = 0.0  # time.time() of the change

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"i": self.index, "s": self.state}
        for key, value in (
            ("v", self.server),
            ("p", self.prompt_id),
            ("a", self.attempt),
            ("n", self.attempts or None),
            ("x", list(self.failed_servers) or None),
            ("f", list(self.files) or None),
            ("e", self.error),
            ("t", self.at or None),
        ):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobUpdate:
        # written for speed: a 100,000-frame resume reads this 100,000 times
        get = data.get
        index, state, attempts, at = get("i"), get("s"), get("n"), get("t")
        if type(index) is not int or index < 0 or state not in _STATE_SET:
            raise ValueError("not a job update")
        return cls(
            index,
            state,
            _str(get("v")),
            _str(get("p")),
            _str(get("a")),
            attempts if type(attempts) is int else 0,
            strings(get("x")) if "x" in data else (),
            strings(get("f")) if "f" in data else (),
            _str(get("e")),
            float(at) if type(at) in (int, float) else 0.0,
        )


def _str(value: Any) -> Optional[str]:
    return value if type(value) is str else None


_STATE_SET = frozenset(JOB_STATES)


@dataclass(frozen=True)
class LedgerBatch:
    """A batch as the ledger knows it: the record, the latest update of each job, how it ended."""

    record: BatchRecord
    jobs: Mapping[int, JobUpdate]  # index -> latest update (jobs never updated are pending)
    finished: Optional[str] = None  # done / failed / cancelled, None while unfinished
    finished_at: Optional[float] = None
    message: str = ""
    updated: float = 0.0
    live: bool = False  # a process holds the batch's lock (it is being rendered now)
    damaged_lines: int = 0  # unreadable journal lines skipped (a crash mid-write leaves at most one)

    @property
    def batch_id(self) -> str:
        return self.record.batch_id

    @property
    def total(self) -> int:
        return len(self.record.jobs)

    def job_state(self, index: int) -> str:
        update = self.jobs.get(index)
        return update.state if update is not None else "pending"

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in JOB_STATES}
        for update in self.jobs.values():
            out[update.state] += 1
        out["pending"] += self.total - len(self.jobs)
        return out

    @property
    def state(self) -> str:
        """done / failed / cancelled when finished, else running (live) or unfinished."""
        if self.finished:
            return self.finished
        return "running" if self.live else "unfinished"

    def summary(self) -> BatchSummary:
        return BatchSummary.of(self.record, self.counts(), self.finished, self.finished_at, self.updated, self.live)


@dataclass(frozen=True)
class BatchSummary:
    """One batch in :meth:`Ledger.list`: enough for a table, without the jobs."""

    batch_id: str
    name: str
    created: float
    state: str  # done / failed / cancelled / running / unfinished / damaged
    done: int
    failed: int
    cancelled: int
    total: int
    output_dir: Optional[str]
    sequence_name: Optional[str]
    finished_at: Optional[float]
    updated: float
    live: bool
    workflow_hash: str = ""
    problem: str = ""  # why a damaged batch cannot be read

    @classmethod
    def of(
        cls,
        record: BatchRecord,
        counts: Mapping[str, int],
        finished: Optional[str],
        finished_at: Optional[float],
        updated: float,
        live: bool,
        total: Optional[int] = None,
    ) -> BatchSummary:
        return cls(
            batch_id=record.batch_id,
            name=record.name,
            created=record.created,
            state=finished or ("running" if live else "unfinished"),
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            total=len(record.jobs) if total is None else total,
            output_dir=record.options.output_dir,
            sequence_name=record.options.sequence_name,
            finished_at=finished_at,
            updated=updated,
            live=live,
            workflow_hash=record.workflow_hash,
        )

    def as_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --------------------------------------------------------------------------- helpers


def opt(value: Any, kind: type) -> Any:
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        return None
    return value


def strings(value: Any) -> Tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def workflow_hash(workflow: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of a workflow."""
    text = json.dumps(workflow, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def record_for(
    batch: Any,
    *,
    workflow: Optional[Dict[str, Any]] = None,
    workflow_path: Optional[str] = None,
    options: Optional[SubmitOptions] = None,
    client_id: Optional[str] = None,
) -> BatchRecord:
    """A BatchRecord for a :class:`~.jobs.Batch` (duck-typed: ``id``, ``name``, ``created_at``, ``jobs``).

    Defaults: the batch's ``workflow``, and options made of its output folder,
    sequence name and pinned server (pass ``options`` to add the frames text, seed...).
    """
    if workflow is None and workflow_path is None:
        workflow = getattr(batch, "workflow", None)
    if workflow is None and workflow_path is None:
        raise ValueError("a batch record needs the workflow or its path")
    if options is None:
        options = SubmitOptions(
            output_dir=getattr(batch, "output_dir", None),
            sequence_name=getattr(batch, "sequence_name", None),
            server=getattr(batch, "pinned", None),
        )
    jobs = tuple(
        JobSpec(
            i,
            j.id,
            getattr(j, "frame", None),
            getattr(j, "iteration", None),
            getattr(j, "seed", None),
            getattr(j, "label", ""),
        )
        for i, j in enumerate(batch.jobs)
    )
    digest = workflow_hash(workflow) if workflow is not None else _file_hash(workflow_path or "")
    return BatchRecord(
        batch_id=batch.id,
        name=batch.name,
        created=getattr(batch, "created_at", None) or time.time(),
        workflow_hash=digest,
        options=options,
        jobs=jobs,
        workflow=workflow,
        workflow_path=workflow_path,
        client_id=client_id,
        host=socket.gethostname(),
    )


def _file_hash(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return workflow_hash(json.load(f))
    except (OSError, ValueError) as e:
        raise LedgerError(f"Cannot read workflow {path}: {e}") from e


def update_for(job: Any, index: int, files: Sequence[str] = ()) -> JobUpdate:
    """A JobUpdate from a :class:`~.jobs.Job` (duck-typed); ``files`` = its delivered files.

    Without ``files``, the job's outputs that belong to a delivered sequence are used.
    """
    state = getattr(job.state, "value", job.state)
    if not files:
        files = [o.local_path for o in getattr(job, "outputs", ()) if getattr(o, "pattern", None) and o.local_path]
    error = getattr(job, "error", None)
    return JobUpdate(
        index=index,
        state=str(state),
        server=job.server,
        prompt_id=job.prompt_id,
        attempt=getattr(job, "attempt_token", None),
        attempts=int(getattr(job, "attempts", 0) or 0),
        failed_servers=tuple(getattr(job, "failed_servers", ()) or ()),
        files=tuple(files),
        error=getattr(error, "message", None) if error is not None else None,
        at=time.time(),
    )
