"""The batch scheduling policy: single decisions, then whole batches in virtual time.

Decisions are checked on hand-made :class:`ServerLoad` snapshots with a fake clock;
whole batches run in :mod:`nuke_comfy_cluster.sim.virtual` (seconds of virtual time,
milliseconds of real time) and are compared with OPT and with the baselines.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import List, Optional, Tuple

import pytest

from benchmarks import scheduler as bench
from benchmarks import scheduler_scale, static_plan
from nuke_comfy_cluster.core.scheduler import Scheduler, ServerCosts, ServerLoad
from nuke_comfy_cluster.sim.virtual import ServerSpec, World, frame_works, lower_bound, opt_makespan
from nuke_comfy_cluster.sim.virtual_clients import BurstClient, PolicyClient, SequentialClient


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def load(
    name: str,
    *,
    priority: int = 0,
    queue: int = 0,
    observed_at: float = 1000.0,
    queued: int = 0,
    running_since: Optional[float] = None,
    max_in_flight: int = 0,
    warm: Optional[bool] = None,
    busy_since: Optional[float] = None,
    cache_owner: Optional[str] = None,
) -> ServerLoad:
    return ServerLoad(
        name=name,
        priority=priority,
        queue_remaining=queue,
        observed_at=observed_at,
        ours_queued=queued,
        ours_running_since=running_since,
        max_in_flight=max_in_flight,
        busy_since=busy_since,
        warm=warm,
        cache_owner=cache_owner,
    )


def learned(clock: FakeClock, **frame_times: float) -> Scheduler:
    """A scheduler that has seen three frames on each server, of exactly these lengths, long ago."""
    sched = Scheduler(clock)
    now, clock.now = clock.now, 0.0
    for name, ft in frame_times.items():
        for _ in range(3):
            sched.job_finished(name, 0.0, ft)
    clock.now = now
    return sched


# ---------------------------------------------------------------- single decisions


def test_nothing_known_probes_every_idle_server_once() -> None:
    sched = Scheduler(FakeClock())
    chosen = sched.plan([load("a"), load("b"), load("c")], pending=10)
    assert sorted(chosen) == ["a", "b", "c"]
    # the probes are out: nothing more until one of them reports
    loads = [load(n, queue=1, running_since=1000.0) for n in "abc"]
    assert sched.plan(loads, pending=7) == []


def test_unknown_server_gets_exactly_one_probe_frame() -> None:
    clock = FakeClock()
    sched = learned(clock, fast=10.0)
    chosen = sched.plan([load("fast"), load("new")], pending=10)
    assert chosen.count("new") == 1
    # while its probe runs it gets nothing more, however many frames wait
    loads = [load("fast", queue=1, running_since=clock.now), load("new", queue=1, running_since=clock.now)]
    clock.now += 9.8
    assert "new" not in sched.plan(loads, pending=9)
    # once the probe reports, it is planned like any other server
    sched.job_finished("new", 1000.0, 1010.0)
    assert sched.frame_time("new") == pytest.approx(10.0)


def test_faster_server_gets_more_frames() -> None:
    specs = [ServerSpec("fast", 1.0), ServerSpec("slow", 0.25)]
    world = World(specs, seed=3)
    client = world.add(PolicyClient(world, "c", frame_works(40, random.Random(3))))
    world.run()
    counts = {s.name: sum(1 for j in client.result.jobs if j.server == s.name) for s in specs}
    # speeds 4:1, so about 32 and 8
    assert counts["fast"] >= 3 * counts["slow"] > 0


def test_window_is_one_queued_behind_the_running_one() -> None:
    clock = FakeClock()
    sched = learned(clock, a=10.0)
    # running with 0.3 s left: a top-up is due
    assert sched.plan([load("a", queue=1, running_since=clock.now - 9.7)], pending=5) == ["a"]
    # one already queued behind it: the window is full
    assert sched.plan([load("a", queue=2, queued=1, running_since=clock.now - 9.7)], pending=5) == []
    # a running frame far from its end: the top-up is not due yet, and we are told when
    assert sched.plan([load("a", queue=1, running_since=clock.now - 2.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(clock.now + 8.0 - sched.lead_time)


def test_window_covers_the_lead_time_when_polling_and_respects_max_in_flight() -> None:
    clock = FakeClock()
    sched = learned(clock, a=4.0)
    sched.set_lead_time(10.0)
    # the next status may come 10 s late: keep 10 s of frames there (4 s each)
    assert sched.plan([load("a")], pending=20) == ["a", "a", "a"]
    sched = learned(clock, a=4.0)
    sched.set_lead_time(10.0)
    assert sched.plan([load("a", max_in_flight=1)], pending=20) == ["a"]


def test_priority_breaks_ties_then_round_robin() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, default_frame_time=10.0)
    assert sched.pick([load("a", priority=1), load("b", priority=0)]) == "b"
    assert sched.pick([load("a", priority=1), load("b", priority=0)]) == "b"
    picks = [sched.pick([load("a"), load("b"), load("c")]) for _ in range(6)]
    assert picks[:3] != picks[1:4]  # it moves on
    assert sorted(picks[:3]) == ["a", "b", "c"] and picks[3:] == picks[:3]


def test_priority_is_not_the_plan() -> None:
    clock = FakeClock()
    sched = learned(clock, preferred=40.0, other=10.0)
    # the preferred server is four times slower: the one frame goes to the other
    assert sched.plan([load("preferred", priority=0), load("other", priority=5)], pending=1) == ["other"]


def test_tail_guard_holds_the_last_frame_for_a_faster_server() -> None:
    clock = FakeClock()
    sched = learned(clock, fast=10.0, slow=40.0)
    loads = [load("fast", queue=1, running_since=clock.now - 7.0), load("slow")]
    # the slow GPU is idle, but the last frame ends sooner after the fast one's 3 s
    assert sched.plan(loads, pending=1) == []
    assert sched.next_wakeup == pytest.approx(clock.now + 3.0 - sched.lead_time)
    assert sched.plan(loads, pending=3) == []  # 13, 23, 33 s on the fast one beat 40
    # with more frames waiting, the slow GPU earns one of them now
    assert sched.plan(loads, pending=5) == ["slow"]


def test_overrunning_frame_raises_the_estimate() -> None:
    clock = FakeClock()
    sched = learned(clock, a=10.0, b=12.0)
    sched.job_started("a", clock.now)
    clock.now += 25.0
    assert sched.expected_frame_time("a") == pytest.approx(10.0)
    assert sched.frame_time("a") == pytest.approx(25.0)
    loads = [load("a", queue=1, running_since=clock.now - 25.0), load("b", queue=1, running_since=clock.now - 11.8)]
    # b is the server about to be free; a, running 2.5x its estimate, gets nothing
    assert sched.plan(loads, pending=3) == ["b"]
    sched.job_finished("a", clock.now - 25.0, clock.now)
    assert sched.frame_time("a") > 10.0  # the long frame is learned


def test_job_failed_puts_the_server_back_to_one_frame_at_a_time() -> None:
    clock = FakeClock()
    sched = learned(clock, a=4.0)
    sched.set_lead_time(10.0)
    assert len(sched.plan([load("a")], pending=20)) == 3
    sched.job_failed("a")
    assert sched.failures("a") == 1
    assert sched.plan([load("a")], pending=20) == ["a"]
    assert sched.plan([load("a", queue=1, queued=1)], pending=19) == []
    sched.job_finished("a", clock.now, clock.now + 4.0)  # it works again
    assert len(sched.plan([load("a")], pending=19)) == 3


def test_learn_from_a_previous_batch_skips_the_probe() -> None:
    clock = FakeClock()
    earlier = learned(clock, a=10.0, b=20.0)
    sched = Scheduler(clock)
    sched.learn_from(earlier)
    assert sched.frame_time("b") == pytest.approx(20.0)
    # known at once: as many frames as start within the lead time, not one probe
    sched.set_lead_time(25.0)
    assert sorted(sched.plan([load("a"), load("b")], pending=20)) == ["a", "a", "a", "b", "b"]
    # its own frames soon take over
    for _ in range(4):
        sched.job_finished("a", 0.0, 5.0)
    assert sched.frame_time("a") < 7.0


def test_missed_start_teaches_no_frame_time() -> None:
    clock = FakeClock()
    sched = learned(clock, a=10.0)
    sched.job_finished("a", clock.now, clock.now)  # start never seen
    assert sched.frame_time("a") == pytest.approx(10.0)


def test_a_stale_queue_length_still_counting_our_finished_job_is_not_someone_else() -> None:
    clock = FakeClock()
    sched = learned(clock, a=10.0)
    observed = clock.now  # the status said: 1 in the queue (ours, running)
    clock.now += 10.0
    sched.job_finished("a", clock.now - 10.0, clock.now)  # ours ended; no new status yet
    assert sched.plan([load("a", queue=1, observed_at=observed)], pending=3) == ["a"]


def test_other_clients_jobs_count_as_backlog() -> None:
    clock = FakeClock()
    sched = learned(clock, a=10.0, b=10.0)
    loads = [load("a", queue=3, observed_at=clock.now), load("b")]
    assert sched.pick(loads) == "b"
    # Sharing the servers, the top-up of the idle one is staggered by up to
    # ``spread`` so that clients seeing the same status don't all land on it.
    chosen = sched.plan(loads, pending=1)
    if not chosen:
        assert clock.now < sched.next_wakeup <= clock.now + 0.5 + 1e-9
        clock.now = sched.next_wakeup
        chosen = sched.plan(loads, pending=1)
    assert chosen == ["b"]


def test_clients_sharing_servers_spread_their_top_ups() -> None:
    sends = []
    for seed in range(20):
        clock = FakeClock()
        sched = learned(clock, a=10.0)
        sched._rng.seed(seed)
        # someone else's job has run there for 9 of its probable 10 s
        loads = [ServerLoad("a", 0, 1, clock.now - 9.0, 0, None, busy_since=clock.now - 9.0)]
        chosen = sched.plan(loads, pending=5)
        sends.append(clock.now if chosen else sched.next_wakeup)
    # all within [finish - lead, finish + spread], and not at one instant
    assert all(1000.0 <= t <= 1001.5 + 1e-9 for t in sends)
    assert max(sends) - min(sends) > 0.3


@pytest.mark.parametrize("pending", [0, 1, 2, 5, 50])
def test_plan_never_sends_more_than_is_waiting(pending: int) -> None:
    clock = FakeClock()
    sched = learned(clock, a=1.0, b=1.0, c=2.0)
    sched.set_lead_time(30.0)
    chosen = sched.plan([load("a"), load("b"), load("c")], pending=pending)
    assert len(chosen) <= pending
    assert sched.plan([], pending=pending) == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(lead_time=-1.0)
    with pytest.raises(ValueError):
        Scheduler(default_frame_time=0.0)
    with pytest.raises(ValueError):
        Scheduler().set_lead_time(-0.1)


# ---------------------------------------------------------------- whole batches, virtual time


def _single(
    speeds: List[float], frames: int, seed: int, strategy: str = "policy", ttl: Optional[float] = None
) -> float:
    rng = random.Random(seed)
    works = frame_works(frames, rng)
    specs = [ServerSpec("gpu%d" % i, s) for i, s in enumerate(speeds)]
    world = World(specs, seed)
    if strategy == "policy":
        client = PolicyClient(world, "c", works, ttl=ttl)
    elif strategy == "sequential":
        client = SequentialClient(world, "c", works, "gpu0", ttl=ttl)
    else:
        client = BurstClient(world, "c", works, strategy, ttl=ttl)
    world.add(client)
    world.run()
    assert client.done
    assert sorted(j.frame for j in client.result.jobs) == list(range(frames))  # each frame once
    return client.result.makespan / opt_makespan(works, speeds)


@pytest.mark.parametrize(
    "speeds, mean_limit, run_limit",
    [
        ([1.0, 0.5], 1.03, 1.08),  # the targets: mean <= 1.03 x OPT, p95 <= 1.08 x OPT
        # a 40 s GPU among 10 s ones in a 90 s batch: see docs/PERFORMANCE.md
        ([1.0, 1.0, 0.5, 0.25], 1.045, 1.16),
    ],
)
def test_batch_makespan_is_near_opt_and_the_baselines_are_not(
    speeds: List[float], mean_limit: float, run_limit: float
) -> None:
    ours = [_single(speeds, 24, seed) for seed in range(10)]
    assert sum(ours) / len(ours) <= mean_limit
    assert max(ours) <= run_limit
    for baseline in ("sequential", "round_robin", "least_queue"):
        assert _single(speeds, 24, 0, baseline) >= 1.3 * ours[0]


def test_long_batch_is_within_one_percent_of_opt() -> None:
    assert _single([1.0, 0.5], 200, seed=4) <= 1.01


def test_polling_only_keeps_the_servers_busy() -> None:
    assert _single([1.0, 0.5], 24, seed=5, ttl=5.0) <= 1.08


def test_four_clients_share_fairly() -> None:
    sc = bench.Scenario("push, 4 clients", "4 GPUs 1/1/0.5/0.25", (24,) * 4)
    run, world, clients = bench.run_once(sc, 7)
    assert run.ratio_lb <= 1.08
    assert run.worst_fair <= 1.25
    assert run.queue_wait <= 1.0
    rr = bench.run_once(sc, 7, "round_robin")[0]
    assert rr.ratio_lb >= 1.5 * run.ratio_lb


def test_the_model_is_deterministic() -> None:
    sc = bench.Scenario("push, 4 clients", "2 GPUs 1/0.5", (24,) * 4)
    assert bench.run_once(sc, 11)[0] == bench.run_once(sc, 11)[0]


def test_opt_and_lower_bound() -> None:
    assert opt_makespan([10.0] * 4, [1.0, 1.0]) == pytest.approx(20.0)
    assert lower_bound([10.0] * 4, [1.0, 1.0]) == pytest.approx(20.0)
    works = frame_works(30, random.Random(1))
    assert opt_makespan(works, [1.5, 1.0, 0.25]) >= lower_bound(works, [1.5, 1.0, 0.25])


def test_polling_client_sets_its_lead_time_to_the_ttl() -> None:
    world = World([ServerSpec("a", 1.0)])
    assert PolicyClient(world, "c", [10.0], ttl=7.0).scheduler.lead_time == 7.0
    assert PolicyClient(world, "d", [10.0]).scheduler.lead_time == 0.5


def test_benchmark_prints_json_and_exits_on_its_targets(capsys: pytest.CaptureFixture) -> None:
    code = bench.main(["--json", "--seeds", "2", "--only", "push, mixed"])
    doc = json.loads(capsys.readouterr().out)
    assert code == (0 if doc["all_pass"] else 1)
    assert len(doc["scenarios"]) == 3
    row = doc["scenarios"][0]
    for key in ("name", "servers", "frames", "clients", "ttl_s", "mean_ratio_opt", "p95_ratio_opt", "mean_ratio_lb"):
        assert key in row
    assert row["worst_client_fair_share"] < row["baselines"]["least_queue"]["worst_client_fair_share"]
    assert set(row["baselines"]) == {"sequential", "round_robin", "least_queue"}


# ---------------------------------------------------------------- setups (model loads)


def seeded(clock: FakeClock, hold: float = 4.0, **kw: Tuple[float, Optional[float]]) -> Scheduler:
    """A scheduler started from stored costs: name=(frame time, setup time)."""
    costs = {
        name: ServerCosts(frame_s=ft, samples=3, setup_s=setup, setup_samples=1) for name, (ft, setup) in kw.items()
    }
    sched = Scheduler(clock, spread=0.0, hold=hold)
    sched.seed(costs)
    return sched


def test_a_cold_run_is_learned_as_setup_plus_frame() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 25.0, setup_s=20.0, cold=True)
    assert sched.expected_frame_time("a") == pytest.approx(5.0)
    assert sched.expected_setup_time("a") == pytest.approx(20.0)
    # cold without a timing of the setup: it is what the run took beyond a frame
    sched.job_finished("a", 0.0, 26.0, cold=True)
    assert sched.expected_frame_time("a") == pytest.approx(5.0)
    assert sched.expected_setup_time("a") == pytest.approx(20.5)
    # a cold run before any warm frame there waits for one to be split
    sched.job_finished("b", 0.0, 30.0, cold=True)
    assert sched.expected_frame_time("b") < 10.0  # guessed by a's setup share meanwhile, not 30
    sched.job_finished("b", 0.0, 6.0, cold=False)
    assert sched.expected_frame_time("b") == pytest.approx(6.0)
    assert sched.expected_setup_time("b") == pytest.approx(24.0)


def test_without_cache_information_the_whole_run_is_a_frame_time() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 25.0)
    assert sched.expected_frame_time("a") == pytest.approx(25.0)
    assert sched.expected_setup_time("a") is None


def test_a_cold_server_is_charged_its_setup() -> None:
    clock = FakeClock()
    sched = seeded(clock, fast=(10.0, 40.0), slow=(20.0, 40.0))
    loads = [load("fast", warm=False), load("slow", warm=True)]
    # one frame: 20 s on the warm slow GPU beats 40 + 10 s on the cold fast one
    assert sched.plan(loads, pending=1) == ["slow"]
    # six frames: the fast one earns its setup (its slots end at 50, 60, 70 ...)
    assert sorted(sched.plan(loads, pending=6)) == ["fast", "slow"]
    # told nothing of setups, the fast one would have been taken for the single frame
    blind = seeded(clock, fast=(10.0, None), slow=(20.0, None))
    assert blind.plan(loads, pending=1) == ["fast"]


def test_a_frame_running_its_setup_is_not_taken_for_a_slow_frame() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=(10.0, 40.0))
    sched.job_started("a", clock.now, cold=True)
    clock.now += 30.0
    assert sched.frame_time("a") == pytest.approx(10.0)  # 30 s in: still loading
    clock.now += 30.0
    assert sched.frame_time("a") == pytest.approx(20.0)  # 60 s: the frame part over-runs


def test_warm_is_inferred_from_our_own_last_job_when_unknown() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=(10.0, 40.0), b=(10.0, 40.0))
    sched.job_finished("b", clock.now - 10.0, clock.now, setup_s=0.0, cold=False)
    # b ran ours last and nobody else's work is there: warm; a never ran ours: cold
    assert sched.plan([load("a"), load("b")], pending=1) == ["b"]


def test_a_server_busy_with_another_workflow_is_left_to_it() -> None:
    clock = FakeClock()
    ours = load("a", queue=1, running_since=clock.now - 2.0, warm=True)

    def other(warm: bool) -> ServerLoad:
        # someone else's frame there, about to end
        return load("b", queue=1, busy_since=clock.now - 9.8, warm=warm)

    sched = seeded(clock, a=(10.0, 40.0), b=(10.0, 40.0))
    assert "b" in sched.plan([ours, other(warm=True)], pending=10)  # the same model: plain sharing
    sched = seeded(clock, a=(10.0, 40.0), b=(10.0, 40.0))
    # another model: EFT alone would take it (its slots from 50 s beat a's 7th frame), affinity leaves it
    assert sched.plan([ours, other(warm=False)], pending=10) == []


def test_a_client_with_nothing_running_takes_a_server_over_after_the_hold() -> None:
    clock = FakeClock()
    sched = seeded(clock, hold=2.0, a=(10.0, 40.0))  # hold = 2 setups = 80 s
    busy = load("a", queue=2, busy_since=clock.now - 1.0, warm=False)
    assert sched.plan([busy], pending=5) == []
    assert sched.next_wakeup == pytest.approx(clock.now + 80.0)
    clock.now += 80.0
    busy = load("a", queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False)
    assert sched.plan([busy], pending=5) == ["a"]  # one frame, queued behind its work: no race


def test_another_workflows_server_going_idle_is_kept_for_a_moment() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=(10.0, 40.0), b=(10.0, 40.0))
    ours = load("a", queue=1, running_since=clock.now - 9.9, warm=True)
    sched.plan([ours, load("b", queue=1, busy_since=clock.now - 5.0, warm=False)], pending=10)
    clock.now += 5.0
    ours = load("a", queue=1, running_since=clock.now - 4.9, queued=0, observed_at=clock.now, warm=True)
    idle = load("b", queue=0, observed_at=clock.now, warm=False)  # between two of its frames?
    assert "b" not in sched.plan([ours, idle], pending=10)
    assert sched.next_wakeup == pytest.approx(clock.now + sched.lead_time)
    clock.now = sched.next_wakeup
    assert "b" in sched.plan([ours, idle], pending=10)  # still idle: anyone's now


def test_no_timer_storm_for_a_frame_not_yet_heard_to_start() -> None:
    clock = FakeClock()
    sched = learned(clock, a=0.6)
    # our frame sent there, its start not heard yet: it is taken to start now, so its
    # top-up is always 0.1 s away; a timer would find the same picture, over and over
    assert sched.plan([load("a", queue=0, queued=1)], pending=50) == []
    assert sched.next_wakeup is None
    assert sched.plan([load("a", queue=1, running_since=clock.now - 0.05)], pending=50) == []
    assert sched.next_wakeup == pytest.approx(clock.now + 0.55 - sched.lead_time)


def test_our_prompts_per_server_are_capped_whatever_the_plan() -> None:
    clock = FakeClock()
    sched = learned(clock, a=0.001)  # a collapsed estimate (late events) with a long lead
    sched.set_lead_time(5.0)
    assert len(sched.plan([load("a")], pending=1000)) == sched.max_window == 8
    small = Scheduler(clock, max_window=3)
    small.learn_from(sched)
    small.set_lead_time(5.0)
    assert len(small.plan([load("a")], pending=1000)) == 3
    with pytest.raises(ValueError):
        Scheduler(max_window=0)


def test_a_plan_costs_the_same_for_100_or_100000_waiting_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = Scheduler._rank

    def counted(*args: object) -> int:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(Scheduler, "_rank", staticmethod(counted))
    picks = {}
    for pending in (100, 100_000):
        calls.clear()
        clock = FakeClock()
        sched = learned(clock, a=10.0, b=12.0, c=40.0)
        sched.set_lead_time(30.0)
        picks[pending] = sched.plan([load("a"), load("b"), load("c")], pending=pending)
        picks[pending, "calls"] = len(calls)
    assert picks[100] == picks[100_000]
    assert picks[100, "calls"] == picks[100_000, "calls"] <= 3 * 8


def test_costs_seed_a_new_batch_with_setups() -> None:
    clock = FakeClock()
    first = Scheduler(clock)
    first.job_finished("a", 0.0, 50.0, setup_s=40.0, cold=True)
    first.job_finished("a", 50.0, 60.0, cold=False)
    costs = first.costs()
    assert costs["a"].frame_s == pytest.approx(10.0) and costs["a"].setup_s == pytest.approx(40.0)
    second = Scheduler(clock)
    second.learn_from(first)
    assert second.expected_setup_time("a") == pytest.approx(40.0)
    # known at once: no probe, the window is open
    assert second.plan([load("a", warm=True)], pending=5) == ["a"]
    assert second.plan([load("a", queue=1, running_since=clock.now - 9.8, warm=True)], pending=4) == ["a"]


def test_the_virtual_world_charges_a_setup_per_model_switch() -> None:
    world = World([ServerSpec("gpu", 0.5)], seed=1)
    a = world.add(SequentialClient(world, "a", [10.0] * 3, "gpu", model="m1", setup=20.0))
    b = world.add(SequentialClient(world, "b", [10.0] * 3, "gpu", model="m2", setup=20.0, start=0.001))
    world.run()
    jobs = sorted(a.result.jobs + b.result.jobs, key=lambda j: j.started)
    switches = sum(1 for x, y in zip([None] + jobs, jobs) if x is None or x.model != y.model)
    assert world.servers["gpu"].loads == switches == sum(j.cold for j in jobs) > 1
    for j in jobs:
        assert j.duration == pytest.approx((j.work + (j.setup if j.cold else 0.0)) / 0.5)
        assert j.setup_time == pytest.approx(40.0 if j.cold else 0.0)


def _model_runs(name: str, servers: str, seeds: range, strategy: str = "policy") -> List[bench.Run]:
    (sc,) = [s for s in bench.model_scenarios() if s.name == name and s.servers.startswith(servers)]
    return [bench.run_once(sc, seed, strategy)[0] for seed in seeds]


def test_two_artists_with_different_models_keep_to_their_servers() -> None:
    ours = _model_runs("model, 2 clients, different models", "3 GPUs", range(4))
    present = _model_runs("model, 2 clients, different models", "3 GPUs", range(4), bench.PRESENT)
    assert sum(r.plan_max for r in ours) / 4 <= 1.25
    assert sum(r.plan_mean for r in ours) / 4 <= 1.25
    assert sum(r.loads for r in ours) * 2 <= sum(r.loads for r in present)
    assert min(r.plan_max for r in present) >= 1.8  # reloading on every frame, as before


def test_one_artist_alone_uses_the_servers_worth_their_setup() -> None:
    sc = [s for s in bench.model_scenarios() if s.name == "model, 1 client, costs known" and s.servers.startswith("3")]
    cheap, dear = [s for s in sc if s.setup == 1.0][0], [s for s in sc if s.setup == 20.0][0]
    run, world, (client,) = bench.run_once(cheap, 0)
    assert {j.server for j in client.result.jobs} == set(world.servers)  # shares all three
    assert run.ratio_opt <= 1.05
    run, world, (client,) = bench.run_once(dear, 0)
    slowest = min(world.specs, key=lambda s: s.speed).name
    assert slowest not in {j.server for j in client.result.jobs}  # a 800 s load for one 40 s frame: no
    assert run.ratio_opt <= 1.05
    assert bench.run_once(dear, 0, bench.PRESENT)[0].ratio_opt >= 1.5


def test_a_new_model_is_planned_cold_after_the_last_batch() -> None:
    ours = _model_runs("model, change between batches", "3 GPUs", range(3))
    present = _model_runs("model, change between batches", "3 GPUs", range(3), bench.PRESENT)
    assert max(r.ratio_opt for r in ours) <= 1.05
    assert sum(r.ratio_opt for r in present) > sum(r.ratio_opt for r in ours)


def test_the_window_cap_holds_for_a_client_that_cannot_keep_up() -> None:
    capped = scheduler_scale.scale_row(600, capped=True, lag=True)
    uncapped = scheduler_scale.scale_row(600, capped=False, lag=True)
    assert capped["max_ours_per_server"] <= capped["window"] == 8
    assert uncapped["max_ours_per_server"] > 50  # what the plan alone would queue there
    # and it costs no more to decide per frame than in a small batch
    assert capped["plans_per_frame"] < 10


def test_static_plan_search_finds_the_exhaustive_optimum() -> None:
    cases = [
        ([static_plan.Job(12, 1.0, 4.0), static_plan.Job(12, 1.0, 4.0, start=0.3)], [1.0, 0.5, 0.25]),
        ([static_plan.Job(5, 1.0, 1.0), static_plan.Job(4, 1.2, 2.0), static_plan.Job(3, 0.8, 1.0)], [1.0, 0.5]),
    ]
    for jobs, speeds in cases:
        for objective in ("max", "mean"):
            found = static_plan.best_static_plan(jobs, speeds, objective)
            best = static_plan.exhaustive_plan(jobs, speeds, objective)
            key = (lambda p: (p.max, p.mean)) if objective == "max" else (lambda p: (p.mean, p.max))
            assert key(found) == pytest.approx(key(best))
    # the measurement: 12 frames each, 4 s loads, 1 s frames: both done by 24 s, 20 s on average
    plan = static_plan.best_static_plan([static_plan.Job(12, 1.0, 4.0)] * 2, [1.0, 0.5, 0.25])
    assert (plan.max, plan.mean) == (pytest.approx(24.0), pytest.approx(20.0))
    assert static_plan.opt_with_setups([1.0] * 24, [1.0, 0.5, 0.25], 4.0) == pytest.approx(21.0)


def test_benchmark_reports_model_scenarios_with_their_setup(capsys: pytest.CaptureFixture) -> None:
    code = bench.main(["--json", "--seeds", "1", "--only", "model, change"])
    doc = json.loads(capsys.readouterr().out)
    assert code == (0 if doc["all_pass"] else 1)
    assert len(doc["scenarios"]) == 2
    for row in doc["scenarios"]:
        assert "model" in row["name"] and row["setup_s"] == 40.0
        assert set(row["baselines"]) == {bench.PRESENT, "sequential", "round_robin", "least_queue"}
        assert row["baselines"][bench.PRESENT]["mean_ratio_opt"] >= row["mean_ratio_opt"]


def test_a_workflow_holding_more_than_its_share_gives_a_server_up() -> None:
    clock = FakeClock()
    start = clock.now

    def ours() -> ServerLoad:  # our window there is full: only a takeover can be planned
        return load("c", queue=2, queued=1, running_since=clock.now - 5.0, warm=True, observed_at=clock.now)

    def theirs(name: str) -> ServerLoad:
        return load(name, queue=2, busy_since=clock.now - 1.0, warm=False, cache_owner="their-model")

    # they hold three of four equal servers: over their share (two), and still at it
    # without one; after two of its setups (80 s) there, one of them is ours
    costs = {name: (10.0, 40.0) for name in "abcd"}
    sched = seeded(clock, hold=100.0, **costs)
    assert sched.plan([ours(), theirs("a"), theirs("b"), theirs("d")], pending=20) == []
    clock.now = start + 79.0
    assert sched.plan([ours(), theirs("a"), theirs("b"), theirs("d")], pending=20) == []
    clock.now = start + 80.0
    assert len(sched.plan([ours(), theirs("a"), theirs("b"), theirs("d")], pending=20)) == 1
    # two of three: one less would leave them under their share: nothing to rebalance
    # (and ours runs, so no turn either)
    clock.now = start
    sched = seeded(clock, hold=100.0, **costs)
    assert sched.plan([ours(), theirs("a"), theirs("b")], pending=20) == []
    clock.now = start + 1000.0
    assert sched.plan([ours(), theirs("a"), theirs("b")], pending=20) == []


def test_a_cold_probe_that_would_end_after_the_batch_is_taken_back() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    # measured: 20 s loads, 1 s frames; the other server's probe has loaded for 30 s so far
    sched.job_finished("fast", clock.now - 21.0, clock.now, setup_s=20.0, cold=True)
    sched.job_started("slow", clock.now - 30.0, cold=True)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=clock.now - 30.0, warm=True)]
    # with 3 frames waiting, fast needs 4 s for them and this one; the probe, still loading
    # after 30 s, ends at least 1.5 s from now (its setup >= 30 s, its frame >= 30 / 20 s):
    # it may still help
    sched.plan(loads, pending=3)
    assert sched.withdrawals == []
    # nothing else waits: its frame would be done on fast in 1 s: take it back
    sched.plan(loads, pending=0)
    assert sched.withdrawals == ["slow"]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == []  # asked once per run
    sched.job_withdrawn("slow")
    assert sched.expected_frame_time("slow") is None and sched.frame_time("slow") is None
    # it is planned as slow as it showed itself: no new probe while the fast one serves
    loads = [load("fast", warm=True), load("slow", warm=False)]
    assert sched.plan(loads, pending=3) == ["fast"]

    # loaded already and about to end: kept
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.job_finished("fast", clock.now - 21.0, clock.now, setup_s=20.0, cold=True)
    sched.job_started("slow", clock.now - 21.0, cold=True)
    sched.setup_finished("slow", 20.5)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=clock.now - 21.0, warm=True)]
    sched.plan(loads, pending=3)
    assert sched.withdrawals == []
    # and without withdraw_probes nothing is ever asked back
    plain = Scheduler(clock)
    plain.job_finished("fast", clock.now - 21.0, clock.now, setup_s=20.0, cold=True)
    plain.job_started("slow", clock.now - 30.0, cold=True)
    plain.plan([load("fast"), load("slow", queue=1, running_since=clock.now - 30.0)], pending=0)
    assert plain.withdrawals == []


def test_withdrawal_brings_a_first_batch_near_opt_with_big_loads() -> None:
    (sc,) = [
        s
        for s in bench.model_scenarios()
        if s.name == "model, 1 client, nothing known" and s.servers.startswith("3") and s.setup == 20.0
    ]
    runs = [bench.run_once(sc, seed) for seed in range(3)]
    assert max(run.ratio_opt for run, _, _ in runs) <= 1.05
    assert all(client.withdrawn for _, _, (client,) in runs)  # the 840 s probe on the slowest GPU
    without = [bench.run_once(replace(sc, withdraw=False), seed)[0] for seed in range(3)]
    assert min(run.ratio_opt for run in without) >= 1.5
