"""Waiting for a batch: progress for a terminal or a farm log, then what happened.

On a terminal one live line is redrawn in place. Anywhere else (a pipe, a file,
a farm manager reading stderr) a full line is written on every change and at
least every ``interval`` seconds, starting with ``Progress: NN%`` so a farm
manager's progress pattern (Deadline, OpenCue, Tractor: ``Progress: (\\d+)%``)
picks it up::

    Progress: 37% (111/300 done, 2 running, 0 failed, 2 queued) | gpu1 60 done, 1 running, 1 queued; gpu2 51 done, 1 running, 1 queued | ETA 1m20s

The percentage counts frames, plus the step progress of running ones, and never
goes down (a frame retried elsewhere does not move the bar back).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, TextIO, Tuple

from ..core.jobs import Batch, BatchSnapshot, JobError, JobSnapshot
from ..core.state import JobState

#: a line at least this often when nothing changes, for logs that must show life
DEFAULT_INTERVAL = 5.0


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def per_server(snap: BatchSnapshot) -> Dict[str, Tuple[int, int, int]]:
    """server -> (frames done there, running there now, queued there now)."""
    out: Dict[str, List[int]] = {}
    slot = {JobState.DONE: 0, JobState.RUNNING: 1, JobState.SUBMITTED: 2}
    for j in snap.jobs:
        if j.server and j.state in slot:
            out.setdefault(j.server, [0, 0, 0])[slot[j.state]] += 1
    return {k: (v[0], v[1], v[2]) for k, v in sorted(out.items())}


def _server_text(name: str, counts: Tuple[int, int, int]) -> str:
    done, running, queued = counts
    text = f"{name} {done} done"
    if running:
        text += f", {running} running"
    if queued:
        text += f", {queued} queued"
    return text


def eta_seconds(snap: BatchSnapshot, now: Optional[float] = None) -> Optional[float]:
    """Time left at the pace so far; None until something has finished."""
    if snap.finished or snap.done == 0:
        return None
    progress = snap.progress
    if progress <= 0 or progress >= 1:
        return None
    elapsed = (time.time() if now is None else now) - snap.created_at
    return elapsed * (1 - progress) / progress


@dataclass
class ProgressLine:
    """Builds progress lines; remembers the highest percentage shown so it never goes down."""

    shown_percent: int = 0
    _now: Callable[[], float] = field(default=time.time, repr=False)

    def percent(self, snap: BatchSnapshot) -> int:
        pct = 100 if snap.jobs and snap.done == len(snap.jobs) else min(99, int(snap.progress * 100))
        self.shown_percent = max(self.shown_percent, pct)
        return self.shown_percent

    def text(self, snap: BatchSnapshot, with_eta: bool = True) -> str:
        total = len(snap.jobs)
        counts = f"{snap.done}/{total} done, {snap.running} running, {snap.failed} failed"
        queued = snap.count(JobState.SUBMITTED)
        if queued:
            counts += f", {queued} queued"
        line = f"Progress: {self.percent(snap)}% ({counts})"
        servers = per_server(snap)
        if servers:
            line += " | " + "; ".join(_server_text(name, counts) for name, counts in servers.items())
        if with_eta and not snap.finished:
            eta = eta_seconds(snap, self._now())
            line += " | ETA " + (format_duration(eta) if eta is not None else "--")
        return line


def change_key(snap: BatchSnapshot) -> Tuple[object, ...]:
    """What counts as a state change worth a log line."""
    return (
        snap.done,
        snap.failed,
        snap.running,
        snap.count(JobState.SUBMITTED),
        snap.count(JobState.CANCELLED),
        tuple(per_server(snap).items()),
    )


def wait_with_progress(
    batch: Batch,
    timeout: Optional[float],
    stream: TextIO = sys.stderr,
    interval: float = DEFAULT_INTERVAL,
    tty: Optional[bool] = None,
    messages: Optional[List[str]] = None,
) -> BatchSnapshot:
    """Block until the batch ends or ``timeout``; show progress on ``stream`` meanwhile.

    ``messages`` (when given) collects every batch message shown, oldest first: the
    batch's own message describes its present state, so "waiting for a server" is
    gone from it once the batch is cancelled.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    tty = stream.isatty() if tty is None else tty
    line = ProgressLine()
    last_message = ""
    last_key: Optional[Tuple[object, ...]] = None
    last_write = 0.0
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        snap = batch.wait(0.25 if remaining is None else min(0.25, remaining))
        if snap.message and snap.message != last_message:
            last_message = snap.message
            if messages is not None:
                messages.append(snap.message)
            stream.write(("\r\033[K" if tty else "") + snap.message + "\n")
        now = time.monotonic()
        if tty:
            stream.write("\r\033[K" + line.text(snap))
        else:
            key = change_key(snap)
            if key != last_key or now - last_write >= interval:
                stream.write(line.text(snap) + "\n")
                last_key, last_write = key, now
        stream.flush()
        if snap.finished or (deadline is not None and time.monotonic() >= deadline):
            if tty:
                stream.write("\n")
                stream.flush()
            return snap


# --------------------------------------------------------------------------- the end


