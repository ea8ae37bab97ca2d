"""What the ComfyUI Cluster node tells the artist: status lines, progress text, error reports.

Pure Python over :class:`~nuke_comfy_cluster.core.jobs.BatchSnapshot`, so every
sentence can be tested without Nuke.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

from ..core.jobs import BatchSnapshot, JobError, JobSnapshot
from ..core.state import JobState

#: traceback lines kept in the node's details (the end is where the cause is)
TRACEBACK_TAIL = 6


def compact_numbers(numbers: Iterable[int]) -> str:
    """``[1001, 1002, 1003, 1007]`` -> ``"1001-1003, 1007"``."""
    values = sorted(set(numbers))
    parts: List[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts)


def where(jobs: Sequence[JobSnapshot]) -> str:
    """Which frames (or iterations, counted from 1) a set of jobs covers."""
    if not jobs:
        return ""
    if any(j.iteration is not None for j in jobs):
        numbers = [j.iteration + 1 for j in jobs if j.iteration is not None]
        return "{} {}".format("iteration" if len(numbers) == 1 else "iterations", compact_numbers(numbers))
    frames = [j.frame for j in jobs if j.frame is not None]
    if not frames:
        return ""
    return "{} {}".format("frame" if len(frames) == 1 else "frames", compact_numbers(frames))


def _jobs_with(snapshot: BatchSnapshot, error: JobError) -> List[JobSnapshot]:
    return [j for j in snapshot.jobs if j.error is not None and j.error.key == error.key]


def describe_error(error: JobError, jobs: Sequence[JobSnapshot]) -> str:
    """One sentence: the ComfyUI node and message for workflow errors, servers for the rest."""
    at = where(jobs)
    if error.kind == "workflow":
        node = ""
        if error.node_id or error.node_type:
            node = " in node {}{}".format(error.node_id or "?", f" ({error.node_type})" if error.node_type else "")
        server = f" on {error.server}" if error.server else ""
        text = f"Workflow error{node}{server}: {error.message}"
    else:
        tried: List[str] = []
        for job in jobs:
            for name in job.failed_servers + ((job.server,) if job.server else ()):
                if name not in tried:
                    tried.append(name)
        if error.server and error.server not in tried:
            tried.insert(0, error.server)
        text = error.message
        if tried and not any(name in error.message for name in tried):
            text = "{} (servers: {})".format(text, ", ".join(tried))
        elif len(tried) > 1:
            text = "{} (servers tried: {})".format(text, ", ".join(tried))
    return f"{text} [{at}]" if at else text


def error_lines(snapshot: BatchSnapshot) -> List[str]:
    """Each distinct failure once, most frequent first."""
    described = [(len(_jobs_with(snapshot, e)), describe_error(e, _jobs_with(snapshot, e))) for e in snapshot.errors]
    described.sort(key=lambda item: -item[0])
    return [text for _, text in described]


def error_details(snapshot: BatchSnapshot) -> str:
    """Every distinct failure with the end of its traceback, for the node's details."""
    blocks: List[str] = []
    for error in snapshot.errors:
        lines = [describe_error(error, _jobs_with(snapshot, error))]
        if error.traceback:
            tail = [line.rstrip() for line in error.traceback.strip().splitlines() if line.strip()][-TRACEBACK_TAIL:]
            lines.extend("    " + line for line in tail)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _unit(snapshot: BatchSnapshot) -> str:
    return "iterations" if any(j.iteration is not None for j in snapshot.jobs) else "frames"


def progress_message(snapshot: BatchSnapshot) -> str:
    """The ProgressTask line: counts, and which servers are doing the work."""
    total = len(snapshot.jobs)
    parts = [f"{snapshot.done}/{total} {_unit(snapshot)} done"]
    active = sorted({j.server for j in snapshot.jobs if j.server and j.state in (JobState.SUBMITTED, JobState.RUNNING)})
    if active:
        parts.append("on " + ", ".join(active))
    if snapshot.failed:
        parts.append(f"{snapshot.failed} failed")
    if snapshot.message:
        parts.append(snapshot.message)
    return " | ".join(parts)


