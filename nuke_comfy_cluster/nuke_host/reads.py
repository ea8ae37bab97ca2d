"""Read nodes for a finished run: planned off the main thread, built on it.

A batch delivers one or more frame sequences (one per saving node, image index
and iteration: ``NAME.####.png``, ``NAME_matte.####.png``, ``NAME_i002.####.png``),
each a pattern with ``####`` and the frame range delivered. :func:`plan_reads`
(worker thread) turns them into plain :class:`ReadSpec` records after looking at
the files on disk; :func:`apply_reads` (main thread) creates or updates one Read
per sequence, named after what follows NAME in the file name (``<node>_matte``,
``<node>_i002``; ``<node>_result`` for the main one).

The sequences come from ``BatchSnapshot.sequences`` (records with ``pattern``,
``first``, ``last``, ``label``, ``existed``); a snapshot whose jobs delivered
files without naming their sequence gets them derived from the jobs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ..core.jobs import BatchSnapshot, JobSnapshot
from ..core.paths import frame_sequence_path
from ..core.state import JobState
from .messages import tcl_escape
from .node import parent_group, safe_tag

READ_SPACING_X = 110
READ_OFFSET_Y = 90

_FRAME_TOKEN = re.compile(r"#+|%0?(\d*)d")
_ITERATION = re.compile(r"(?:^|_)i(\d{3,})$")


@dataclass(frozen=True)
class DeliveredSequence:
    """One sequence of frames a batch delivered, in the shape ``BatchSnapshot.sequences`` holds."""

    pattern: str  # absolute, with a #### frame token
    first: int
    last: int
    label: str = ""  # the saving node's label ("matte"); "" for the main one
    existed: Tuple[int, ...] = ()  # frames whose files were there before the batch (now replaced)


@dataclass(frozen=True)
class ReadSpec:
    """One Read node to create or update."""

    name: str
    path: str  # Nuke pattern, forward slashes: folder/name.####.ext
    first: int
    last: int
    label: str
    frames: Tuple[int, ...]  # frames in first..last with a file on disk
    missing: Tuple[int, ...]  # frames in first..last with no file on disk
    existed: Tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing


def read_name(node_name: str, iteration: Optional[int] = None, label: str = "") -> str:
    if iteration is not None:
        return f"{node_name}_i{iteration:03d}"
    return f"{node_name}_{safe_tag(label)}" if label else f"{node_name}_result"


def frame_file(pattern: str, frame: int) -> str:
    """The file of ``frame`` in a ``####`` (or ``%04d``) pattern."""

    def pad(match: Any) -> str:
        token = match.group(0)
        width = len(token) if token.startswith("#") else int(match.group(1) or 0)
        return f"{frame:0{width}d}"

    return _FRAME_TOKEN.sub(pad, pattern, count=1)


def _suffix(pattern: str, sequence_name: str, label: str) -> str:
    """What tells a sequence apart: its file name after the sequence name ("matte_b1_i002"), else its label."""
    stem = os.path.basename(pattern.replace("\\", "/")).split(".", 1)[0]
    if sequence_name and stem.startswith(sequence_name):
        return stem[len(sequence_name) :].strip("_")
    return label


def _caption(suffix: str, on_disk: Tuple[int, ...], first: int, seeds: Dict[int, Optional[int]]) -> str:
    """The Read's label in the node graph: which output, which iteration (and seed), how many frames."""
    iteration = _ITERATION.search(suffix)
    lines = [suffix[: iteration.start()] if iteration else suffix]
    if iteration:
        index = int(iteration.group(1))
        seed = seeds.get(index)
        lines += [f"iteration {index + 1}", "seed {}".format(seed if seed is not None else "?")]
    else:
        lines.append(f"{len(on_disk)} frames" if len(on_disk) > 1 else f"frame {first}")
    return "\n".join(line for line in lines if line)


