"""Removing prompts a dead client left on the servers: delete our queued ones, interrupt our running ones.

Which prompts are ours comes from the ledger, never from a guess: every prompt we
send carries ``extra_data: {"ncc_job": <job id>, "ncc_attempt": <token>}`` and
``GET /queue`` items are ``[number, prompt_id, prompt, extra_data, outputs]``. A queue
item is a target when its marker names a job, attempt, batch or prompt id of a
batch we were asked to clean. By default that is every unfinished batch in the
ledger that no live process is rendering, so another artist's prompts (no marker)
and another machine's (job ids that are not in our ledger) are never touched.

ComfyUI 0.3.39's ``POST /interrupt`` takes no prompt id and stops whatever runs.
So an interrupt is sent only right after a ``GET /queue`` that showed our prompt
running, with nothing in between; the window in which our prompt could end and
someone else's start is one request long. Newer servers honour the prompt id we
send with it and close that window.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

from .errors import ClusterError, user_message
from .ledger import Ledger, LedgerBatch, LedgerError
from .server import parse_queue

if TYPE_CHECKING:
    from .server import ComfyUIServer

#: how long one server may take to be cleaned (an interrupt lands at the next node boundary)
DEFAULT_TIMEOUT = 20.0
_REINTERRUPT_AFTER = 2.0
_POLL = 0.2


@dataclass(frozen=True)
class Targets:
    """The prompts to remove: any queue item whose marker or prompt id is in one of these sets."""

    batch_ids: FrozenSet[str] = frozenset()
    job_ids: FrozenSet[str] = frozenset()
    tokens: FrozenSet[str] = frozenset()
    prompt_ids: FrozenSet[str] = frozenset()
    #: servers the ledger says hold prompts of these batches (to warn about unconfigured ones)
    servers: FrozenSet[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.batch_ids or self.job_ids or self.tokens or self.prompt_ids)

    def matches(self, item: Sequence[Any]) -> bool:
        """Is this ``/queue`` item one of ours to remove?"""
        if len(item) > 1 and item[1] in self.prompt_ids:
            return True
        extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        return (
            extra.get("ncc_job") in self.job_ids
            or extra.get("ncc_attempt") in self.tokens
            or extra.get("ncc_batch") in self.batch_ids
        )


@dataclass(frozen=True)
class Selection:
    """What :func:`select_targets` chose: the targets, the batches, and the batches left out (with why)."""

    targets: Targets
    batches: Tuple[str, ...]
    skipped: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerCleanup:
    """One server: prompt ids deleted from its queue, interrupted, and what went wrong."""

    server: str
    deleted: Tuple[str, ...] = ()
    interrupted: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        return {
            "server": self.server,
            "deleted": list(self.deleted),
            "interrupted": list(self.interrupted),
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class CleanupReport:
    """Per server what was (or, in a dry run, would be) removed; ``notes`` says what was left alone."""

    servers: Tuple[ServerCleanup, ...]
    dry_run: bool = False
    batches: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def deleted(self) -> int:
        return sum(len(s.deleted) for s in self.servers)

    @property
    def interrupted(self) -> int:
        return sum(len(s.interrupted) for s in self.servers)

    @property
    def ok(self) -> bool:
        return not any(s.errors for s in self.servers)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "batches": list(self.batches),
            "deleted": self.deleted,
            "interrupted": self.interrupted,
            "ok": self.ok,
            "notes": list(self.notes),
            "servers": [s.as_dict() for s in self.servers],
        }


def select_targets(
    ledger: Ledger,
    batch_ids: Optional[Iterable[str]] = None,
    *,
    tokens: Optional[Iterable[str]] = None,
    include_live: bool = False,
) -> Selection:
    """Targets from the ledger.

    ``batch_ids`` (full ids or unique prefixes): those batches, finished or not;
    default: every unfinished batch. ``tokens``: only prompts with these attempt
    tokens (within the chosen batches). Batches a live process is rendering are
    left out unless ``include_live`` (that process would lose its prompts).
    Unknown ids raise :class:`LedgerError`.
    """
    if batch_ids:
        wanted = [ledger.find(b) for b in batch_ids]
    else:
        wanted = [s.batch_id for s in ledger.list() if s.state in ("unfinished", "running")]
    loaded: List[LedgerBatch] = []
    skipped: List[str] = []
    for batch_id in dict.fromkeys(wanted):
        batch = ledger.load(batch_id)
        if batch.live and not include_live:
            skipped.append(f"batch {batch_id} ({batch.record.name}) is being rendered by a live process: left alone")
            continue
        loaded.append(batch)
    if tokens is not None:
        wanted_tokens = frozenset(tokens)
        servers = frozenset(
            u.server for b in loaded for u in b.jobs.values() if u.attempt in wanted_tokens and u.server
        )
        return Selection(
            Targets(tokens=wanted_tokens, servers=servers), tuple(b.batch_id for b in loaded), tuple(skipped)
        )
    job_ids: Set[str] = set()
    attempt_tokens: Set[str] = set()
    prompt_ids: Set[str] = set()
    servers_used: Set[str] = set()
    for batch in loaded:
        job_ids.update(spec.job_id for spec in batch.record.jobs)
        for update in batch.jobs.values():
            if update.attempt:
                attempt_tokens.add(update.attempt)
            if update.prompt_id:
                prompt_ids.add(update.prompt_id)
            if update.server and update.state in ("submitted", "running"):
                servers_used.add(update.server)
    targets = Targets(
        batch_ids=frozenset(b.batch_id for b in loaded),
        job_ids=frozenset(job_ids),
        tokens=frozenset(attempt_tokens),
        prompt_ids=frozenset(prompt_ids),
        servers=frozenset(servers_used),
    )
    return Selection(targets, tuple(b.batch_id for b in loaded), tuple(skipped))


def cleanup(
    servers: Any,
    targets: Targets,
    *,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    batches: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> CleanupReport:
    """Remove the targeted prompts from every server (a pool or a list of servers), in parallel."""
    server_list: List[ComfyUIServer] = list(getattr(servers, "servers", servers))
    notes = list(notes)
    configured = {s.name for s in server_list}
    for name in sorted(targets.servers - configured):
        notes.append(f"server {name} held prompts of these batches but is not configured now: not cleaned")
    if targets.empty or not server_list:
        return CleanupReport(tuple(ServerCleanup(s.name) for s in server_list), dry_run, tuple(batches), tuple(notes))
    with ThreadPoolExecutor(max_workers=min(8, len(server_list)), thread_name_prefix="ncc-cleanup") as workers:
        results = list(workers.map(lambda s: _clean_server(s, targets, dry_run, timeout), server_list))
    return CleanupReport(tuple(results), dry_run, tuple(batches), tuple(notes))


def _queue(server: ComfyUIServer) -> Tuple[list, list]:
    return parse_queue(server.connection.get_json("queue"))


def _clean_server(server: ComfyUIServer, targets: Targets, dry_run: bool, timeout: float) -> ServerCleanup:
    deleted: Dict[str, None] = {}
    interrupted: Dict[str, float] = {}
    errors: List[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            running, pending = _queue(server)
            doomed = [item[1] for item in pending if targets.matches(item)]
            ours_running = [item[1] for item in running if targets.matches(item)]
            if dry_run:
                return ServerCleanup(server.name, tuple(doomed), tuple(ours_running))
            if not doomed and not ours_running:
                break
            if time.monotonic() >= deadline:
                left = len(doomed) + len(ours_running)
                errors.append(f"{server.name}: {left} of our prompts still there after {timeout:.0f} s")
                break
            if doomed:
                if all(p in deleted for p in doomed):
                    time.sleep(_POLL)  # asked before and still listed: give the server a moment
                server.connection.post_json("queue", {"delete": doomed})
                deleted.update(dict.fromkeys(doomed))
                continue  # look again before any interrupt: what runs may have changed meanwhile
            prompt_id = ours_running[0]
            sent = interrupted.get(prompt_id)
            if sent is None or time.monotonic() - sent >= _REINTERRUPT_AFTER:
                # straight after the GET that showed it running: 0.3.39 interrupts whatever runs
                server.connection.post_json("interrupt", {"prompt_id": prompt_id})
                interrupted[prompt_id] = time.monotonic()
            time.sleep(_POLL)
    except (ClusterError, ValueError) as e:
        errors.append(user_message(e) if isinstance(e, ClusterError) else f"{server.name}: {e}")
    # a prompt deleted while it started running was interrupted instead
    return ServerCleanup(
        server.name,
        tuple(p for p in deleted if p not in interrupted),
        tuple(interrupted),
        tuple(errors),
    )


def cancel_in_ledger(ledger: Ledger, batch_ids: Iterable[str], message: str = "cleaned up: not resumable") -> List[str]:
    """Mark batches cancelled (jobs not finished become cancelled), so they stop being listed as unfinished."""
    from .ledger import JobUpdate

    done: List[str] = []
    for batch_id in batch_ids:
        try:
            writer = ledger.open(batch_id)
        except LedgerError:
            continue  # live elsewhere: that process decides
        with writer:
            batch = ledger.load(batch_id)
            now = time.time()
            updates = [
                JobUpdate(
                    spec.index,
                    "cancelled",
                    server=u.server if u else None,
                    prompt_id=u.prompt_id if u else None,
                    attempt=u.attempt if u else None,
                    attempts=u.attempts if u else 0,
                    failed_servers=u.failed_servers if u else (),
                    files=u.files if u else (),
                    error=message,
                    at=now,
                )
                for spec in batch.record.jobs
                for u in (batch.jobs.get(spec.index),)
                if u is None or u.state not in ("done", "failed", "cancelled")
            ]
            writer.record_jobs(updates)
            if batch.finished is None:
                writer.mark_finished("cancelled", message)
        done.append(batch_id)
    return done


__all__ = [
    "CleanupReport",
    "Selection",
    "ServerCleanup",
    "Targets",
    "cancel_in_ledger",
    "cleanup",
    "select_targets",
]
