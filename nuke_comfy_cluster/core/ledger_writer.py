"""Writing one batch's events to the ledger: journal appends, compaction, the batch lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Optional, Tuple

from .ledger_io import atomic_write, cause, release
from .ledger_records import FINISHED_STATES, JOB_STATES, BatchRecord, JobUpdate, LedgerError, dumps

if TYPE_CHECKING:
    from .ledger import Ledger

log = logging.getLogger(__name__)


class BatchWriter:
    """Records one batch's events; holds the batch's lock until :meth:`close` or :meth:`mark_finished`.

    Thread-safe. Once created it never raises on a failed write (a full disk must not
    stop a render): the error is logged once and kept in :attr:`error`, and writing
    resumes when the disk allows.
    """

    def __init__(
        self, ledger: Ledger, record: BatchRecord, lock: int, lines: Dict[int, bytes], *, gen: int, state_size: int
    ) -> None:
        self.ledger = ledger
        self.record = record
        self.batch_id = record.batch_id
        self._lock_fd: Optional[int] = lock
        self._lines = lines  # index -> the job's latest encoded line (compaction writes these as they are)
        self._states: Dict[int, str] = {}
        for index, line in lines.items():
            with contextlib.suppress(ValueError, KeyError):
                self._states[index] = json.loads(line)["s"]
        self._gen = gen
        self._journal: Optional[int] = None
        self._journal_bytes = 0
        self._state_size = state_size
        self._torn = False  # the last write failed half-way: start the next line on a new line
        self._last_sync = time.monotonic()
        self._unsynced = False
        self._finished: Optional[Tuple[Optional[str], Optional[float], str]] = None
        self._mutex = threading.RLock()
        self.error: Optional[str] = None
        self.events = 0
        self.compactions = 0

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events --------------------------------------------------------------------------
    def record_job(self, update: JobUpdate) -> None:
        """Record one job's present state (call on every change)."""
        self.record_jobs((update,))

    def record_jobs(self, updates: Iterable[JobUpdate]) -> None:
        """Several updates in one write."""
        chunks = []
        with self._mutex:
            if self.closed:
                raise LedgerError(f"batch {self.batch_id}: the ledger writer is closed")
            for update in updates:
                if not 0 <= update.index < len(self.record.jobs):
                    raise LedgerError(f"batch {self.batch_id}: job index {update.index} out of range")
                line = dumps(update.to_json())
                self._lines[update.index] = line
                self._states[update.index] = update.state
                chunks.append(line)
            if chunks:
                self.events += len(chunks)
                self._append(b"".join(chunks))

    def mark_finished(self, state: str, message: str = "", *, close: bool = True) -> None:
        """The batch ended (done / failed / cancelled): recorded durably; the lock is released unless ``close=False``."""
        if state not in FINISHED_STATES:
            raise ValueError(f"finished state must be one of {', '.join(FINISHED_STATES)}, not {state!r}")
        with self._mutex:
            at = time.time()
            self._finished = (state, at, message)
            self._append(dumps({"fin": state, "msg": message, "t": at}))
            self.compact()
            if close:
                self.close()

    def reopen(self) -> None:
        """A finished batch runs again (retry failed, resume): it counts as unfinished until marked again."""
        with self._mutex:
            if self._finished is not None:
                self._finished = None
                self._append(dumps({"fin": None, "t": time.time()}))

    def set_finished(self, state: str, at: float, message: str = "") -> None:
        """What the ledger already says about how the batch ended (used when reopening it)."""
        with self._mutex:
            self._finished = (state, at, message)

    def counts(self) -> Dict[str, int]:
        with self._mutex:
            out = {s: 0 for s in JOB_STATES}
            for state in self._states.values():
                out[state] = out.get(state, 0) + 1
            out["pending"] += len(self.record.jobs) - len(self._states)
            return out

    def sync(self) -> None:
        """fsync the journal now (a process kill never needs this; a power cut does)."""
        with self._mutex:
            if self._journal is not None and self._unsynced:
                try:
                    os.fsync(self._journal)
                except OSError as e:
                    self._failed("sync", e)
                self._unsynced = False
                self._last_sync = time.monotonic()

    def close(self) -> None:
        """Stop writing (the batch stays as recorded, unfinished unless marked) and release the lock."""
        with self._mutex:
            if self.closed:
                return
            self.sync()
            if self._journal is not None:
                with contextlib.suppress(OSError):
                    os.close(self._journal)
                self._journal = None
            release(self._lock_fd)
            self._lock_fd = None

    # -- files ---------------------------------------------------------------------------
    def _journal_path(self, gen: int) -> Path:
        return self.ledger.path_for(self.batch_id, f".{gen}.journal")

    def _open_journal(self) -> int:
        if self._journal is None:
            self._journal = os.open(str(self._journal_path(self._gen)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._journal

    def _append(self, data: bytes) -> None:
        if self._torn:
            data = b"\n" + data
        try:
            fd = self._open_journal()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as e:
            self._torn = True
            self._failed("write", e)
            return
        self._torn = False
        self._unsynced = True
        self._journal_bytes += len(data)
        if self.error is not None:
            log.warning("batch ledger %s: writing again", self.batch_id)
            self.error = None
        if self.ledger.sync_interval <= 0 or time.monotonic() - self._last_sync >= self.ledger.sync_interval:
            self.sync()
        if self._journal_bytes >= max(self.ledger.min_compact_bytes, self._state_size):
            self.compact()

    def _failed(self, action: str, exc: OSError) -> None:
        message = f"Cannot {action} the batch ledger of {self.batch_id} in {self.ledger.root}: {cause(exc)}"
        if self.error != message:
            log.warning("%s (rendering goes on; resume may redo frames)", message)
        self.error = message

    def compact(self) -> None:
        """Fold the journal into the state file (see the module docstring for why this order)."""
        with self._mutex:
            old = self._gen
            new = old + 1
            try:
                # 1. later events go to the new journal
                fd = os.open(str(self._journal_path(new)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as e:
                self._failed("compact", e)
                return
            if self._journal is not None:
                with contextlib.suppress(OSError):
                    os.close(self._journal)
            self._journal, self._gen, self._torn = fd, new, False
            self._journal_bytes = 0
            fin = None
            if self._finished is not None:
                fin = {"state": self._finished[0], "at": self._finished[1], "msg": self._finished[2]}
            head = {"format": "ncc-state", "gen": new, "finished": fin, "counts": self.counts(), "written": time.time()}
            chunks = [dumps(head)]
            chunks.extend(self._lines[i] for i in sorted(self._lines))
            if fin is not None:
                chunks.append(dumps({"fin": fin["state"], "msg": fin["msg"], "t": fin["at"]}))
            # 2. the state file now holds everything of journals < new
            try:
                self._state_size = atomic_write(self.ledger.path_for(self.batch_id, ".state"), chunks)
            except OSError as e:
                self._failed("compact", e)
                return  # journals old and new are both still read: nothing lost
            # 3. the old journals are redundant now
            for gen in self.ledger.journal_gens(self.batch_id):
                if gen < new:
                    with contextlib.suppress(OSError):
                        self._journal_path(gen).unlink()
            self.compactions += 1
            self._unsynced = False
            self._last_sync = time.monotonic()
