"""Waiting for a batch from a terminal: one live line, then a summary table."""

from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, TextIO

from ..core.jobs import Batch, BatchSnapshot
from ..core.state import JobState


def progress_line(snap: BatchSnapshot) -> str:
    per_server = ", ".join(f"{k} {v}" for k, v in sorted(snap.servers.items()))
    line = f"{snap.name}: {snap.done}/{len(snap.jobs)} done, {snap.running} running, {snap.failed} failed [{snap.progress * 100:3.0f}%]"
    if per_server:
        line += f"  ({per_server})"
    return line


def wait_with_progress(batch: Batch, timeout: Optional[float], stream: TextIO = sys.stderr) -> BatchSnapshot:
    """Block until the batch ends or ``timeout``; redraw one line on a terminal."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tty = stream.isatty()
    last_message = ""
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        snap = batch.wait(0.25 if remaining is None else min(0.25, remaining))
        if tty:
            stream.write("\r\033[K" + progress_line(snap))
            stream.flush()
        if snap.message and snap.message != last_message:
            last_message = snap.message
            stream.write(("\n" if tty else "") + snap.message + "\n")
        if snap.finished or (deadline is not None and time.monotonic() >= deadline):
            if tty:
                stream.write("\n")
            if not tty:
                stream.write(progress_line(snap) + "\n")
            return snap


def summary_table(snap: BatchSnapshot) -> str:
    """Frames per server with their mean time, then one line per distinct error."""
    per: Dict[str, List[float]] = {}
    for j in snap.jobs:
        if j.state is JobState.DONE and j.server and j.started_at and j.finished_at:
            per.setdefault(j.server, []).append(j.finished_at - j.started_at)
    lines = ["SERVER        FRAMES  MEAN FRAME TIME"]
    for name in sorted(per):
        times = per[name]
        lines.append(f"{name:<13} {len(times):>6}  {sum(times) / len(times):>8.2f} s")
    if snap.makespan is not None:
        lines.append(f"makespan: {snap.makespan:.2f} s for {len(snap.jobs)} jobs ({snap.state})")
    for err in snap.errors:
        where = f" node {err.node_id} ({err.node_type})" if err.node_id else ""
        lines.append("error{}: {}{}".format(where, err.message, " on " + err.server if err.server else ""))
    return "\n".join(lines)
