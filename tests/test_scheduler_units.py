"""The batch scheduler's single decisions, one rule at a time (fake clock, explicit loads).

Each test pins what a rule of :mod:`nuke_comfy_cluster.core.scheduler` (and its learning and
affinity halves) promises, at the edges where a small slip would change a decision: the
arguments it refuses, how samples are weighed, when a probe is planned to end, when a send
waits for the next poll, how top-ups are staggered. Whole batches are in test_scheduler.py.
"""

from __future__ import annotations

from typing import Optional

import pytest

from nuke_comfy_cluster.core.scheduler import Scheduler, ServerCosts, ServerLoad

NOW = 1000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedRng:
    """random() always returns ``x``: a stagger draw lands exactly where the test says."""

    def __init__(self, x: float) -> None:
        self.x = x

    def random(self) -> float:
        return self.x


class SeqRng:
    """random() returns these values in turn, then the last one forever."""

    def __init__(self, *xs: float) -> None:
        self.xs = list(xs)

    def random(self) -> float:
        return self.xs.pop(0) if len(self.xs) > 1 else self.xs[0]


def load(
    name: str,
    *,
    priority: int = 0,
    queue: int = 0,
    observed_at: float = NOW,
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


def costs(ft: float, dev: float = 0.0, setup: Optional[float] = None, samples: int = 3) -> ServerCosts:
    return ServerCosts(frame_s=ft, frame_dev=dev, samples=samples, setup_s=setup, setup_samples=1 if setup else 0)


def seeded(clock: FakeClock, **kw: object) -> Scheduler:
    """A scheduler started from stored costs: ``name=ServerCosts`` (other keywords go to Scheduler)."""
    stored = {k: v for k, v in kw.items() if isinstance(v, ServerCosts)}
    options = {k: v for k, v in kw.items() if not isinstance(v, ServerCosts)}
    options.setdefault("spread", 0.0)
    sched = Scheduler(clock, **options)  # type: ignore[arg-type]
    sched.seed(stored)
    return sched


# ---------------------------------------------------------------- arguments


def test_arguments_at_their_limits_are_accepted() -> None:
    sched = Scheduler(lead_time=0.0, alpha=1.0, max_window=1, hold=0.0, default_frame_time=0.001)
    assert sched.lead_time == 0.0 and sched.max_window == 1
    sched.set_lead_time(0.0)
    assert sched.lead_time == 0.0
    sched.set_lead_time(2.5)
    assert sched.lead_time == 2.5


@pytest.mark.parametrize(
    "kw, named",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"hold": -1.0}, "hold"),
        ({"max_window": 0}, "max_window"),
        ({"default_frame_time": -2.0}, "default_frame_time"),
        ({"lead_time": -0.5}, "lead_time"),
    ],
)
def test_arguments_past_their_limits_are_refused_by_name(kw: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Scheduler(**kw)


def test_a_negative_lead_time_set_later_is_refused_and_the_old_one_kept() -> None:
    sched = Scheduler(lead_time=0.5)
    with pytest.raises(ValueError, match="lead_time"):
        sched.set_lead_time(-1.0)
    assert sched.lead_time == 0.5


def test_ours_in_flight_counts_the_queued_and_the_running_one() -> None:
    assert load("a").ours_in_flight == 0
    assert load("a", queued=2).ours_in_flight == 2
    assert load("a", queued=2, running_since=NOW).ours_in_flight == 3
    assert load("a", running_since=0.0).ours_in_flight == 1


# ---------------------------------------------------------------- pick (one prompt, no batch)


def test_pick_names_no_server_when_none_is_given() -> None:
    assert Scheduler(FakeClock()).pick([]) is None


def test_pick_takes_the_earliest_finish_not_the_shortest_queue() -> None:
    clock = FakeClock()
    sched = seeded(clock, fast=costs(10.0), slow=costs(18.0))
    # fast runs ours with 5 s left: the next one there is done in 15 s; slow is idle: 18 s
    busy = load("fast", queue=1, running_since=NOW - 5.0)
    assert sched.pick([load("slow"), busy]) == "fast"
    # ours there just started: 20 s against 18 s
    busy = load("fast", queue=1, running_since=NOW)
    assert sched.pick([busy, load("slow")]) == "slow"


def test_pick_with_nothing_known_takes_the_shortest_queue_counting_ours() -> None:
    sched = Scheduler(FakeClock())
    assert sched.pick([load("a", queue=3), load("b", queue=1), load("c", queue=2)]) == "b"
    # b holds two of ours not yet seen in its queue length: 1 + 2 > 2
    assert sched.pick([load("b", queue=1, queued=2), load("c", queue=2)]) == "c"
    # a tie goes to the preferred server
    assert sched.pick([load("a", queue=1, priority=2), load("b", queue=1, priority=1)]) == "b"


def test_pick_breaks_a_tie_of_finishes_by_priority_then_least_recently_used() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0), b=costs(10.0))
    assert sched.pick([load("a", priority=1), load("b", priority=0)]) == "b"
    assert sched.pick([load("a", priority=1), load("b", priority=0)]) == "b"
    picks = [sched.pick([load("a"), load("b")]) for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]  # b was used last: a first, then turns


