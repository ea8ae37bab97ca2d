"""Choosing a server for one prompt: pure functions over snapshots.

Batches (frame ranges, iterations) are planned by :mod:`.scheduler`, which learns
each server's speed; this module answers the simpler question "where does this one
prompt go now?" and is what the panel shows as "next".
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .state import ServerSnapshot

LEAST_LOADED = "least_loaded"
ROUND_ROBIN = "round_robin"
PRIORITY = "priority"
STRATEGIES = (LEAST_LOADED, ROUND_ROBIN, PRIORITY)


def available(snapshots: Iterable[ServerSnapshot], now: float, exclude: Iterable[str] = ()) -> list:
    """Enabled, online and not cooling down; ``exclude`` names servers that failed this job."""
    skip = set(exclude)
    return [s for s in snapshots if s.name not in skip and s.is_available(now)]


def _after(names: Sequence[str], last: Optional[str]) -> str:
    """The first name after ``last`` in cyclic name order (round robin among ties)."""
    ordered = sorted(names)
    if last is None:
        return ordered[0]
    for name in ordered:
        if name > last:
            return name
    return ordered[0]


def choose(
    snapshots: Iterable[ServerSnapshot],
    strategy: str = LEAST_LOADED,
    *,
    now: float,
    last_pick: Optional[str] = None,
    exclude: Iterable[str] = (),
) -> Optional[str]:
    """The name of the server a prompt should go to, or None when none is available.

    least_loaded: lowest (observed queue + our submissions not yet seen), then lowest
    priority number, then round robin. priority: lowest priority number, ties round
    robin. round_robin: the next available server after the last pick.
    """
    if strategy not in STRATEGIES:
        raise ValueError("unknown strategy {!r}; expected one of {}".format(strategy, ", ".join(STRATEGIES)))
    candidates = available(snapshots, now, exclude)
    if not candidates:
        return None
    if strategy == LEAST_LOADED:
        best = min((s.load, s.priority) for s in candidates)
        tied = [s.name for s in candidates if (s.load, s.priority) == best]
    elif strategy == PRIORITY:
        best_priority = min(s.priority for s in candidates)
        tied = [s.name for s in candidates if s.priority == best_priority]
    else:
        tied = [s.name for s in candidates]
    return _after(tied, last_pick)