def status_line(snapshot: BatchSnapshot, cancelling: bool = False) -> str:
    """The node's one-line status while a run is active or after it ended."""
    total = len(snapshot.jobs)
    unit = _unit(snapshot)
    if snapshot.detached and not snapshot.finished:
        return (
            f"Detached: {snapshot.done} of {total} {unit} done; the prompts already on the servers keep "
            "rendering. Press Resume to collect them and send the rest."
        )
    if not snapshot.finished:
        head = "Cancelling" if cancelling else "Running"
        return f"{head}: {progress_message(snapshot)}"
    state = snapshot.state
    if state == "done":
        used = ", ".join(f"{name} {n}" for name, n in sorted(snapshot.servers.items()))
        return "Done: {} {}{}".format(total, unit, f" ({used})" if used else "")
    cancelled = snapshot.count(JobState.CANCELLED)
    if state == "cancelled":
        return f"Cancelled: {snapshot.done} of {total} {unit} done, {cancelled} cancelled"
    first = error_lines(snapshot)
    reason = first[0] if first else "unknown error"
    more = f" (+{len(first) - 1} other errors, see details)" if len(first) > 1 else ""
    return f"Failed: {snapshot.done} of {total} {unit} done, {snapshot.failed} failed. {reason}{more}"


def failure_popup(snapshot: BatchSnapshot, node_name: str) -> Optional[str]:
    """The message box text for a run that ended with failures; None when there is nothing to say."""
    if not snapshot.finished or snapshot.failed == 0:
        return None
    lines = error_lines(snapshot)
    head = f"{node_name}: {snapshot.failed} of {len(snapshot.jobs)} {_unit(snapshot)} failed."
    return "\n\n".join([head] + lines)


# --------------------------------------------------------------------------- batch lifecycle


def short_id(batch_id: str) -> str:
    return batch_id[:8]


def _counts(summary: Any) -> str:
    return f"{summary.done} of {summary.total} done" + (f", {summary.failed} failed" if summary.failed else "")


def resumable_line(summary: Any) -> str:
    """A reopened script's node whose batch did not finish (``summary``: a ledger BatchSummary)."""
    return (
        f"Unfinished: batch {short_id(summary.batch_id)}, {_counts(summary)}. Press Resume to finish it "
        "(frames on disk are kept, prompts still on the servers are collected)."
    )


def elsewhere_line(summary: Any) -> str:
    return (
        f"Rendering in another session: batch {short_id(summary.batch_id)}, {_counts(summary)} "
        "(another Nuke or a command line holds it; Resume once it has let go)."
    )


def finished_line(summary: Any) -> str:
    """A batch that ended while its script was closed."""
    state = {"done": "Done", "failed": "Failed", "cancelled": "Cancelled"}.get(summary.state, summary.state)
    return f"{state} while the script was closed: batch {short_id(summary.batch_id)}, {_counts(summary)}."


#: a saved status that only made sense while a run was alive
LIVE_STATUS_PREFIXES = ("Running", "Submitting", "Cancelling", "Resuming", "Rendering inputs", "Detached")


def close_question(runs: Sequence[Tuple[str, Optional[BatchSnapshot]]]) -> str:
    """The nuke.ask text when the script closes (or Nuke quits) with ``(node name, snapshot)`` running."""
    lines = []
    for name, snapshot in runs:
        if snapshot is None:
            lines.append(f"    {name}: being submitted")
        else:
            lines.append(f"    {name}: {snapshot.done} of {len(snapshot.jobs)} {_unit(snapshot)} done")
    many = len(runs) > 1
    return "\n".join(
        [
            "ComfyUI Cluster: {} still rendering:".format(f"{len(runs)} batches are" if many else "a batch is"),
            *lines,
            "",
            "Keep {} rendering on the servers?".format("them" if many else "it"),
            "",
            "Yes: keep rendering. Reopen this script and press Resume on the node to collect the "
            "frames (while Nuke stays open the batch simply goes on).",
            "No: cancel (our queued prompts are removed, the running ones interrupted).",
        ]
    )


def tcl_escape(text: str) -> str:
    """``text`` as a TCL-evaluated knob (a Text_Knob, a node label) must hold it to show it as is.

    Nuke substitutes ``[...]``, ``$name`` and backslash sequences in such knobs, so a
    status like ``... [frames 1001-1003]`` or a Windows path would be run or mangled.
    """
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("$", "\\$")