# ---------------------------------------------------------------- next_wakeup


def test_next_wakeup_is_cleared_by_every_plan() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0))
    busy = [load("a", queue=1, running_since=NOW - 2.0)]
    assert sched.plan(busy, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.0 - 0.5)
    assert sched.plan([], pending=5) == []
    assert sched.next_wakeup is None
    sched.plan(busy, pending=5)
    assert sched.plan(busy, pending=0) == []
    assert sched.next_wakeup is None


# ---------------------------------------------------------------- blind probes (nothing known)


def test_blind_probes_go_to_idle_servers_in_order_of_preference_up_to_pending() -> None:
    sched = Scheduler(FakeClock())
    servers = [load("c", priority=2), load("a", priority=1), load("b", priority=1, queue=1)]
    # b runs one job of someone else's: probed too, after the idle ones
    assert sched.plan(servers, pending=10) == ["a", "c", "b"]
    assert Scheduler(FakeClock()).plan(servers, pending=2) == ["a", "c"]


def test_blind_probes_skip_a_server_with_two_jobs_queued_unless_nothing_else_moves() -> None:
    sched = Scheduler(FakeClock())
    assert sched.plan([load("a", queue=2), load("b")], pending=5) == ["b"]
    # every server has a queue: one frame on the shortest, so the batch moves
    sched = Scheduler(FakeClock())
    assert sched.plan([load("a", queue=3), load("b", queue=2), load("c", queue=4)], pending=5) == ["b"]
    # ... but not while a probe of ours is out
    loads = [load("a", queue=3), load("b", queue=3, running_since=NOW)]
    assert Scheduler(FakeClock()).plan(loads, pending=5) == []


def test_blind_probes_leave_a_server_with_another_workflows_job_while_one_is_idle() -> None:
    sched = Scheduler(FakeClock(), spread=0.0)
    assert sched.plan([load("a", queue=1, warm=False), load("b")], pending=5) == ["b"]
    # the same model there: it is probed
    sched = Scheduler(FakeClock(), spread=0.0)
    assert sched.plan([load("a", queue=1, warm=True), load("b")], pending=5) == ["b", "a"]
    # no idle server: the other workflow's one is probed after all
    assert Scheduler(FakeClock(), spread=0.0).plan([load("a", queue=1, warm=False)], pending=5) == ["a"]


def test_a_blind_probe_to_a_cold_server_is_remembered_as_cold() -> None:
    for warm, watched in ((False, True), (True, False)):
        sched = Scheduler(FakeClock(), withdraw_probes=True)
        assert sched.plan([load("a", warm=warm)], pending=3) == ["a"]
        sched.job_started("a")
        assert sched.watching is watched, warm


