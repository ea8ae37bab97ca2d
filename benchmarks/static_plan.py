"""Reference plans for batches that pay a setup (model load) per switch, in virtual time.

Used by ``benchmarks/scheduler.py`` to judge the scheduler on servers that must
load a model before a client's first frame there:

* :func:`opt_with_setups` (one client): clairvoyant largest frame first to the
  server where it finishes earliest, a server's first frame carrying the setup
  (the OPT of the other scenarios with setups added). For equal frames it is the
  optimum: it takes the earliest slots of every server.
* :func:`best_static_plan` (several clients): who runs where and in which order,
  each server a sequence of blocks (one client's frames after one setup), found
  by local search from several starting plans (partitions of the servers, clients
  one after another, a greedy list schedule): moving frames between a client's
  blocks, opening and closing blocks, swapping neighbouring blocks. On two clients
  and three servers it matches the exhaustive search (:func:`exhaustive_plan`,
  checked in the tests).

A plan is judged on each client's makespan (its start to its last frame's end):
the max over clients and the mean. The two are searched separately, so each
figure of ours is compared with the best plan for that figure.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = ["Job", "Plan", "opt_with_setups", "best_static_plan", "refine", "exhaustive_plan", "evaluate"]

Block = Tuple[int, int]  # (client index, frames)


@dataclass(frozen=True)
class Job:
    """One client's batch for planning: equal frames of ``work``, after a ``setup`` (work at speed 1)."""

    frames: int
    work: float
    setup: float
    start: float = 0.0


@dataclass(frozen=True)
class Plan:
    blocks: Tuple[Tuple[Block, ...], ...]  # per server, in order
    makespans: Tuple[float, ...]  # per client: its start to its last frame's end

    @property
    def max(self) -> float:
        return max(self.makespans)

    @property
    def mean(self) -> float:
        return sum(self.makespans) / len(self.makespans)


def opt_with_setups(
    works: Sequence[float], speeds: Sequence[float], setup: float, loaded: Sequence[bool] = ()
) -> float:
    """Largest frame first to the earliest finish; a cold server's first frame pays ``setup``.

    ``loaded[i]`` True: server i has the model already (no setup there).
    """
    free = [0.0] * len(speeds)
    used = [bool(loaded[i]) if i < len(loaded) else False for i in range(len(speeds))]
    for w in sorted(works, reverse=True):
        best = min(range(len(speeds)), key=lambda i: free[i] + (w + (0.0 if used[i] else setup)) / speeds[i])
        free[best] += (w + (0.0 if used[best] else setup)) / speeds[best]
        used[best] = True
    return max(free)


def evaluate(blocks: Sequence[Sequence[Block]], jobs: Sequence[Job], speeds: Sequence[float]) -> Tuple[float, ...]:
    """Each client's makespan under this plan (every server starts empty and cold)."""
    end = [job.start for job in jobs]
    for s, seq in enumerate(blocks):
        t = 0.0
        last = -1
        for c, n in seq:
            job = jobs[c]
            t = max(t, job.start)
            if c != last:
                t += job.setup / speeds[s]
                last = c
            t += n * job.work / speeds[s]
            if t > end[c]:
                end[c] = t
    return tuple(e - job.start for e, job in zip(end, jobs))


def _score(makespans: Sequence[float], objective: str) -> Tuple[float, float]:
    mx = max(makespans)
    mean = sum(makespans) / len(makespans)
    return (mx, mean) if objective == "max" else (mean, mx)


def _normal(blocks: List[List[List[int]]]) -> List[List[List[int]]]:
    """Drop empty blocks and merge neighbours of the same client (one setup for both)."""
    out = []
    for seq in blocks:
        merged: List[List[int]] = []
        for c, n in seq:
            if n <= 0:
                continue
            if merged and merged[-1][0] == c:
                merged[-1][1] += n
            else:
                merged.append([c, n])
        out.append(merged)
    return out


