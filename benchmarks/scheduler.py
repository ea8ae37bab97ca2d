"""Batch scheduler in virtual time: makespan and fairness against OPT, LB and baselines.

    python -m benchmarks.scheduler [--json] [--seeds N] [--quick] [--only TEXT]
    python -m benchmarks.scheduler --scale [--json]

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

Scenarios whose name contains "model" give each client's frames a model that a
server must load (a setup of ``setup_s`` seconds at speed 1, divided by the
server's speed, paid by a prompt that finds another model loaded; ComfyUI's
classic cache). They add a fourth baseline, ``present``: the same policy told
nothing of the cache (it learns a cold frame's time as a frame time and plans as
if every server were warm), which is how the scheduler behaved before it knew of
setups. Their references:

* one client: OPT with setups (clairvoyant largest frame first to the server
  where it ends first, a server's first frame paying the setup);
* several clients: the best static plan (who runs where and in which order, one
  setup per switch; :mod:`benchmarks.static_plan`), searched separately for the
  max and for the mean over clients of each client's makespan; ours is compared
  on both (``plan_max``, ``plan_mean``).

``--scale`` runs one client on 1/0.5/0.25 with 100 to 100,000 frames and prints
the client's CPU time per frame (deciding: building the server records and
planning), plans per frame, and the most of our prompts one server held, against
the same policy without the hard window cap; also with a lagging client that
reads its messages only every two frame times (too busy to keep up: it hears of
a frame's start together with its end, and the learned frame time collapses).

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

from benchmarks import static_plan
from nuke_comfy_cluster.core.scheduler import Scheduler
from nuke_comfy_cluster.sim.virtual import Client, ServerSpec, World, frame_works, lower_bound, opt_makespan
from nuke_comfy_cluster.sim.virtual_clients import BurstClient, PolicyClient, SequentialClient

SERVER_SETS: Dict[str, Tuple[float, ...]] = {
    "2 GPUs 1/0.5": (1.0, 0.5),
    "4 GPUs 1/1/0.5/0.25": (1.0, 1.0, 0.5, 0.25),
    "8 GPUs 1.5/1/1/0.8/0.5/0.5/0.3/0.25": (1.5, 1.0, 1.0, 0.8, 0.5, 0.5, 0.3, 0.25),
    "3 GPUs 1/0.5/0.25": (1.0, 0.5, 0.25),
}
CLASSIC_SETS = tuple(SERVER_SETS)[:3]  # the scenarios without models
MODEL_SETS = ("3 GPUs 1/0.5/0.25", "8 GPUs 1.5/1/1/0.8/0.5/0.5/0.3/0.25")
BASE_FRAME = 10.0  # seconds of work per frame at speed 1
NOISE = 0.2  # +-20 % per frame, uniform
BASELINES = ("sequential", "round_robin", "least_queue")
PRESENT = "present"  # the policy told nothing of the servers' cache


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
    #: earlier batch (Scheduler.learn_from), instead of probing
    warm: bool = False
    #: model load in frame times (of work at speed 1); with ``models``
    setup: float = 0.0
    #: "" = frames name no model; "same" = one model for every client; "different" = one per client
    models: str = ""
    #: one client runs a batch of one model, then a second batch of another (judged on the second)
    second_batch: bool = False
    #: the policy takes back a cold probe that would end after the rest of the batch
    #: (Scheduler(withdraw_probes=True): the dispatcher interrupts it)
    withdraw: bool = True

    @property
    def speeds(self) -> Tuple[float, ...]:
        return SERVER_SETS[self.servers]

    @property
    def setup_s(self) -> float:
        return self.setup * BASE_FRAME if self.models else 0.0

    @property
    def strategies(self) -> Tuple[str, ...]:
        return ((PRESENT,) if self.models else ()) + BASELINES


@dataclass
class Run:
    """One seed of one scenario under one strategy."""

    ratio_opt: float
    ratio_lb: float
    worst_fair: float
    queue_wait: float
    #: several clients with models: max / mean client makespan over the best static plan's
    plan_max: float = 0.0
    plan_mean: float = 0.0
    loads: int = 0  # setups paid on all servers
    #: policy clients' CPU time deciding, per frame (not deterministic: not compared)
    cpu_ms: float = field(default=0.0, compare=False)


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
    for key in CLASSIC_SETS:
        out.append(
            Scenario("push, 1 client", key, (24,), targets=(("ratio_opt", "mean", 1.03), ("ratio_opt", "p95", 1.08)))
        )
        out.append(Scenario("push, 1 client", key, (200,), targets=(("ratio_opt", "mean", 1.01),)))
    for ttl, limit in ((2.0, 1.03), (5.0, 1.05), (10.0, 1.10)):
        for key in CLASSIC_SETS:
            out.append(Scenario("polling only", key, (24,), ttl=ttl, targets=(("ratio_opt", "mean", limit),)))
    for key in CLASSIC_SETS:
        out.append(
            Scenario("polling only, no herding", key, (24,) * 4, ttl=10.0, targets=(("ratio_lb", "mean", 1.10),))
        )
    for key in CLASSIC_SETS:
        out.append(
            Scenario(
                "push, 4 clients",
                key,
                (24,) * 4,
                targets=(("ratio_lb", "mean", 1.03), ("worst_fair", "mean", 1.10), ("worst_fair", "p95", 1.25)),
            )
        )
    for key in CLASSIC_SETS:
        out.append(
            Scenario(
                "push, mixed 200+3x24",
                key,
                (200, 24, 24, 24),
                targets=(("worst_fair", "mean", 1.15),),
                judged=(1, 2, 3),
            )
        )
    for key in CLASSIC_SETS:
        out.append(Scenario("push, 1 client, warm", key, (24,), warm=True))
    for ttl in (2.0, 5.0, 10.0):
        for key in CLASSIC_SETS:
            out.append(Scenario("polling only, warm", key, (24,), ttl=ttl, warm=True))
    for key in CLASSIC_SETS:
        out.append(Scenario("push, steady state", key, (60,) * 4, targets=(("queue_wait", "mean", 1.0),), steady=True))
    return out + model_scenarios()


def model_scenarios() -> List[Scenario]:
    """Frames that need a model loaded (DESIGN.md: "with model loads")."""
    one = (("ratio_opt", "mean", 1.05),)
    plan = (("plan_max", "mean", 1.25), ("plan_mean", "mean", 1.25))
    out: List[Scenario] = []
    for setup in (1.0, 4.0, 20.0):
        for key in MODEL_SETS:
            out.append(
                Scenario("model, 1 client, costs known", key, (24,), warm=True, setup=setup, models="same", targets=one)
            )
    for setup in (1.0, 4.0, 20.0):
        for key in MODEL_SETS:
            out.append(Scenario("model, 1 client, nothing known", key, (24,), setup=setup, models="same", targets=one))
    for setup in (1.0, 4.0, 20.0):
        out.append(
            Scenario(
                "model, 1 client, nothing known, no withdrawal",
                MODEL_SETS[1],
                (24,),
                setup=setup,
                models="same",
                withdraw=False,
            )
        )
    for key in MODEL_SETS:
        out.append(
            Scenario(
                "model, change between batches",
                key,
                (24, 24),
                warm=False,
                setup=4.0,
                models="different",
                second_batch=True,
                targets=one,
            )
        )
    for clients in (2, 4):
        for key in MODEL_SETS:
            frames = 12 if key.startswith("3 ") else 24
            out.append(
                Scenario(
                    "model, %d clients, different models" % clients,
                    key,
                    (frames,) * clients,
                    warm=True,
                    setup=4.0,
                    models="different",
                    targets=plan,
                )
            )
    for clients in (2, 4):
        for key in MODEL_SETS:
            frames = 12 if key.startswith("3 ") else 24
            out.append(
                Scenario(
                    "model, %d clients, different, nothing known" % clients,
                    key,
                    (frames,) * clients,
                    setup=4.0,
                    models="different",
                )
            )
    out.append(Scenario("model, 4 clients, same model", MODEL_SETS[1], (24,) * 4, warm=True, setup=4.0, models="same"))
    out.append(
        Scenario(
            "model, mixed 200+3x24, different",
            MODEL_SETS[1],
            (200, 24, 24, 24),
            warm=True,
            setup=4.0,
            models="different",
            judged=(1, 2, 3),
        )
    )
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


def _earlier_batch(specs: Sequence[ServerSpec], seed: int, setup: float = 0.0, told: bool = True) -> Scheduler:
    """What a previous batch of the same workflow learned: two frames per server.

    With a ``setup``, the first of them ran cold; ``told``: the scheduler was told
    so (else it learned the cold run as a frame time, as the present policy does).
    """
    rng = random.Random("earlier|%d" % seed)
    earlier = Scheduler(lambda: 0.0)
    for spec in specs:
        for i, work in enumerate(frame_works(2, rng, BASE_FRAME, NOISE)):
            if not setup:
                earlier.job_finished(spec.name, 0.0, work / spec.speed)
            elif i == 0 and told:
                earlier.job_finished(spec.name, 0.0, (setup + work) / spec.speed, setup / spec.speed, cold=True)
            elif i == 0:
                earlier.job_finished(spec.name, 0.0, (setup + work) / spec.speed)
            else:
                earlier.job_finished(
                    spec.name, 0.0, work / spec.speed, 0.0 if told else None, cold=False if told else None
                )
    return earlier


def _client(
    sc: Scenario,
    world: World,
    i: int,
    works: Sequence[float],
    start: float,
    strategy: str,
    fastest: str,
    model: Optional[str],
) -> Client:
    name = "client%d" % i
    kw = {"model": model, "setup": sc.setup_s} if model is not None else {}
    if strategy == "policy" and model is not None:
        c: Client = PolicyClient(
            world, name, works, start=start, ttl=sc.ttl, withdraw_probes=sc.withdraw, measure_cpu=True, **kw
        )
    elif strategy in ("policy", PRESENT):
        c = PolicyClient(world, name, works, start=start, ttl=sc.ttl, cache_info="none", measure_cpu=bool(model), **kw)
    elif strategy == "sequential":
        c = SequentialClient(world, name, works, fastest, start=start, ttl=sc.ttl, **kw)
    else:
        c = BurstClient(world, name, works, strategy, start=start, ttl=sc.ttl, **kw)
    return c


def _model(sc: Scenario, i: int) -> Optional[str]:
    if not sc.models:
        return None
    return "m0" if sc.models == "same" else "m%d" % i


def run_once(sc: Scenario, seed: int, strategy: str = "policy") -> Tuple[Run, World, List[Client]]:
    """Run one seed of a scenario with ``strategy`` = "policy", "present" or one of BASELINES."""
    specs, works, starts = _world(sc, seed)
    world = World(specs, seed)
    fastest = max(specs, key=lambda s: s.speed).name
    clients: List[Client] = []
    if sc.second_batch:
        first = world.add(_client(sc, world, 0, works[0], 0.0, strategy, fastest, _model(sc, 0)))
        world.run()
        # The same artist, the next shot: another model, the servers still hold the first one.
        second = _client(sc, world, 1, works[1], world.now + 1.0, strategy, fastest, _model(sc, 1))
        if isinstance(second, PolicyClient):
            second.scheduler.learn_from(first.scheduler)
        clients = [first, world.add(second)]
        world.run()
    else:
        for i, (w, start) in enumerate(zip(works, starts)):
            c = _client(sc, world, i, w, start, strategy, fastest, _model(sc, i))
            if sc.warm and isinstance(c, PolicyClient):
                c.scheduler.learn_from(_earlier_batch(specs, seed, sc.setup_s, told=strategy == "policy"))
            clients.append(world.add(c))
        world.run()
    if not all(c.done for c in clients):
        raise RuntimeError("%s seed %d (%s): frames left unfinished" % (sc.name, seed, strategy))
    return _measure(sc, world, clients, works, seed), world, clients


def _measure(
    sc: Scenario, world: World, clients: Sequence[Client], works: Sequence[Sequence[float]], seed: int = 0
) -> Run:
    speeds = [s.speed for s in world.specs]
    frames = sum(len(w) for w in works)
    cpu = sum(c.cpu_s for c in clients if isinstance(c, PolicyClient)) * 1000.0 / frames
    loads = sum(srv.loads for srv in world.servers.values())
    if sc.second_batch:
        # Judged on the second batch: every server holds the first batch's model.
        c = clients[1]
        ratio = c.result.makespan / static_plan.opt_with_setups(works[1], speeds, sc.setup_s)
        fair = c.result.makespan / (c.result.work / sum(speeds))
        wait = statistics.fmean(j.wait / j.duration for j in c.result.jobs)
        return Run(ratio, c.result.makespan / lower_bound(works[1], speeds), fair, wait, loads=loads, cpu_ms=cpu)
    run = _measure_shared(sc, world, clients, works)
    run.loads, run.cpu_ms = loads, cpu
    if sc.models == "same" or (sc.models and len(clients) == 1):
        # One model for every frame: OPT with one setup per server used.
        every = [w for ws in works for w in ws]
        makespan = max(c.result.end for c in clients) - min(c.start for c in clients)
        run.ratio_opt = makespan / static_plan.opt_with_setups(every, speeds, sc.setup_s)
    if sc.models == "different" and len(clients) > 1 and sc.judged is None:
        best_max, best_mean = _reference_plans(sc, seed, works, [c.start for c in clients])
        spans = [c.result.makespan for c in clients]
        run.plan_max = max(spans) / best_max.max
        run.plan_mean = statistics.fmean(spans) / best_mean.mean
    return run


def _measure_shared(sc: Scenario, world: World, clients: Sequence[Client], works: Sequence[Sequence[float]]) -> Run:
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


_NOMINAL: Dict[Tuple[str, Tuple[int, ...], float], Tuple[static_plan.Plan, static_plan.Plan]] = {}


def _reference_plans(
    sc: Scenario, seed: int, works: Sequence[Sequence[float]], starts: Sequence[float]
) -> Tuple[static_plan.Plan, static_plan.Plan]:
    """The best static plans (for the max, for the mean) for this seed's frames.

    Searched once per scenario on nominal frames, then re-balanced for each seed's
    frames and start times (the search is the slow part).
    """
    speeds = list(sc.speeds)
    key = (sc.servers, sc.frames, sc.setup)
    if key not in _NOMINAL:
        nominal = [static_plan.Job(n, BASE_FRAME, sc.setup_s) for n in sc.frames]
        _NOMINAL[key] = (
            static_plan.best_static_plan(nominal, speeds, "max"),
            static_plan.best_static_plan(nominal, speeds, "mean"),
        )
    jobs = [static_plan.Job(len(w), statistics.fmean(w), sc.setup_s, s) for w, s in zip(works, starts)]
    best_max, best_mean = _NOMINAL[key]
    return static_plan.refine(best_max, jobs, speeds, "max"), static_plan.refine(best_mean, jobs, speeds, "mean")


def evaluate(sc: Scenario, seeds: Sequence[int], baselines: Optional[Sequence[str]] = None) -> Dict[str, Summary]:
    others = sc.strategies if baselines is None else tuple(baselines)
    out = {s: Summary() for s in ("policy",) + others}
    for seed in seeds:
        for strategy, summary in out.items():
            summary.runs.append(run_once(sc, seed, strategy)[0])
    return out


_METRIC_NAMES = {
    "ratio_opt": "x OPT",
    "ratio_lb": "x LB",
    "worst_fair": "x fair share",
    "queue_wait": "frame times in queue",
    "plan_max": "x best plan (max over clients)",
    "plan_mean": "x best plan (mean over clients)",
}


def _target_text(sc: Scenario) -> str:
    if not sc.targets:
        return "none (informational)"
    return ", ".join("%s <= %g %s" % (how, limit, _METRIC_NAMES[metric]) for metric, how, limit in sc.targets)


def has_plan(sc: Scenario) -> bool:
    return sc.models == "different" and len(sc.frames) > 1 and sc.judged is None and not sc.second_batch


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
        "baselines": {name: _figures(sc, s) for name, s in results.items() if name != "policy"},
    }
    if sc.models:
        row.update(
            {
                "models": sc.models,
                "setup_s": sc.setup_s,
                "costs_known": sc.warm,
                "second_batch": sc.second_batch,
                "mean_loads": round(ours.stat("loads", "mean"), 2),
                "cpu_ms_per_frame": round(ours.stat("cpu_ms", "mean"), 4),
            }
        )
        if has_plan(sc):
            for metric in ("plan_max", "plan_mean"):
                row["mean_ratio_" + metric] = round(ours.stat(metric, "mean"), 4)
                row["p95_ratio_" + metric] = round(ours.stat(metric, "p95"), 4)
    return row


def _figures(sc: Scenario, s: Summary) -> dict:
    out = {
        "mean_ratio_opt": round(s.stat("ratio_opt", "mean"), 4),
        "mean_ratio_lb": round(s.stat("ratio_lb", "mean"), 4),
        "worst_client_fair_share": round(s.stat("worst_fair", "mean"), 4),
        "mean_queue_wait_frames": round(s.stat("queue_wait", "mean"), 4),
    }
    if sc.models:
        out["mean_loads"] = round(s.stat("loads", "mean"), 2)
        out["cpu_ms_per_frame"] = round(s.stat("cpu_ms", "mean"), 4)
        if has_plan(sc):
            out["mean_ratio_plan_max"] = round(s.stat("plan_max", "mean"), 4)
            out["mean_ratio_plan_mean"] = round(s.stat("plan_mean", "mean"), 4)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per scenario (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 seeds, for a smoke run (--scale: up to 10,000 frames)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="first seed (default 0); other ranges check for over-fitting"
    )
    parser.add_argument("--only", default="", help="run only the scenarios whose name or servers contain this text")
    parser.add_argument("--scale", action="store_true", help="the scale benchmark (100 to 100,000 frames) instead")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.scale:
        from benchmarks.scheduler_scale import SCALE_FRAMES, _scale_table, run_scale

        rows, ok = run_scale(10000 if args.quick else max(SCALE_FRAMES))
        elapsed = time.perf_counter() - t0
        if args.json:
            print(json.dumps({"scale": rows, "all_pass": ok, "elapsed_s": round(elapsed, 1)}, indent=1))
        else:
            print(_scale_table(rows))
            print(
                "\n%.1f s; CPU per frame flat and our prompts per server within the window: %s"
                % (elapsed, "PASS" if ok else "NOT met")
            )
        return 0 if ok else 1
    count = 5 if args.quick else max(1, args.seeds)
    seeds = range(args.first_seed, args.first_seed + count)
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
        from benchmarks.scheduler_tables import classic_table, model_table

        classic = [(r, sc) for r, sc in zip(rows, chosen) if not sc.models]
        models = [(r, sc) for r, sc in zip(rows, chosen) if sc.models]
        if classic:
            print(classic_table([r for r, _ in classic], [sc for _, sc in classic]))
        if models:
            print(("\n" if classic else "") + model_table([r for r, _ in models], [sc for _, sc in models]))
        print(
            "\n%d seeds per scenario, %.1f s; all targets %s" % (len(seeds), elapsed, "PASS" if all_pass else "NOT met")
        )
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