def specs_from_sequences(
    sequences: Iterable[Any], node_name: str, sequence_name: str = "", seeds: Optional[Dict[int, Optional[int]]] = None
) -> List[ReadSpec]:
    """One ReadSpec per delivered sequence (records with pattern, first, last, label, existed).

    ``seeds`` (iteration -> seed) labels iteration sequences with the seed they used.
    """
    specs: List[ReadSpec] = []
    names: Set[str] = set()
    for seq in sequences:
        first, last = int(seq.first), int(seq.last)
        suffix = _suffix(seq.pattern, sequence_name, str(getattr(seq, "label", "") or ""))
        on_disk = tuple(f for f in range(first, last + 1) if os.path.isfile(frame_file(seq.pattern, f)))
        name = base = read_name(node_name, label=suffix)
        n = 2
        while name in names:  # sequences that look alike still get a Read each
            name, n = f"{base}{n}", n + 1
        names.add(name)
        specs.append(
            ReadSpec(
                name=name,
                path=seq.pattern.replace("\\", "/"),
                first=first,
                last=last,
                label=_caption(suffix, on_disk, first, seeds or {}),
                frames=on_disk,
                missing=tuple(f for f in range(first, last + 1) if f not in on_disk),
                existed=tuple(int(f) for f in getattr(seq, "existed", ()) or ()),
            )
        )
    return specs


def _extension(job: JobSnapshot) -> str:
    # the same output the dispatcher delivered: the first one it made local
    first = next((o for o in job.outputs if o.local_path), None)
    if first is None:
        return ""
    return os.path.splitext(first.filename)[1] or ".png"


def sequences_from_jobs(snapshot: BatchSnapshot, output_dir: str, sequence_name: str) -> List[DeliveredSequence]:
    """The sequences of a batch whose jobs do not name them: one per iteration (or one in all)."""
    groups: Dict[Optional[int], List[JobSnapshot]] = {}
    for job in snapshot.jobs:
        if job.state is JobState.DONE and _extension(job):
            groups.setdefault(job.iteration, []).append(job)
    sequences: List[DeliveredSequence] = []
    for iteration in sorted(groups, key=lambda i: -1 if i is None else i):
        jobs = groups[iteration]
        frames = sorted(j.frame if j.frame is not None else 1 for j in jobs)
        stem = sequence_name if iteration is None else f"{sequence_name}_i{iteration:03d}"
        pattern = frame_sequence_path(output_dir, stem, _extension(jobs[0]))
        sequences.append(DeliveredSequence(pattern, frames[0], frames[-1]))
    return sequences


def plan_reads(snapshot: BatchSnapshot, output_dir: str, sequence_name: str, node_name: str) -> List[ReadSpec]:
    """The Reads a finished batch calls for (none when nothing was delivered)."""
    sequences = list(getattr(snapshot, "sequences", ()) or ())
    if not sequences:
        sequences = sequences_from_jobs(snapshot, output_dir, sequence_name)
    seeds = {j.iteration: j.seed for j in snapshot.jobs if j.iteration is not None}
    return specs_from_sequences(sequences, node_name, sequence_name, seeds)


def apply_reads(group: Any, specs: List[ReadSpec]) -> List[Any]:
    """Create or update the Read nodes next to ``group`` (main thread)."""
    import nuke

    reads = []
    with parent_group(group):
        for i, spec in enumerate(specs):
            read = nuke.toNode(spec.name)
            fresh = read is None or read.Class() != "Read"
            if fresh:
                read = nuke.nodes.Read()
                read.setName(spec.name)
                read.setXYpos(group.xpos() + READ_SPACING_X * i, group.ypos() + READ_OFFSET_Y)
            # fromUserText, not setValue: it takes the range off the end and reads the
            # file's format, so a result at another size than the project keeps its own
            read["file"].fromUserText(f"{spec.path} {spec.first}-{spec.last}")
            for knob, value in (
                ("first", spec.first),
                ("last", spec.last),
                ("origfirst", spec.first),
                ("origlast", spec.last),
            ):
                read[knob].setValue(value)
            read["on_error"].setValue("checkerboard" if spec.missing else "error")
            read["label"].setValue(tcl_escape(spec.label))
            if not fresh or spec.existed:
                read["reload"].execute()  # the same file names may hold new pixels
            reads.append(read)
    return reads