def _eft(jobs: Sequence[Job], speeds: Sequence[float], order: Sequence[int], servers: Sequence[Sequence[int]]):
    """Greedy: clients in ``order``, each frame to the allowed server where it ends first."""
    t = [0.0] * len(speeds)
    last = [-1] * len(speeds)
    blocks: List[List[List[int]]] = [[] for _ in speeds]
    for c in order:
        job = jobs[c]
        for _ in range(job.frames):
            best = None
            for s in servers[c]:
                start = max(t[s], job.start)
                fin = start + (job.work + (job.setup if last[s] != c else 0.0)) / speeds[s]
                if best is None or fin < best[0]:
                    best = (fin, s)
            fin, s = best
            t[s] = fin
            if last[s] == c:
                blocks[s][-1][1] += 1
            else:
                blocks[s].append([c, 1])
                last[s] = c
    return blocks


def _interleaved(jobs: Sequence[Job], speeds: Sequence[float]) -> List[List[List[int]]]:
    """Greedy list schedule of every client's frames in turn (a centralized EFT)."""
    t = [0.0] * len(speeds)
    last = [-1] * len(speeds)
    blocks: List[List[List[int]]] = [[] for _ in speeds]
    left = [job.frames for job in jobs]
    while any(left):
        for c, job in enumerate(jobs):
            if not left[c]:
                continue
            left[c] -= 1
            best = min(
                range(len(speeds)),
                key=lambda s: max(t[s], job.start) + (job.work + (job.setup if last[s] != c else 0.0)) / speeds[s],
            )
            t[best] = max(t[best], job.start) + (job.work + (job.setup if last[best] != c else 0.0)) / speeds[best]
            if last[best] == c:
                blocks[best][-1][1] += 1
            else:
                blocks[best].append([c, 1])
                last[best] = c
    return blocks


def _starts(jobs: Sequence[Job], speeds: Sequence[float]) -> List[List[List[List[int]]]]:
    k, m = len(jobs), len(speeds)
    by_speed = sorted(range(m), key=lambda s: -speeds[s])
    starts = [_interleaved(jobs, speeds)]
    everyone = [list(range(m))] * k
    for order in itertools.permutations(range(k)):
        starts.append(_eft(jobs, speeds, order, everyone))  # one after another on all servers
        if len(starts) > 8:
            break
    # Partitions: servers dealt to the clients in speed order, snake-wise and in turn.
    for deal in ("turn", "snake"):
        own: List[List[int]] = [[] for _ in range(k)]
        for i, s in enumerate(by_speed):
            r, q = divmod(i, k)
            c = q if deal == "turn" or r % 2 == 0 else k - 1 - q
            own[c].append(s)
        if all(own):
            starts.append(_eft(jobs, speeds, range(k), own))
    return starts