def _frames_text(frames: List[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``1-3, 7, 9-10``."""
    frames = sorted(set(frames))
    parts: List[str] = []
    i = 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        parts.append(str(frames[i]) if i == j else f"{frames[i]}-{frames[j]}")
        i = j + 1
    if len(parts) > 12:
        parts = parts[:12] + [f"... ({len(frames)} in all)"]
    return ", ".join(parts)


def _job_name(j: JobSnapshot) -> int:
    if j.frame is not None:
        return j.frame
    if j.iteration is not None:
        return j.iteration + 1
    return j.index + 1


def _strip_server(message: str, server: Optional[str]) -> str:
    if server and message.startswith(server + ": "):
        return message[len(server) + 2 :]
    return message


@dataclass(frozen=True)
class ErrorGroup:
    """One distinct failure and everything it hit."""

    error: JobError
    message: str  # without a leading "server: "
    frames: Tuple[int, ...]
    servers: Tuple[str, ...]
    what: str  # "frames" | "iterations" | "jobs"


def error_groups(snap: BatchSnapshot) -> List[ErrorGroup]:
    """Each distinct failure once (the same workflow error from several servers is one), with its frames."""
    groups: Dict[Tuple[str, Optional[str], str], List[JobSnapshot]] = {}
    firsts: Dict[Tuple[str, Optional[str], str], JobError] = {}
    for j in snap.jobs:
        e = j.error
        if e is None or e.kind == "cancelled" or j.state is not JobState.FAILED:
            continue
        key = (e.kind, e.node_id, _strip_server(e.message, e.server))
        groups.setdefault(key, []).append(j)
        firsts.setdefault(key, e)
    out = []
    for key, jobs in groups.items():
        what = "frames" if jobs[0].frame is not None else ("iterations" if jobs[0].iteration is not None else "jobs")
        servers = sorted({j.error.server for j in jobs if j.error is not None and j.error.server})
        out.append(ErrorGroup(firsts[key], key[2], tuple(_job_name(j) for j in jobs), tuple(servers), what))
    return out


def refused_everywhere(snap: BatchSnapshot) -> bool:
    """Nothing rendered and every failure is the workflow's (rejected by every server that was asked)."""
    if not snap.finished or snap.done or not snap.failed:
        return False
    failed = [j for j in snap.jobs if j.state is JobState.FAILED]
    return all(j.error is not None and j.error.kind == "workflow" and j.started_at is None for j in failed)


@dataclass(frozen=True)
class Outcome:
    """How the jobs ended, in the words of the summary."""

    done: int
    failed: int
    cancelled: int
    not_started: int
    not_started_why: str

    def text(self) -> str:
        parts = [f"{self.done} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        if self.not_started:
            parts.append(
                f"{self.not_started} not started" + (f": {self.not_started_why}" if self.not_started_why else "")
            )
        return ", ".join(parts)


def _no_server(snap: BatchSnapshot, last_message: str) -> bool:
    for msg in (snap.message.lower(), last_message.lower()):
        if msg.startswith("waiting for a server") or msg.startswith("no server"):
            return True
    return any(e.kind == "infrastructure" and "no server" in e.message.lower() for e in snap.errors)


def outcome(snap: BatchSnapshot, stopped_by: str = "", last_message: str = "") -> Outcome:
    """Count what happened. ``stopped_by``: "" (the batch ended), "timeout" or "signal";
    ``last_message``: the last batch message shown while waiting.

    A job never sent that ended because no server was there (or the timeout came
    first) is "not started", not "cancelled": nothing of it ran anywhere.
    """
    done = failed = cancelled = not_started = 0
    no_server = _no_server(snap, last_message)
    for j in snap.jobs:
        never_sent = j.attempts == 0 and j.started_at is None and j.prompt_id is None
        if j.state is JobState.DONE:
            done += 1
        elif (
            never_sent
            and j.state in (JobState.CANCELLED, JobState.FAILED, JobState.PENDING)
            and (no_server or (stopped_by == "timeout" and j.state is not JobState.FAILED))
        ):
            not_started += 1
        elif j.state is JobState.FAILED:
            failed += 1
        else:
            cancelled += 1
    why = "no server available" if no_server else ("--timeout reached" if stopped_by == "timeout" else "")
    return Outcome(done, failed, cancelled, not_started, why)


def where_results_are(snap: BatchSnapshot) -> str:
    """``kept in /out/sh010.####.png`` (every delivered sequence), or "" when nothing was delivered."""
    seqs = [s for s in snap.sequences if s.frames]
    if not seqs:
        return ""
    return "kept in " + ", ".join(s.pattern for s in seqs)


def summary_table(snap: BatchSnapshot, stopped_by: str = "", last_message: str = "") -> str:
    """Frames per server (when any is done), what happened, where the results are, each error once."""
    per: Dict[str, List[float]] = {}
    for j in snap.jobs:
        if j.state is JobState.DONE and j.server and j.started_at and j.finished_at:
            per.setdefault(j.server, []).append(j.finished_at - j.started_at)
    lines: List[str] = []
    loads = {server: (n, seconds) for server, n, seconds in snap.loads}
    if per:
        lines.append("SERVER        FRAMES  MEAN FRAME TIME  MODEL LOADS")
        for name in sorted(set(per) | set(loads)):
            times = per.get(name, [])
            mean = f"{sum(times) / len(times):>8.2f} s" if times else "       - "
            n, seconds = loads.get(name, (0, 0.0))
            load = (f"{n} ({seconds:.1f} s)" if seconds else str(n)) if n else "-"
            lines.append(f"{name:<13} {len(times):>6}  {mean}         {load}")
    head = outcome(snap, stopped_by, last_message).text()
    where = where_results_are(snap)
    if where:
        head += ", " + where
    if snap.makespan is not None and snap.ok:
        head += f" ({format_duration(snap.makespan)})"
    lines.append(head)
    for server, reason in snap.left_out:
        lines.append(f"left out: {server}: {reason}")
    for group in error_groups(snap):
        e = group.error
        where_node = f" node {e.node_id} ({e.node_type})" if e.node_id else ""
        on = " on " + ", ".join(group.servers) if group.servers else ""
        lines.append(f"error{where_node}: {group.message}{on}")
        lines.append(f"  {group.what}: {_frames_text(list(group.frames))}")
    return "\n".join(lines)