@pytest.mark.parametrize("lead, pending, expected", [(1.0, 12, 4), (1.0, 11, 2), (0.99, 100, 2), (5.0, 12, 4)])
def test_when_polling_a_long_batch_queues_a_second_frame_behind_each_blind_probe(
    lead: float, pending: int, expected: int
) -> None:
    # polling (a lead time of a second or more) and six frames or more per server
    sched = Scheduler(FakeClock(), lead_time=lead)
    chosen = sched.plan([load("a"), load("b")], pending=pending)
    assert sorted(chosen) == sorted(["a", "b"] * (expected // 2))


def test_no_second_blind_probe_where_the_window_is_one() -> None:
    sched = Scheduler(FakeClock(), lead_time=5.0)
    assert sorted(sched.plan([load("a", max_in_flight=1), load("b")], pending=20)) == ["a", "b", "b"]
    sched = Scheduler(FakeClock(), lead_time=5.0, max_window=1)
    assert sorted(sched.plan([load("a"), load("b")], pending=20)) == ["a", "b"]
    sched = Scheduler(FakeClock(), lead_time=5.0, max_window=2)
    assert sorted(sched.plan([load("a"), load("b")], pending=20)) == ["a", "a", "b", "b"]


# ---------------------------------------------------------------- probes of unknown length


@pytest.mark.parametrize("slow_ft, expected", [(25.0, ["slow"]), (35.0, [])])
def test_a_probe_that_has_run_t_seconds_is_planned_to_end_at_2t(slow_ft: float, expected: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, default_frame_time=10.0, slow=costs(slow_ft))
    # new's probe (10 s by the prior) has run 15 s: planned to end at 30 s from its start,
    # 15 s from now, and its frames to take 15 s: its next one is done 30 s from now
    loads = [load("new", queue=1, running_since=NOW - 15.0), load("slow")]
    assert sched.plan(loads, pending=1) == expected


def test_a_probe_taken_back_plans_the_server_at_least_as_slow_as_it_showed() -> None:
    clock = FakeClock()
    sched = seeded(clock, fast=costs(10.0))
    sched.job_started("slow", NOW - 60.0)
    sched.job_withdrawn("slow")  # it ran 60 s without finishing a frame
    assert sched.expected_frame_time("slow") is None  # shown, not learned
    # a 60 s frame there ends after fast's second: no probe, the second frame waits for fast
    assert sched.plan([load("fast"), load("slow")], pending=2) == ["fast"]
    # without it, the slow server is taken as the slowest known one (10 s): a probe
    fresh = seeded(clock, fast=costs(10.0))
    assert sorted(fresh.plan([load("fast"), load("slow")], pending=2)) == ["fast", "slow"]


# ---------------------------------------------------------------- waiting for the next poll


@pytest.mark.parametrize(
    "dev, since, observed, wake",
    [
        # the top-up is due at 3 s (8 s left, lead 5 s); the poll at 4.25 s comes before the
        # frame must go (8 - 2 s of deviation): wait for it
        (2.0, NOW - 2.0, NOW - 1.0, NOW + 4.25),
        # 5.5 s left: the poll would come too close to the end (within the deviation): don't wait
        (2.0, NOW - 4.5, NOW - 1.0, NOW + 0.5),
        # no deviation: a poll a quarter of a second before the planned start is still awaited
        (0.0, NOW - 5.5, NOW - 1.0, NOW + 4.25),
    ],
)
def test_when_polling_a_send_due_shortly_before_the_next_poll_waits_for_it(
    dev: float, since: float, observed: float, wake: float
) -> None:
    clock = FakeClock()
    sched = seeded(clock, lead_time=5.0, a=costs(10.0, dev=dev))
    assert sched.plan([load("a", queue=1, running_since=since, observed_at=observed)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)


def test_a_lead_time_of_one_second_counts_as_polling() -> None:
    clock = FakeClock()
    # 1.5 s left, lead 1 s: due at 0.5 s; the poll expected at 0.75 s is worth the wait
    sched = seeded(clock, lead_time=1.0, a=costs(10.0))
    loads = [load("a", queue=1, running_since=NOW - 8.5, observed_at=NOW - 0.5)]
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 0.75)
    # with the push (lead 0.99 s) the send is due when planned
    sched = seeded(clock, lead_time=0.99, a=costs(10.0))
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 0.51)


# ---------------------------------------------------------------- staggered top-ups when sharing


def _other_job(name: str, left: float, ft: float = 10.0, **kw: object) -> ServerLoad:
    """Someone else's job running there (queue 1), ``left`` seconds of a ``ft`` frame to go."""
    return load(name, queue=1, busy_since=NOW - (ft - left), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "x, wake",
    [
        # 8 s of someone else's work: planned start 8 s, window [start - lead, start + spread]
        (0.0, NOW + 7.5),
        (0.5, NOW + 8.0),
        (0.99, NOW + 8.49),
    ],
)
def test_a_shared_servers_top_up_is_drawn_in_its_window(x: float, wake: float) -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=0.5, rng=FixedRng(x), a=costs(10.0))
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)
    # the draw is kept while the planned start stays put
    sched._rng = FixedRng(0.0)  # type: ignore[attr-defined]
    clock.now += 0.1
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)


