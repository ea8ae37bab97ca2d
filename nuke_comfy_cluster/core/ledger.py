"""The batch ledger: what each batch is and where each of its jobs stands, kept on disk.

A client can die at any moment (Nuke crashes, a reboot, SIGKILL from a farm
wrapper); the ledger lets a later process resume the batch, re-attach its prompts
and clean up what it left on the servers. It lives in ``state_dir()/batches/``,
never in the output folder.

Files per batch (JSON lines, UTF-8)::

    <id>.batch        written once by create(), atomically: line 1 the BatchRecord header
                      (name, options, workflow, ...), line 2 the JobSpecs
    <id>.state        compacted job states, atomically replaced: line 1 a header
                      {"gen": G, "finished": ..., "counts": ...}, then one JobUpdate line per job
    <id>.<G>.journal  appended: one JobUpdate (or finish) line per event since compaction G
    <id>.lock         held (flock / msvcrt) by the process writing the batch: a live batch

Modules: this one (the folder: create, open, load, list, prune), :mod:`.ledger_writer`
(a batch's writer: journal, compaction, lock), :mod:`.ledger_records` (the record
types) and :mod:`.ledger_io` (atomic replace, complete-line reads, locks).

Use (the dispatcher's side)::

    ledger = Ledger()                                   # state_dir()/batches
    writer = ledger.create(record_for(batch, options=SubmitOptions(frames="1001-1100", seed=7)))
    writer.record_job(update_for(job, index))           # on every job state change
    writer.mark_finished("done")                        # or close() to leave it resumable
    batch = ledger.load(batch_id); writer = ledger.open(batch_id)   # resume

Record types (frozen dataclasses, in :mod:`.ledger_records`):

- :class:`SubmitOptions` - what resume needs to submit the batch again (frames as
  text, iterations, seed, output folder, sequence name, pinned server).
- :class:`JobSpec` - one job as created: position, job id (the ``ncc_job`` marker
  its prompts carry), frame, iteration, seed, label.
- :class:`BatchRecord` - the batch: id, name, created, workflow hash and workflow
  (or its path), options, client id, host, jobs.
- :class:`JobUpdate` - a job's whole present state, recorded on every change:
  state, server, prompt_id, attempt token, attempts, failed servers, delivered
  files, error. The last update of a job is its state; earlier ones are history.
- :class:`LedgerBatch` - a loaded batch: record, latest update per job, finish.
- :class:`BatchSummary` - one line of :meth:`Ledger.list`.

Why it survives a kill at any point:

- ``.batch`` and ``.state`` are written to a temp file, fsynced, then
  ``os.replace``-d: a reader sees the old or the new file, never a mix.
- A journal line counts only once its newline is written; a torn last line is
  ignored (and a write that failed half-way starts the next line on a new line).
- Compaction opens journal ``G+1`` first, then replaces ``.state`` with gen
  ``G+1``, then deletes journals below ``G+1``. A load reads ``.state`` (gen G) and
  replays journals ``>= G`` in order, so a kill between any two steps loses nothing
  and counts nothing twice.

Cost: an event is one ``write()`` of a ~150-byte line (fsync at most every
``sync_interval`` seconds; a process kill loses nothing already written, only a
power cut can lose the last interval). Compaction runs when the journal outgrows
the state file, so its cost is amortised to O(1) per event whatever the batch
size, and it writes the cached lines without re-encoding them
(``benchmarks/ledger.py`` prints the figures).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .ledger_io import (
    ID_PATTERN,
    atomic_write,
    cause,
    check_id,
    locked_elsewhere,
    read_lines,
    read_pid,
    release,
    try_lock,
    unlock,
)
from .ledger_records import (
    FINISHED_STATES,
    FORMAT_VERSION,
    BatchRecord,
    BatchSummary,
    JobSpec,
    JobUpdate,
    LedgerBatch,
    LedgerError,
    SubmitOptions,
    dumps,
    opt,
    record_for,
    update_for,
    workflow_hash,
)
from .ledger_writer import BatchWriter

log = logging.getLogger(__name__)

FOLDER = "batches"
#: finished batches older than this many days are pruned
DEFAULT_KEEP_DAYS = 7.0
#: the journal is folded into the state file once it is this big (or bigger than the state file)
MIN_COMPACT_BYTES = 1 << 20
DEFAULT_SYNC_INTERVAL = 1.0
#: create() prunes old finished batches at most this often per process
PRUNE_EVERY_S = 3600.0
_last_prune: Dict[str, float] = {}
_clock = time.time  # what prune calls "now" (a test moves it)
_JOURNAL = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,64})\.(?P<gen>\d{1,12})\.journal$")


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The batches folder: create, open (to resume), load, list, prune, delete."""

    def __init__(
        self,
        root: Union[str, os.PathLike[str], None] = None,
        *,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        min_compact_bytes: int = MIN_COMPACT_BYTES,
        keep_days: Optional[float] = DEFAULT_KEEP_DAYS,
    ) -> None:
        """``keep_days``: :meth:`create` prunes finished batches older than that (at most hourly); None: never."""
        if root is None:
            from .state_dir import state_dir

            root = Path(state_dir()) / FOLDER
        self.root = Path(root)
        self.sync_interval = sync_interval
        self.min_compact_bytes = min_compact_bytes
        self.keep_days = keep_days

    def path_for(self, batch_id: str, suffix: str) -> Path:
        return self.root / f"{check_id(batch_id)}{suffix}"

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"Cannot create the batch ledger folder {self.root}: {cause(e)}") from e

    # -- writing -------------------------------------------------------------------------
    def create(self, record: BatchRecord) -> BatchWriter:
        """Write a new batch (atomically) and return its writer, which holds the batch's lock."""
        lock = self._lock(record.batch_id)
        try:
            if self.path_for(record.batch_id, ".batch").exists():
                raise LedgerError(f"batch {record.batch_id} is already in the ledger ({self.root})")
            for stale in self._files(record.batch_id):  # left by a delete that a kill cut short
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            jobs = [[j.job_id, j.frame, j.iteration, j.seed, j.label] for j in record.jobs]
            atomic_write(self.path_for(record.batch_id, ".batch"), [dumps(record.header()), dumps(jobs)])
        except OSError as e:
            release(lock)
            raise LedgerError(f"Cannot write {self.path_for(record.batch_id, '.batch')}: {cause(e)}") from e
        except BaseException:
            release(lock)
            raise
        self._prune_now_and_then()
        return BatchWriter(self, record, lock, {}, gen=0, state_size=0)

    def _prune_now_and_then(self) -> None:
        if self.keep_days is None:
            return
        now = time.monotonic()
        key = str(self.root)
        last = _last_prune.get(key)
        if last is not None and now - last < PRUNE_EVERY_S:
            return
        _last_prune[key] = now
        try:
            removed = self.prune(self.keep_days)
        except LedgerError as e:  # housekeeping must never stop a submit
            log.warning("batch ledger: could not prune %s: %s", self.root, e)
            return
        if removed:
            log.info("batch ledger: pruned %d finished batches older than %g days", len(removed), self.keep_days)

    def open(self, batch_id: str) -> BatchWriter:
        """The writer of an existing batch (to resume it); refused while another process holds it."""
        if not self.path_for(batch_id, ".batch").exists():
            raise LedgerError(f"no batch {batch_id} in the ledger ({self.root})")
        lock = self._lock(batch_id)
        try:
            batch = self._load(batch_id, live=True)
            lines = {i: dumps(u.to_json()) for i, u in batch.jobs.items()}
            gen = max(self.journal_gens(batch_id), default=0)
            writer = BatchWriter(self, batch.record, lock, lines, gen=gen, state_size=0)
            if batch.finished:
                writer.set_finished(batch.finished, batch.finished_at or 0.0, batch.message)
            writer.compact()  # a clean start: one state file, torn journal tails gone
        except BaseException:
            release(lock)
            raise
        return writer

    def _lock(self, batch_id: str) -> int:
        path = self.path_for(batch_id, ".lock")
        self._ensure_root()
        try:
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise LedgerError(f"Cannot lock {path}: {cause(e)}") from e
        try:
            try_lock(fd)
        except OSError as e:
            os.close(fd)
            if locked_elsewhere(e):
                pid = read_pid(path)
                who = f"process {pid}" if pid else "another process"
                raise LedgerError(f"batch {batch_id} is in use by {who} (lock {path})") from e
            raise LedgerError(f"Cannot lock {path}: {cause(e)}") from e
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            # after the first byte: msvcrt locks byte 0, and a reader must not trip on it
            os.write(fd, f" {os.getpid()}\n".encode("ascii"))
        return fd

    # -- reading -------------------------------------------------------------------------
    def is_live(self, batch_id: str) -> bool:
        """True while some process (this one included) holds the batch's lock."""
        path = self.path_for(batch_id, ".lock")
        try:
            fd = os.open(str(path), os.O_RDWR)
        except OSError:
            return False
        try:
            try_lock(fd)
        except OSError as e:
            return locked_elsewhere(e)
        else:
            unlock(fd)
            return False
        finally:
            os.close(fd)

    def load(self, batch_id: str) -> LedgerBatch:
        """A batch with the latest state of every job; LedgerError when missing or unreadable."""
        return self._load(batch_id, live=self.is_live(batch_id))

    def _load(self, batch_id: str, live: bool) -> LedgerBatch:
        record, _ = self._read_record(batch_id)
        # a compaction may run while we read: read again until the state file stayed put
        for _ in range(20):
            try:
                return self._read_states(record, live)
            except _Moved:
                time.sleep(0.01)
        raise LedgerError(f"batch {batch_id} kept changing while being read")

    def _read_record(self, batch_id: str, header_only: bool = False) -> Tuple[BatchRecord, int]:
        """The record and its declared job count (``header_only``: without the jobs, for summaries)."""
        path = self.path_for(batch_id, ".batch")
        try:
            with open(str(path), "rb") as fh:
                head = json.loads(fh.readline().decode("utf-8"))
                rows = [] if header_only else json.loads(fh.readline().decode("utf-8"))
        except FileNotFoundError as e:
            raise LedgerError(f"no batch {batch_id} in the ledger ({self.root})") from e
        except OSError as e:
            raise LedgerError(f"Cannot read {path}: {cause(e)}") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise LedgerError(f"{path} is damaged: {e}") from e
        try:
            if not isinstance(head, dict) or head.get("format") != "ncc-batch":
                raise ValueError("not a batch record")
            if head.get("version") != FORMAT_VERSION:
                raise ValueError(f"written by another version (format {head.get('version')})")
            declared = head.get("jobs")
            if not isinstance(declared, int) or declared < 0:
                raise ValueError("no job count")
            jobs = tuple(
                JobSpec(i, str(r[0]), _int(r[1]), _int(r[2]), _int(r[3]), r[4] if type(r[4]) is str else "")
                for i, r in enumerate(rows)
            )
            if not header_only and len(jobs) != declared:
                raise ValueError("job list is incomplete")
            workflow = head.get("workflow")
            record = BatchRecord(
                batch_id=str(head["batch_id"]),
                name=str(head.get("name") or ""),
                created=float(head.get("created") or 0.0),
                workflow_hash=str(head.get("workflow_hash") or ""),
                options=SubmitOptions.from_dict(head.get("options") or {}),
                jobs=jobs,
                workflow=workflow if isinstance(workflow, dict) else None,
                workflow_path=opt(head.get("workflow_path"), str),
                client_id=opt(head.get("client_id"), str),
                host=str(head.get("host") or ""),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise LedgerError(f"{path} is damaged: {e}") from e
        return record, declared

    def _state_header(self, batch_id: str) -> Dict[str, Any]:
        path = self.path_for(batch_id, ".state")
        try:
            with open(str(path), "rb") as fh:
                head = json.loads(fh.readline().decode("utf-8"))
        except FileNotFoundError:
            return {"gen": 0}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise LedgerError(f"Cannot read {path}: {e}") from e
        return head if isinstance(head, dict) else {"gen": 0}

    def journal_gens(self, batch_id: str) -> List[int]:
        gens = []
        try:
            names = os.listdir(str(self.root))
        except OSError:
            return []
        for name in names:
            m = _JOURNAL.match(name)
            if m and m.group("id") == batch_id:
                gens.append(int(m.group("gen")))
        return sorted(gens)

    def _read_states(self, record: BatchRecord, live: bool) -> LedgerBatch:
        batch_id = record.batch_id
        state_path = self.path_for(batch_id, ".state")
        try:
            before = _identity(state_path)
        except FileNotFoundError:
            before = None
        lines: List[Any] = []
        bad = 0
        gen = 0
        if before is not None:
            try:
                rows, bad = read_lines(state_path)
            except FileNotFoundError:
                raise _Moved() from None
            except OSError as e:
                raise LedgerError(f"Cannot read {state_path}: {cause(e)}") from e
            if rows and isinstance(rows[0], dict) and isinstance(rows[0].get("gen"), int):
                gen = rows[0]["gen"]
                lines.extend(rows[1:])
            else:
                raise LedgerError(f"{state_path} is damaged: no header")
        for g in self.journal_gens(batch_id):
            if g < gen:
                continue  # already folded into the state file (a kill stopped its deletion)
            try:
                rows, more = read_lines(self.path_for(batch_id, f".{g}.journal"))
            except FileNotFoundError:
                raise _Moved() from None
            except OSError as e:
                raise LedgerError(f"Cannot read the journal of {batch_id}: {cause(e)}") from e
            lines.extend(rows)
            bad += more
        try:
            after = _identity(state_path)
        except FileNotFoundError:
            after = None
        if after != before:
            raise _Moved()
        jobs: Dict[int, JobUpdate] = {}
        finished = finished_at = None
        message = ""
        updated = record.created
        for item in lines:
            if not isinstance(item, dict):
                bad += 1
                continue
            if "fin" in item:
                if item["fin"] in FINISHED_STATES:
                    finished, finished_at = item["fin"], item.get("t")
                    message = str(item.get("msg") or "")
                elif item["fin"] is None:  # a resume reopened the batch
                    finished = finished_at = None
                    message = ""
                continue
            try:
                update = JobUpdate.from_json(item)
            except ValueError:
                bad += 1
                continue
            if update.index >= len(record.jobs):
                bad += 1
                continue
            jobs[update.index] = update
            updated = max(updated, update.at)
        return LedgerBatch(
            record=record,
            jobs=jobs,
            finished=finished,
            finished_at=finished_at if isinstance(finished_at, (int, float)) else None,
            message=message,
            updated=max(updated, finished_at or 0.0) if isinstance(finished_at, (int, float)) else updated,
            live=live,
            damaged_lines=bad,
        )

    def batch_ids(self) -> List[str]:
        try:
            names = os.listdir(str(self.root))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise LedgerError(f"Cannot list {self.root}: {cause(e)}") from e
        return sorted(
            n[: -len(".batch")] for n in names if n.endswith(".batch") and ID_PATTERN.match(n[: -len(".batch")])
        )

    def summary(self, batch_id: str) -> BatchSummary:
        """Cheap for finished batches (the state header holds their counts); loads unfinished ones."""
        live = self.is_live(batch_id)
        head = self._state_header(batch_id)
        fin = head.get("finished")
        if (
            not live
            and isinstance(fin, dict)
            and fin.get("state") in FINISHED_STATES
            and not self._journal_after(batch_id, head)
        ):
            record, declared = self._read_record(batch_id, header_only=True)
            counts = head.get("counts") if isinstance(head.get("counts"), dict) else {}
            at = fin.get("at") if isinstance(fin.get("at"), (int, float)) else None
            return BatchSummary.of(record, counts, fin["state"], at, at or record.created, False, total=declared)
        return self._load(batch_id, live).summary()

    def _journal_after(self, batch_id: str, head: Mapping[str, Any]) -> bool:
        gen = head.get("gen") or 0
        for g in self.journal_gens(batch_id):
            if g >= gen:
                with contextlib.suppress(OSError):
                    if os.path.getsize(str(self.path_for(batch_id, f".{g}.journal"))) > 0:
                        return True
        return False

    def list(self) -> List[BatchSummary]:
        """Every batch, newest first; an unreadable batch is listed as ``damaged`` with the reason."""
        out: List[BatchSummary] = []
        for batch_id in self.batch_ids():
            try:
                out.append(self.summary(batch_id))
            except LedgerError as e:
                out.append(_damaged(batch_id, str(e)))
        out.sort(key=lambda s: (s.created, s.batch_id), reverse=True)
        return out

    def find(self, prefix: str) -> str:
        """The batch id starting with ``prefix`` (at least 4 characters); LedgerError when none or several."""
        prefix = prefix.strip()
        ids = self.batch_ids()
        if prefix in ids:
            return prefix
        if len(prefix) < 4:
            raise LedgerError(f"batch id {prefix!r} is too short: give at least 4 characters")
        hits = [b for b in ids if b.startswith(prefix)]
        if not hits:
            raise LedgerError(f"no batch {prefix!r} in the ledger ({self.root})")
        if len(hits) > 1:
            raise LedgerError(f"batch id {prefix!r} is ambiguous: {', '.join(hits[:5])}")
        return hits[0]

    def unfinished(self, workflow_hash_: Optional[str] = None) -> List[BatchSummary]:
        """Batches not marked finished (optionally of one workflow), newest first; for resume and cleanup."""
        return [
            s
            for s in self.list()
            if s.state in ("running", "unfinished") and (workflow_hash_ is None or s.workflow_hash == workflow_hash_)
        ]

    # -- removing ------------------------------------------------------------------------
    def delete(self, batch_id: str) -> None:
        """Remove every file of a batch; refused while the batch is live."""
        lock = self._lock(batch_id)
        try:
            for path in self._files(batch_id):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            release(lock)
        with contextlib.suppress(OSError):
            self.path_for(batch_id, ".lock").unlink()

    def _files(self, batch_id: str) -> List[Path]:
        # the record goes last: a batch half deleted by a kill is still listed and can be deleted again
        paths = [self.path_for(batch_id, f".{g}.journal") for g in self.journal_gens(batch_id)]
        paths += [self.path_for(batch_id, ".state"), self.path_for(batch_id, ".batch")]
        return paths

    def prune(
        self,
        keep_days: float = DEFAULT_KEEP_DAYS,
        *,
        unfinished_days: Optional[float] = None,
        now: Optional[float] = None,
    ) -> List[str]:
        """Delete finished batches older than ``keep_days`` (and unfinished ones older than
        ``unfinished_days`` when given); live batches are kept. Returns the ids removed."""
        now = _clock() if now is None else now
        removed = []
        for summary in self.list():
            if summary.live or summary.state == "damaged":
                continue
            if summary.state in FINISHED_STATES:
                age_from = summary.finished_at or summary.updated or summary.created
                limit = keep_days
            elif unfinished_days is not None:
                age_from = summary.updated or summary.created
                limit = unfinished_days
            else:
                continue
            if now - age_from > limit * 86400.0:
                try:
                    self.delete(summary.batch_id)
                except LedgerError:
                    continue  # went live meanwhile
                removed.append(summary.batch_id)
        self._sweep(now)
        return removed

    def _sweep(self, now: float) -> None:
        """Temp files of killed writes and lock files of deleted batches."""
        try:
            names = os.listdir(str(self.root))
        except OSError:
            return
        known = set(self.batch_ids())
        for name in names:
            path = self.root / name
            stale = name.startswith(".") and name.endswith(".tmp")
            orphan_lock = name.endswith(".lock") and name[: -len(".lock")] not in known
            if not (stale or orphan_lock):
                continue
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > 3600 and not (orphan_lock and self.is_live(name[: -len(".lock")])):
                    path.unlink()


def _int(value: Any) -> Optional[int]:
    return value if type(value) is int else None


def _identity(path: Path) -> Tuple[int, int, int]:
    st = os.stat(str(path))
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Moved(Exception):
    """The files changed under a reader (a compaction): read again."""


def _damaged(batch_id: str, problem: str) -> BatchSummary:
    return BatchSummary(batch_id, "", 0.0, "damaged", 0, 0, 0, 0, None, None, None, 0.0, False, "", problem)


def iter_updates(batch: LedgerBatch) -> Iterator[Tuple[JobSpec, Optional[JobUpdate]]]:
    """Each job of a loaded batch with its latest update (None: never left pending)."""
    for spec in batch.record.jobs:
        yield spec, batch.jobs.get(spec.index)


__all__ = [
    "BatchRecord",
    "BatchSummary",
    "BatchWriter",
    "DEFAULT_KEEP_DAYS",
    "JobSpec",
    "JobUpdate",
    "Ledger",
    "LedgerBatch",
    "LedgerError",
    "SubmitOptions",
    "iter_updates",
    "record_for",
    "update_for",
    "workflow_hash",
]
