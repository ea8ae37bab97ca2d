"""Batch scheduler in virtual time: makespan and fairness against OPT, LB and baselines.

    python -m benchmarks.scheduler [--json] [--seeds N] [--quick]

Runs the scenarios of DESIGN.md ("Targets the scheduler is measured against")
in the discrete-event model of :mod:`nuke_comfy_cluster.sim.virtual`, with the
real :class:`~nuke_comfy_cluster.core.scheduler.Scheduler` and three baselines
driven through the same model:

* ``sequential``: one server (the fastest), the next frame sent when the
  previous one is known finished, as single-server integrations do;
* ``round_robin``: every frame sent at once, in turn to each server;
* ``least_queue``: every frame sent at once, each to the least loaded server
  (observed ``queue_remaining`` + frames sent since), ties by priority.

Definitions (per seed, then mean and 95th percentile over seeds):

* makespan: from the first client's start to the last frame's end;
* OPT: the clairvoyant largest-job-first to the earliest-finishing server over
  every frame's real work; LB: total work / total speed;
* fair share of a client: its own work / (total speed / number of clients), the
  makespan it would have alone on 1/N of the cluster; a client's ratio is its
  own makespan (its start to its last frame's end) over that;
* queue wait: time a prompt spends accepted by a server before it runs, in
  units of its own run time.

Every server has the same priority and the speeds are shuffled over the names
per seed, so the policy has to learn them. Exit status 0 when every target
passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from nuke_comfy_cluster.core.scheduler import Scheduler
from nuke_comfy_cluster.sim.virtual import (
    BurstClient,
    Client,
    PolicyClient,
    SequentialClient,
    ServerSpec,
    World,
    frame_works,
    lower_bound,
    opt_makespan,
)

SERVER_SETS: Dict[str, Tuple[float, ...]] = {
    "2 GPUs 1/0.5": (1.0, 0.5),
    "4 GPUs 1/1/0.5/0.25": (1.0, 1.0, 0.5, 0.25),
    "8 GPUs 1.5/1/1/0.8/0.5/0.5/0.3/0.25": (1.5, 1.0, 1.0, 0.8, 0.5, 0.5, 0.3, 0.25),
}
BASE_FRAME = 10.0  # seconds of work per frame at speed 1
NOISE = 0.2  # +-20 % per frame, uniform
BASELINES = ("sequential", "round_robin", "least_queue")


@dataclass(frozen=True)
class Scenario:
    name: str
    servers: str  # a key of SERVER_SETS
    frames: Tuple[int, ...]  # one entry per client
    ttl: Optional[float] = None  # None = websocket push; seconds = polling only
    #: (metric, statistic, limit): e.g. ("ratio_opt", "mean", 1.03)
    targets: Tuple[Tuple[str, str, float], ...] = ()
    #: clients whose fairness is judged (indices); None = all
    judged: Optional[Tuple[int, ...]] = None
    steady: bool = False  # queue wait measured over the middle of the run only
    #: the policy starts from frame times learned on two frames per server of an
    #: earlier batch (Scheduler.learn_from), instead of probing: informational
    warm: bool = False

    @property
    def speeds(self) -> Tuple[float, ...]:
        return SERVER_SETS[self.servers]


@dataclass
class Run:
    """One seed of one scenario under one strategy."""

    ratio_opt: float
    ratio_lb: float
    worst_fair: float
    queue_wait: float


@dataclass
class Summary:
    runs: List[Run] = field(default_factory=list)

    def stat(self, metric: str, how: str) -> float:
        values = sorted(getattr(r, metric) for r in self.runs)
        if how == "mean":
            return statistics.fmean(values)
        # Nearest-rank 95th percentile.
        return values[max(0, math.ceil(0.95 * len(values)) - 1)]


def scenarios() -> List[Scenario]:
    out: List[Scenario] = []
    for key in SERVER_SETS:
        out.append(
            Scenario("push, 1 client", key, (24,), targets=(("ratio_opt", "mean", 1.03), ("ratio_opt", "p95", 1.08)))
        )
        out.append(Scenario("push, 1 client", key, (200,), targets=(("ratio_opt", "mean", 1.01),)))
    for ttl, limit in ((2.0, 1.03), (5.0, 1.05), (10.0, 1.10)):
        for key in SERVER_SETS:
            out.append(Scenario("polling only", key, (24,), ttl=ttl, targets=(("ratio_opt", "mean", limit),)))
    for key in SERVER_SETS:
        out.append(
            Scenario("polling only, no herding", key, (24,) * 4, ttl=10.0, targets=(("ratio_lb", "mean", 1.10),))
        )
    for key in SERVER_SETS:
        out.append(
            Scenario(
                "push, 4 clients",
                key,
                (24,) * 4,
                targets=(("ratio_lb", "mean", 1.03), ("worst_fair", "mean", 1.10), ("worst_fair", "p95", 1.25)),
            )
        )
    for key in SERVER_SETS:
        out.append(
            Scenario(
                "push, mixed 200+3x24",
                key,
                (200, 24, 24, 24),
                targets=(("worst_fair", "mean", 1.15),),
                judged=(1, 2, 3),
            )
        )
    for key in SERVER_SETS:
        out.append(Scenario("push, 1 client, warm", key, (24,), warm=True))
    for ttl in (2.0, 5.0, 10.0):
        for key in SERVER_SETS:
            out.append(Scenario("polling only, warm", key, (24,), ttl=ttl, warm=True))
    for key in SERVER_SETS:
        out.append(Scenario("push, steady state", key, (60,) * 4, targets=(("queue_wait", "mean", 1.0),), steady=True))
    return out


def _world(sc: Scenario, seed: int) -> Tuple[List[ServerSpec], List[List[float]], List[float]]:
    rng = random.Random("%s|%s|%s|%s|%d" % (sc.name, sc.servers, sc.frames, sc.ttl, seed))
    speeds = list(sc.speeds)
    rng.shuffle(speeds)
    specs = [ServerSpec("gpu%d" % i, s) for i, s in enumerate(speeds)]
    works = [frame_works(n, rng, BASE_FRAME, NOISE) for n in sc.frames]
    # Clients start within a second of each other (the first at 0): artists
    # pressing Submit at about the same time, not in lock step.
    starts = [0.0] + [rng.uniform(0.0, 1.0) for _ in sc.frames[1:]]
    return specs, works, starts


def _earlier_batch(specs: Sequence[ServerSpec], seed: int) -> Scheduler:
    """What a previous batch of the same workflow learned: two frames per server."""
    rng = random.Random("earlier|%d" % seed)
    earlier = Scheduler(lambda: 0.0)
    for spec in specs:
        for work in frame_works(2, rng, BASE_FRAME, NOISE):
            earlier.job_finished(spec.name, 0.0, work / spec.speed)
    return earlier


def run_once(sc: Scenario, seed: int, strategy: str = "policy") -> Tuple[Run, World, List[Client]]:
    """Run one seed of a scenario with ``strategy`` = "policy" or one of BASELINES."""
    specs, works, starts = _world(sc, seed)
    world = World(specs, seed)
    fastest = max(specs, key=lambda s: s.speed).name
    clients: List[Client] = []
    for i, (w, start) in enumerate(zip(works, starts)):
        name = "client%d" % i
        if strategy == "policy":
            c: Client = PolicyClient(world, name, w, start=start, ttl=sc.ttl)
            if sc.warm:
                c.scheduler.learn_from(_earlier_batch(specs, seed))
        elif strategy == "sequential":
            c = SequentialClient(world, name, w, fastest, start=start, ttl=sc.ttl)
        else:
            c = BurstClient(world, name, w, strategy, start=start, ttl=sc.ttl)
        clients.append(world.add(c))
    world.run()
    if not all(c.done for c in clients):
        raise RuntimeError("%s seed %d (%s): frames left unfinished" % (sc.name, seed, strategy))
    return _measure(sc, world, clients, works), world, clients


def _measure(sc: Scenario, world: World, clients: Sequence[Client], works: Sequence[Sequence[float]]) -> Run:
    every = [w for ws in works for w in ws]
    speeds = [s.speed for s in world.specs]
    first = min(c.start for c in clients)
    makespan = max(c.result.end for c in clients) - first
    total_speed = sum(speeds)
    n = len(clients)
    judged = sc.judged if sc.judged is not None else range(n)
    worst = max(clients[i].result.makespan / (clients[i].result.work * n / total_speed) for i in judged)
    jobs = [j for c in clients for j in c.result.jobs]
    if sc.steady:
        lo, hi = first + 0.2 * makespan, first + 0.8 * makespan
        jobs = [j for j in jobs if lo <= j.started <= hi] or jobs
    wait = statistics.fmean(j.wait / j.duration for j in jobs)
    return Run(makespan / opt_makespan(every, speeds), makespan / lower_bound(every, speeds), worst, wait)


def evaluate(sc: Scenario, seeds: Sequence[int], baselines: Sequence[str] = BASELINES) -> Dict[str, Summary]:
    out = {s: Summary() for s in ("policy",) + tuple(baselines)}
    for seed in seeds:
        for strategy, summary in out.items():
            summary.runs.append(run_once(sc, seed, strategy)[0])
    return out


def _target_text(sc: Scenario) -> str:
    names = {
        "ratio_opt": "x OPT",
        "ratio_lb": "x LB",
        "worst_fair": "x fair share",
        "queue_wait": "frame times in queue",
    }
    if not sc.targets:
        return "none (informational)"
    return ", ".join("%s <= %g %s" % (how, limit, names[metric]) for metric, how, limit in sc.targets)


def report(sc: Scenario, results: Dict[str, Summary]) -> dict:
    ours = results["policy"]
    ok = all(ours.stat(metric, how) <= limit for metric, how, limit in sc.targets)
    row = {
        "name": sc.name,
        "servers": sc.servers,
        "frames": list(sc.frames) if len(sc.frames) > 1 else sc.frames[0],
        "clients": len(sc.frames),
        "ttl_s": sc.ttl,
        "mean_ratio_opt": round(ours.stat("ratio_opt", "mean"), 4),
        "p95_ratio_opt": round(ours.stat("ratio_opt", "p95"), 4),
        "mean_ratio_lb": round(ours.stat("ratio_lb", "mean"), 4),
        "p95_ratio_lb": round(ours.stat("ratio_lb", "p95"), 4),
        "worst_client_fair_share": round(ours.stat("worst_fair", "mean"), 4),
        "p95_worst_client_fair_share": round(ours.stat("worst_fair", "p95"), 4),
        "mean_queue_wait_frames": round(ours.stat("queue_wait", "mean"), 4),
        # OPT is a heuristic too: how far it is from the fluid bound here
        "mean_opt_over_lb": round(statistics.fmean(r.ratio_lb / r.ratio_opt for r in ours.runs), 4),
        "seeds": len(ours.runs),
        "target": _target_text(sc),
        "pass": ok,
        "baselines": {
            name: {
                "mean_ratio_opt": round(s.stat("ratio_opt", "mean"), 4),
                "mean_ratio_lb": round(s.stat("ratio_lb", "mean"), 4),
                "worst_client_fair_share": round(s.stat("worst_fair", "mean"), 4),
                "mean_queue_wait_frames": round(s.stat("queue_wait", "mean"), 4),
            }
            for name, s in results.items()
            if name != "policy"
        },
    }
    return row


_BASELINE_METRIC = {
    "ratio_opt": ("mean_ratio_opt", "xOPT"),
    "ratio_lb": ("mean_ratio_lb", "xLB"),
    "worst_fair": ("worst_client_fair_share", "xfair"),
    "queue_wait": ("mean_queue_wait_frames", "wait"),
}


def _table(rows: List[dict], scs: List[Scenario]) -> str:
    fmt = "%-25s %-28s %-11s %-4s | %-11s | %-11s | %-11s | %-4s | %-21s | %s"
    head = fmt % (
        "scenario",
        "server speeds",
        "frames",
        "ttl",
        "xOPT mn/p95",
        "xLB mn/p95",
        "fair mn/p95",
        "wait",
        "baselines seq/rr/lq",
        "target",
    )
    lines = [head, "-" * len(head)]
    for r, sc in zip(rows, scs):
        b = r["baselines"]
        key, unit = _BASELINE_METRIC[
            sc.targets[0][0] if sc.targets else ("ratio_opt" if len(sc.frames) == 1 else "ratio_lb")
        ]
        frames = r["frames"] if isinstance(r["frames"], int) else "+".join(str(f) for f in r["frames"])
        fair = "-"
        if r["clients"] > 1:
            fair = "%.3f %.3f" % (r["worst_client_fair_share"], r["p95_worst_client_fair_share"])
        lines.append(
            fmt
            % (
                r["name"],
                r["servers"].split(" ", 2)[-1],
                frames,
                "push" if r["ttl_s"] is None else "%gs" % r["ttl_s"],
                "%.3f %.3f" % (r["mean_ratio_opt"], r["p95_ratio_opt"]),
                "%.3f %.3f" % (r["mean_ratio_lb"], r["p95_ratio_lb"]),
                fair,
                "%.2f" % r["mean_queue_wait_frames"],
                "/".join("%.2f" % b[n][key] for n in BASELINES) + " " + unit,
                ("" if not sc.targets else "PASS " if r["pass"] else "FAIL ") + r["target"],
            )
        )
    lines.append("")
    lines.append("xOPT, xLB: makespan over OPT / LB; fair: worst judged client's makespan over its fair share;")
    lines.append("wait: mean queue wait in frame times; baselines on the target's first metric.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per scenario (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 seeds, for a smoke run")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="first seed (default 0); other ranges check for over-fitting"
    )
    parser.add_argument("--only", default="", help="run only the scenarios whose name or servers contain this text")
    args = parser.parse_args(argv)
    count = 5 if args.quick else max(1, args.seeds)
    seeds = range(args.first_seed, args.first_seed + count)
    t0 = time.perf_counter()
    chosen = [sc for sc in scenarios() if args.only in sc.name or args.only in sc.servers]
    rows = [report(sc, evaluate(sc, seeds)) for sc in chosen]
    elapsed = time.perf_counter() - t0
    all_pass = all(r["pass"] for r in rows)
    if args.json:
        print(
            json.dumps(
                {"scenarios": rows, "all_pass": all_pass, "seeds": len(seeds), "elapsed_s": round(elapsed, 1)}, indent=1
            )
        )
    else:
        print(_table(rows, chosen))
        print(
            "\n%d seeds per scenario, %.1f s; all targets %s" % (len(seeds), elapsed, "PASS" if all_pass else "NOT met")
        )
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