def test_a_negative_spread_means_no_stagger() -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=-1.0, rng=FixedRng(0.5), a=costs(10.0))
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 7.5)


@pytest.mark.parametrize(
    "waited, wake",
    [
        (4.0, NOW + 6.0),  # the window opens 0.5 x 4 s earlier
        (30.0, NOW + 3.0),  # at most half a frame (5 s) earlier
    ],
)
def test_the_client_served_least_recently_opens_its_window_first(waited: float, wake: float) -> None:
    clock = FakeClock(NOW - waited)
    sched = seeded(clock, spread=0.5, rng=FixedRng(0.5), a=costs(10.0), b=costs(10.0))
    assert sched.plan([load("b")], pending=1) == ["b"]  # our last send, ``waited`` s ago
    clock.now = NOW
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)


def test_a_cold_claim_is_staggered_over_two_seconds() -> None:
    clock = FakeClock()
    sched = seeded(clock, rng=FixedRng(0.5), spread=0.5, a=costs(10.0, setup=40.0), b=costs(10.0, setup=40.0))
    # a is idle but holds another model (40 s to load); b runs someone else's job of ours' model
    loads = [load("a", warm=False), _other_job("b", 5.0, warm=True)]
    assert sched.plan(loads, pending=10) == []
    assert sched.next_wakeup == pytest.approx(NOW + 1.0)  # a at random in [now, now + 2 s]
    # idle and warm with ours (we ran there last): nobody races us for it, no stagger
    sched = seeded(clock, rng=FixedRng(0.5), spread=0.5, a=costs(10.0, setup=40.0), b=costs(10.0, setup=40.0))
    sched.job_finished("a", NOW - 10.0, NOW, cold=False)
    loads = [load("a", warm=None), _other_job("b", 5.0, warm=True)]
    assert sched.plan(loads, pending=10) == ["a"]


def test_the_servers_count_as_shared_when_any_holds_others_work_and_for_two_frames_after() -> None:
    clock = FakeClock()
    sched = seeded(clock, rng=FixedRng(0.5), spread=0.5, a=costs(10.0), b=costs(10.0))
    # b is idle, a runs someone else's job: b's top-up is staggered too
    assert sched.plan([_other_job("a", 1.0), load("b")], pending=1) == []
    assert sched.next_wakeup == pytest.approx(NOW + 0.25)
    # nobody else's work seen since: still shared for two frame times (20 s)
    clock.now = NOW + 20.0
    assert sched.plan([load("b", observed_at=clock.now)], pending=1) == []
    clock.now = NOW + 20.01
    assert sched.plan([load("b", observed_at=clock.now)], pending=1) == ["b"]


def test_pick_charges_a_cold_server_its_setup() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=40.0), b=costs(30.0, setup=40.0))
    # a is fast but holds another model: 40 + 10 s against 30 s on the warm b
    assert sched.pick([load("a", warm=False), load("b", warm=True)]) == "b"
    assert sched.pick([load("a", warm=True), load("b", warm=True)]) == "a"


def test_while_a_probe_is_out_servers_holding_another_workflows_models_get_none() -> None:
    sched = Scheduler(FakeClock(), spread=0.0)
    loads = [
        load("a", queue=1, running_since=NOW),
        load("b", warm=False, cache_owner="x"),
        load("c", warm=True),
        load("d"),
    ]
    assert sched.plan(loads, pending=5) == ["c", "d"]
