"""Read nodes for a finished run: planned off the main thread, built on it.

:func:`plan_reads` (worker thread) looks at the batch and the files on disk and
returns plain :class:`ReadSpec` records; :func:`apply_reads` (main thread) creates
or updates one Read per sequence: one for a frame range or the current frame,
one per iteration (labelled with its seed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..core.jobs import BatchSnapshot, JobSnapshot
from ..core.paths import frame_sequence_path
from ..core.state import JobState

READ_SPACING_X = 110
READ_OFFSET_Y = 90


@dataclass(frozen=True)
class ReadSpec:
    """One Read node to create or update."""

    name: str
    path: str  # Nuke pattern, forward slashes: folder/name.####.ext
    first: int
    last: int
    label: str
    frames: Tuple[int, ...]  # frames this run delivered
    missing: Tuple[int, ...]  # frames in first..last with no file on disk

    @property
    def complete(self) -> bool:
        return not self.missing


def read_name(node_name: str, iteration: Optional[int] = None) -> str:
    return f"{node_name}_result" if iteration is None else f"{node_name}_i{iteration:03d}"


def _extension(job: JobSnapshot) -> str:
    # the same output the dispatcher delivered: the first one it made local
    first = next((o for o in job.outputs if o.local_path), None)
    if first is None:
        return ""
    return os.path.splitext(first.filename)[1] or ".png"


def _frame_file(folder: str, stem: str, frame: int, ext: str) -> str:
    return os.path.join(folder, f"{stem}.{frame:04d}{ext}")


def plan_reads(snapshot: BatchSnapshot, output_dir: str, sequence_name: str, node_name: str) -> List[ReadSpec]:
    """The Reads a finished batch calls for (none when nothing was delivered)."""
    groups: Dict[Optional[int], List[JobSnapshot]] = {}
    for job in snapshot.jobs:
        if job.state is JobState.DONE and _extension(job):
            groups.setdefault(job.iteration, []).append(job)
    specs: List[ReadSpec] = []
    for iteration in sorted(groups, key=lambda i: -1 if i is None else i):
        jobs = groups[iteration]
        ext = _extension(jobs[0])
        stem = sequence_name if iteration is None else f"{sequence_name}_i{iteration:03d}"
        frames = sorted(j.frame if j.frame is not None else 1 for j in jobs)
        first, last = frames[0], frames[-1]
        missing = tuple(f for f in range(first, last + 1) if not os.path.isfile(_frame_file(output_dir, stem, f, ext)))
        if iteration is None:
            label = f"{len(frames)} frames" if len(frames) > 1 else f"frame {first}"
        else:
            seed = jobs[0].seed
            label = "iteration {}\nseed {}".format(iteration + 1, seed if seed is not None else "?")
        specs.append(
            ReadSpec(
                name=read_name(node_name, iteration),
                path=frame_sequence_path(output_dir, stem, ext),
                first=first,
                last=last,
                label=label,
                frames=tuple(frames),
                missing=missing,
            )
        )
    return specs


def _parent(group: Any) -> Any:
    import nuke

    parent_name = group.fullName().rpartition(".")[0]
    return nuke.toNode(parent_name) if parent_name else nuke.root()


def apply_reads(group: Any, specs: List[ReadSpec]) -> List[Any]:
    """Create or update the Read nodes next to ``group`` (main thread)."""
    import nuke

    reads = []
    with _parent(group):
        for i, spec in enumerate(specs):
            read = nuke.toNode(spec.name)
            fresh = read is None or read.Class() != "Read"
            if fresh:
                read = nuke.nodes.Read()
                read.setName(spec.name)
                read.setXYpos(group.xpos() + READ_SPACING_X * i, group.ypos() + READ_OFFSET_Y)
            read["file"].setValue(spec.path)
            for knob, value in (
                ("first", spec.first),
                ("last", spec.last),
                ("origfirst", spec.first),
                ("origlast", spec.last),
            ):
                read[knob].setValue(value)
            read["on_error"].setValue("checkerboard" if spec.missing else "error")
            read["label"].setValue(spec.label)
            if not fresh:
                read["reload"].execute()  # the same file names may hold new pixels
            reads.append(read)
    return reads
