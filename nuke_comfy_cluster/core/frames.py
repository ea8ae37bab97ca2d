"""Frame lists: ``1001-1024``, ``5``, ``1-10x2``, ``1,3,5-7``, parsed lazily and bounded.

A frame list is kept as its ranges, never expanded: ``1-3000000`` costs three
integers, and a batch refuses more than :data:`MAX_FRAMES` frames with a message
rather than growing until the machine runs out of memory.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, List, Sequence, Tuple

from .errors import ConfigError

#: the most frames one batch may hold (each frame is a prompt and a file)
MAX_FRAMES = 100_000

_PART = re.compile(r"(-?\d+)(?:\s*-\s*(-?\d+)(?:\s*[xX:]\s*(\d+))?)?")


class FrameList(Sequence[int]):
    """An ordered, duplicate-free list of frames stored as ``(first, last, step)`` ranges."""

    def __init__(self, ranges: Iterable[Tuple[int, int, int]], text: str = "") -> None:
        self._ranges: List[range] = [range(a, b + 1, s) for a, b, s in ranges]
        self._starts: List[int] = []
        total = 0
        for r in self._ranges:
            self._starts.append(total)
            total += len(r)
        self._len = total
        self.text = text or ",".join(_range_text(r) for r in self._ranges)

    @classmethod
    def of(cls, frames: Iterable[int]) -> FrameList:
        """From explicit frames (duplicates refused), compressed into ranges."""
        items = list(frames)
        if len(set(items)) != len(items):
            raise ValueError("frame list has duplicates: each frame is rendered once")
        ranges: List[Tuple[int, int, int]] = []
        for f in items:
            if ranges and ranges[-1][1] + 1 == f and ranges[-1][2] == 1:
                ranges[-1] = (ranges[-1][0], f, 1)
            else:
                ranges.append((f, f, 1))
        return cls(ranges)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        for r in self._ranges:
            yield from r

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        for start, r in zip(reversed(self._starts), reversed(self._ranges)):
            if index >= start:
                return r[index - start]
        raise IndexError(index)  # pragma: no cover - unreachable

    def __contains__(self, frame: object) -> bool:
        return any(frame in r for r in self._ranges)

    def __repr__(self) -> str:
        return f"FrameList({self.text!r})"

    @property
    def first(self) -> int:
        return self[0]

    @property
    def last(self) -> int:
        return self[-1]


def _range_text(r: range) -> str:
    last = r[-1]
    if r.start == last:
        return str(r.start)
    return f"{r.start}-{last}" + (f"x{r.step}" if r.step != 1 else "")


def parse_frames(text: str, limit: int = MAX_FRAMES) -> FrameList:
    """Parse a frame list; an empty, malformed, overlapping or too long one is a ConfigError."""
    if text is None or not str(text).strip():
        raise ConfigError("--frames is empty: give a frame or a range, e.g. 1001-1024 or 1,3,5-7")
    ranges: List[Tuple[int, int, int]] = []
    total = 0
    for part in str(text).split(","):
        part = part.strip()
        m = _PART.fullmatch(part)
        if not m:
            raise ConfigError(f"--frames: cannot read {part!r}; expected e.g. 1001-1024, 1-10x2 or 1,3,5-7")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3) or 1)
        if last < first:
            raise ConfigError(f"--frames: {part!r} is an empty range (the last frame comes before the first)")
        if step < 1:
            raise ConfigError(f"--frames: {part!r} has a step of 0")
        last = first + (last - first) // step * step
        count = (last - first) // step + 1
        total += count
        if total > limit:
            raise ConfigError(
                f"--frames {text!r} names {_count(text, limit)} frames; one batch holds at most {limit:,} "
                "(split the range into several batches)"
            )
        ranges.append((first, last, step))
    frames = FrameList(ranges, text=str(text).strip())
    _refuse_overlaps(frames, text)
    return frames


def _count(text: str, limit: int) -> str:
    try:
        n = 0
        for part in text.split(","):
            m = _PART.fullmatch(part.strip())
            if m:
                a, b, s = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
                n += max(0, (b - a) // max(s, 1) + 1)
        return f"{n:,}"
    except ValueError:  # pragma: no cover - the text was parsed before
        return f"more than {limit:,}"


def _refuse_overlaps(frames: FrameList, text: str) -> None:
    # ranges are few (one per comma): compare them pairwise without expanding them
    rs = frames._ranges  # noqa: SLF001 - same module
    for i, a in enumerate(rs):
        for b in rs[i + 1 :]:
            lo, hi = max(a.start, b.start), min(a[-1], b[-1])
            if lo > hi:
                continue
            # the first frame of b at or after lo that a also holds
            for f in range(lo, min(hi, lo + a.step * b.step) + 1):
                if f in a and f in b:
                    raise ConfigError(f"--frames: {text!r} names a frame twice (frame {f})")