def _neighbours(blocks: List[List[List[int]]], k: int, frames_only: bool = False):
    """Plans one move away: frames moved between a client's blocks, new blocks, swapped blocks."""
    where = [[(s, i) for s, seq in enumerate(blocks) for i, b in enumerate(seq) if b[0] == c] for c in range(k)]
    for c in range(k):
        for s1, i1 in where[c]:
            n1 = blocks[s1][i1][1]
            for d in sorted({1, 2, max(1, n1 // 2), n1}):
                if d > n1:
                    continue
                for s2, i2 in where[c]:
                    if (s2, i2) == (s1, i1):
                        continue
                    new = [[list(b) for b in seq] for seq in blocks]
                    new[s1][i1][1] -= d
                    new[s2][i2][1] += d
                    yield new
                if frames_only:
                    continue
                for s2 in range(len(blocks)):
                    for pos in {0, len(blocks[s2])}:
                        if d == n1 and s2 == s1:
                            continue
                        new = [[list(b) for b in seq] for seq in blocks]
                        new[s1][i1][1] -= d
                        new[s2].insert(pos, [c, d])
                        yield new
    if frames_only:
        return
    for s, seq in enumerate(blocks):
        for i in range(len(seq)):
            for j in range(i + 1, len(seq)):
                new = [[list(b) for b in q] for q in blocks]
                new[s][i], new[s][j] = new[s][j], new[s][i]
                yield new
            # a whole block to another place, here or on another server
            for s2 in range(len(blocks)):
                for pos in range(len(blocks[s2]) + (0 if s2 == s else 1)):
                    if s2 == s and pos == i:
                        continue
                    new = [[list(b) for b in q] for q in blocks]
                    block = new[s].pop(i)
                    new[s2].insert(pos, block)
                    yield new


def _climb(blocks, jobs, speeds, objective: str, frames_only: bool = False):
    blocks = _normal(blocks)
    best = _score(evaluate(blocks, jobs, speeds), objective)
    improved = True
    while improved:
        improved = False
        for cand in _neighbours(blocks, len(jobs), frames_only):
            cand = _normal(cand)
            score = _score(evaluate(cand, jobs, speeds), objective)
            if score[0] < best[0] - 1e-9 or (score[0] <= best[0] + 1e-9 and score[1] < best[1] - 1e-9):
                blocks, best = cand, score
                improved = True
                break
    return blocks, best


def _kick(blocks, rng: random.Random, k: int, moves: int):
    """A few random moves: the way out of a local optimum."""
    for _ in range(moves):
        options = list(_neighbours(blocks, k))
        if not options:
            break
        blocks = _normal(rng.choice(options))
    return blocks


def best_static_plan(
    jobs: Sequence[Job],
    speeds: Sequence[float],
    objective: str = "max",
    starts: Optional[list] = None,
    kicks: int = 30,
    seed: int = 0,
) -> Plan:
    """The best plan found for ``objective`` "max" (then mean) or "mean" (then max).

    Hill climbing from each start, then ``kicks`` rounds of iterated local search
    (a few random moves from the best plan, climb again, keep it if better).
    Deterministic for a given ``seed``.
    """
    if objective not in ("max", "mean"):
        raise ValueError(objective)
    rng = random.Random(seed)
    best_blocks, best = None, None
    for start in starts if starts is not None else _starts(jobs, speeds):
        blocks, score = _climb(start, jobs, speeds, objective)
        if best is None or score < best:
            best_blocks, best = blocks, score
    for _ in range(kicks):
        blocks, score = _climb(_kick(best_blocks, rng, len(jobs), rng.randint(2, 5)), jobs, speeds, objective)
        if score < best:
            best_blocks, best = blocks, score
    return Plan(tuple(tuple((c, n) for c, n in seq) for seq in best_blocks), evaluate(best_blocks, jobs, speeds))


def refine(plan: Plan, jobs: Sequence[Job], speeds: Sequence[float], objective: str = "max") -> Plan:
    """``plan``'s layout with its frame counts re-balanced for ``jobs`` (e.g. another seed's frames)."""
    start = [[list(b) for b in seq] for seq in plan.blocks]
    blocks, _ = _climb(start, jobs, speeds, objective, frames_only=True)
    return Plan(tuple(tuple((c, n) for c, n in seq) for seq in blocks), evaluate(blocks, jobs, speeds))


def exhaustive_plan(jobs: Sequence[Job], speeds: Sequence[float], objective: str = "max") -> Plan:
    """Every plan with at most one block per client per server (small cases only: tests)."""
    k, m = len(jobs), len(speeds)
    # Per server: an ordered choice of distinct clients.
    orders = [()] + [p for r in range(1, k + 1) for p in itertools.permutations(range(k), r)]
    best: Optional[Tuple[Tuple[float, float], list]] = None
    for layout in itertools.product(orders, repeat=m):
        slots = [[(s, i) for s, seq in enumerate(layout) for i, c2 in enumerate(seq) if c2 == c] for c in range(k)]
        if any(not sl for sl in slots):
            continue
        splits = [_compositions(jobs[c].frames, len(slots[c])) for c in range(k)]
        for counts in itertools.product(*splits):
            blocks = [[[c, 0] for c in seq] for seq in layout]
            for c in range(k):
                for (s, i), n in zip(slots[c], counts[c]):
                    blocks[s][i][1] = n
            score = _score(evaluate(blocks, jobs, speeds), objective)
            if best is None or score < best[0]:
                best = (score, blocks)
    blocks = best[1]
    return Plan(tuple(tuple((c, n) for c, n in seq) for seq in blocks), evaluate(blocks, jobs, speeds))


def _compositions(n: int, parts: int) -> List[Tuple[int, ...]]:
    """Ways to write n as an ordered sum of ``parts`` positive integers."""
    if parts == 1:
        return [(n,)]
    out = []
    for cut in itertools.combinations(range(1, n), parts - 1):
        edges = (0,) + cut + (n,)
        out.append(tuple(edges[i + 1] - edges[i] for i in range(parts)))
    return out
