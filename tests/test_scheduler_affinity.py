"""Model affinity and probe withdrawal (:mod:`nuke_comfy_cluster.core.scheduler_affinity`).

A server busy with another workflow is left to it, kept for a moment when it goes idle,
taken over after a hold; a cold first frame that would end after the batch is asked back.
Fake clock, explicit loads, a fixed random draw.
"""

from __future__ import annotations

import pytest

from nuke_comfy_cluster.core.scheduler import Scheduler
from tests.test_scheduler_units import NOW, FakeClock, FixedRng, SeqRng, _other_job, costs, load, seeded

# ---------------------------------------------------------------- probe withdrawal


def test_only_a_cold_first_frame_of_this_batch_is_watched_for_withdrawal() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True)
    sched.seed({"a": costs(10.0, setup=20.0)})
    sched.job_started("a", cold=True)
    assert sched.watching  # seeded from an earlier batch: a hint, not a measurement
    sched.job_finished("a", NOW - 30.0, NOW, setup_s=20.0, cold=True)
    sched.job_started("a", cold=True)
    assert not sched.watching  # measured in this batch now
    sched.job_finished("b", NOW - 10.0, NOW, cold=False)
    sched.job_started("b", cold=True)
    assert not sched.watching
    sched.job_started("c", cold=False)
    assert not sched.watching  # warm: no setup to wait out
    sched.job_started("d", cold=True)
    assert sched.watching
    plain = Scheduler(clock)
    plain.job_started("d", cold=True)
    assert not plain.watching


@pytest.mark.parametrize("end", ["finished", "failed", "withdrawn"])
def test_a_cold_send_is_forgotten_once_its_job_ends_without_a_heard_start(end: str) -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True)
    assert sched.plan([load("a", warm=False)], pending=2) == ["a"]  # a cold probe
    if end == "finished":
        sched.job_finished("a", NOW, NOW)  # its start was missed
    elif end == "failed":
        sched.job_failed("a")
    else:
        sched.job_withdrawn("a")
    sched.job_started("a")  # the next one, sent while warm: not cold
    assert not sched.watching
    # not forgotten while it waits: the start of the cold send is cold
    again = Scheduler(clock, withdraw_probes=True)
    assert again.plan([load("a", warm=False)], pending=2) == ["a"]
    again.job_started("a")
    assert again.watching


# ---------------------------------------------------------------- what a withdrawn probe showed


@pytest.mark.parametrize(
    "share_known, ran, setup_done, shown",
    [
        (False, 60.0, None, 60.0),  # no setups anywhere: all it ran was frame
        (False, 0.8, None, 0.8),
        (True, 42.0, None, 2.0),  # still loading: setup = 20 x frame elsewhere, 42 / 21
        (True, 30.0, 24.0, 6.0),  # loaded in 24 s, then 6 s on the frame without finishing it
        (True, 26.0, 25.0, 1.25),  # loaded in 25 s: its frame is at least 25 / 20
    ],
)
def test_a_withdrawn_probe_leaves_a_lower_bound_of_the_servers_frame_time(
    share_known: bool, ran: float, setup_done: object, shown: float
) -> None:
    clock = FakeClock()

    def sched_with(ref_ft: float) -> Scheduler:
        kw = {"fast": costs(1.0, setup=20.0)} if share_known else {}
        sched = seeded(clock, default_frame_time=0.5, ref=costs(ref_ft), **kw)  # type: ignore[arg-type]
        sched.job_started("slow", NOW - ran, cold=share_known)
        if setup_done is not None:
            sched.setup_finished("slow", setup_done)  # type: ignore[arg-type]
        sched.job_withdrawn("slow")
        if setup_done is not None:
            assert sched.expected_setup_time("slow") == pytest.approx(setup_done)
        assert sched.expected_frame_time("slow") == 0.5  # still the prior: shown, not learned
        return sched

    # one prompt goes where it ends first: slow is planned at what it showed
    loads = [load("ref", warm=True), load("slow", warm=True)]
    assert sched_with(shown * 0.98).pick(loads) == "ref"
    assert sched_with(shown * 1.02).pick(loads) == "slow"


def test_a_setup_reported_while_nothing_runs_is_ignored() -> None:
    clock = FakeClock()
    sched = seeded(clock, fast=costs(1.0, setup=20.0))
    sched.setup_finished("slow", 24.0)  # not running there: nothing to tell
    sched.job_started("slow", NOW - 30.0, cold=True)
    sched.job_withdrawn("slow")
    assert sched.expected_setup_time("slow") is None
    sched.job_started("slow", NOW - 30.0, cold=True)
    sched.setup_finished("slow", -5.0)  # a clock step backwards: no setup, not a negative one
    sched.job_withdrawn("slow")
    assert sched.expected_setup_time("slow") == 0.0


# ---------------------------------------------------------------- when a loading probe is asked back


def _measured_fast(clock: FakeClock) -> Scheduler:
    """fast measured here: 10 s setup, 10 s frame (a setup share of 1: a probe loading t s ends
    no earlier than 2t after its start)."""
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.job_finished("fast", NOW - 20.0, NOW - 10.0 + 10.0, setup_s=10.0, cold=True)
    return sched


@pytest.mark.parametrize("pending, asked", [(0, ["slow"]), (1, [])])
def test_a_loading_probe_is_asked_back_once_the_rest_is_done_by_its_earliest_end(pending: int, asked: list) -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 10.0, cold=True)
    # its earliest end: 10 s from now, when fast (idle) has done exactly one frame
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 10.0, warm=True)]
    sched.plan(loads, pending=pending)
    assert sched.withdrawals == asked


def test_a_probe_kept_is_looked_at_again_when_its_end_may_cross_the_batchs() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 4.0, cold=True)
    # fast: one of ours running, one queued (free at 20 s), then 3 frames: done at 50 s;
    # slow has loaded 4 s: it ends no earlier than start + 2 t, which reaches 50 s at t = 27
    loads = [
        load("fast", queue=2, queued=1, running_since=NOW, warm=True),
        load("slow", queue=1, running_since=NOW - 4.0, warm=True),
    ]
    assert sched.plan(loads, pending=2) == []
    assert sched.withdrawals == []
    assert sched.next_wakeup == pytest.approx(NOW + 23.0)
    # a crossing close ahead: the next look is no sooner than half a frame (5 s) away
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 12.0, cold=True)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 12.0, warm=True)]
    assert sched.plan(loads, pending=1) == ["fast"]
    assert sched.withdrawals == []
    assert sched.next_wakeup == pytest.approx(NOW + 5.0)  # the crossing is at 4 s


# ---------------------------------------------------------------- another workflow's servers


def test_the_takeover_delay_is_drawn_once_per_hold() -> None:
    clock = FakeClock()
    sched = seeded(clock, hold=2.0, spread=1.0, rng=SeqRng(0.9, 0.0), a=costs(10.0, setup=40.0))

    def busy() -> object:
        return load("a", queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False)

    assert sched.plan([busy()], pending=5) == []  # type: ignore[list-item]
    assert sched.next_wakeup == pytest.approx(NOW + 80.9)  # two setups, then its random delay
    clock.now = NOW + 80.5
    assert sched.plan([busy()], pending=5) == []  # type: ignore[list-item]
    clock.now = NOW + 80.9
    assert sched.plan([busy()], pending=5) == ["a"]  # type: ignore[list-item]


def test_a_workflow_over_its_share_gives_up_a_server_another_one_keeps_its_own() -> None:
    clock = FakeClock()

    def ours() -> object:  # our window is full: only a takeover can be planned
        return load("c", queue=2, queued=1, running_since=clock.now - 5.0, warm=True, observed_at=clock.now)

    def theirs(name: str, owner: str) -> object:
        return load(name, queue=2, busy_since=clock.now - 1.0, warm=False, cache_owner=owner)

    # x holds three of five equal servers, y one: x is over its share (5/3) and keeps it
    # without one; y would fall under its share
    sched = seeded(clock, hold=100.0, **{n: costs(10.0, setup=40.0) for n in "abcde"})
    loads = lambda: [ours(), theirs("a", "x"), theirs("b", "x"), theirs("d", "x"), theirs("e", "y")]  # noqa: E731
    assert sched.plan(loads(), pending=20) == []
    clock.now = NOW + 80.0
    taken = sched.plan(loads(), pending=20)
    assert len(taken) == 1 and taken[0] in "abd"


def _held(name: str, now: float, warm: bool = False) -> object:
    """Another workflow's job running there (1 s in) with one more queued behind it."""
    return load(name, queue=1, busy_since=now - 1.0, observed_at=now, warm=warm)


def test_an_idle_server_stays_the_other_workflows_for_a_lead_time_and_a_stagger() -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=0.5, rng=FixedRng(0.0), a=costs(10.0, setup=40.0), b=costs(10.0, setup=40.0))
    ours = load("a", queue=1, running_since=NOW - 9.9, warm=True)
    assert sched.plan([ours, _held("b", NOW)], pending=10) == ["a"]  # type: ignore[list-item]
    clock.now = NOW + 5.0
    ours = load("a", queue=2, queued=1, running_since=NOW + 0.1, observed_at=clock.now, warm=True)
    idle = load("b", observed_at=clock.now, warm=False)  # between two of its frames?
    assert sched.plan([ours, idle], pending=10) == []
    assert sched.next_wakeup == pytest.approx(clock.now + 1.0)  # lead 0.5 s + spread 0.5 s
    clock.now += 1.0
    assert sched.plan([ours, idle], pending=10) == ["b"]


def test_a_server_with_a_small_setup_is_still_kept_for_its_workflow() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=0.5), b=costs(10.0, setup=0.5))
    ours = load("a", queue=1, running_since=NOW - 9.9, warm=True)
    sched.plan([ours, _held("b", NOW)], pending=10)  # type: ignore[list-item]
    clock.now = NOW + 5.0
    ours = load("a", queue=2, queued=1, running_since=NOW + 0.1, observed_at=clock.now, warm=True)
    assert "b" not in sched.plan([ours, load("b", observed_at=clock.now, warm=False)], pending=10)


@pytest.mark.parametrize("pending, chosen", [(2, []), (3, ["a"])])
def test_a_held_server_counts_as_free_after_about_as_long_again_as_it_was_held(pending: int, chosen: list) -> None:
    clock = FakeClock(NOW - 30.0)
    sched = seeded(clock, hold=100.0, a=costs(100.0, setup=40.0), b=costs(10.0, setup=40.0))
    sched.plan([load("a", observed_at=clock.now, warm=True), _held("b", clock.now)], pending=1)  # type: ignore[list-item]
    clock.now = NOW
    # held 30 s: planned free 30 s from now, cold (40 s), then a frame every 10 s: the slow
    # a's frame (100 s) is the third to finish
    loads = [load("a", warm=True), _held("b", NOW)]
    assert sched.plan(loads, pending=pending) == chosen  # type: ignore[arg-type]


def test_a_workflow_that_just_let_a_server_go_is_not_expected_to_keep_the_others() -> None:
    clock = FakeClock(NOW - 30.0)
    sched = seeded(clock, hold=100.0, a=costs(100.0, setup=40.0), b=costs(10.0, setup=40.0), c=costs(10.0, setup=40.0))
    first = [load("a", observed_at=clock.now, warm=True), _held("b", clock.now), _held("c", clock.now)]
    sched.plan(first, pending=1)  # type: ignore[arg-type]
    clock.now = NOW
    # c went idle a second ago and stays so: its workflow is ending, b is planned free after the
    # work seen there (9 s), not after 30 s more; with c's slots, 10 frames end before a's first
    loads = [load("a", warm=True), _held("b", NOW), load("c", observed_at=NOW - 1.0, warm=False)]
    assert sched.plan(loads, pending=8) == ["c"]  # type: ignore[arg-type]


def test_a_server_taken_over_by_a_third_workflow_starts_a_new_hold() -> None:
    clock = FakeClock()
    sched = seeded(clock, hold=2.0, b=costs(10.0, setup=40.0))

    def held(owner: object) -> object:
        return load("b", queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False, cache_owner=owner)

    assert sched.plan([held("x")], pending=5) == []  # type: ignore[list-item]
    clock.now = NOW + 60.0
    assert sched.plan([held("y")], pending=5) == []  # type: ignore[list-item]
    assert sched.next_wakeup == pytest.approx(NOW + 140.0)  # y's two setups from now
    clock.now = NOW + 80.0  # x's hold would be over
    assert sched.plan([held("y")], pending=5) == []  # type: ignore[list-item]
    # an owner not told is no change of owner
    sched = seeded(clock, hold=2.0, b=costs(10.0, setup=40.0))
    clock.now = NOW
    sched.plan([held("x")], pending=5)  # type: ignore[list-item]
    clock.now = NOW + 60.0
    sched.plan([held(None)], pending=5)  # type: ignore[list-item]
    clock.now = NOW + 80.0
    assert sched.plan([held(None)], pending=5) == ["b"]  # type: ignore[list-item]


def test_a_workflow_that_let_a_server_go_two_frames_ago_is_expected_to_keep_the_others_again() -> None:
    clock = FakeClock(NOW - 30.0)
    sched = seeded(clock, hold=100.0, a=costs(100.0, setup=40.0), b=costs(10.0, setup=40.0), c=costs(10.0, setup=40.0))
    first = [load("a", observed_at=clock.now, warm=True), _held("b", clock.now), _held("c", clock.now)]
    sched.plan(first, pending=1)  # type: ignore[arg-type]
    clock.now = NOW
    loads = [load("a", warm=True), _held("b", NOW), load("c", observed_at=NOW - 1.0, warm=False)]
    assert sched.plan(loads, pending=8) == ["c"]  # type: ignore[arg-type]  # c let go now
    for at, chosen in ((NOW + 20.0, ["c"]), (NOW + 21.0, ["a", "c"])):
        clock.now = at
        loads = [load("a", observed_at=at, warm=True), _held("b", at), load("c", observed_at=NOW - 1.0, warm=False)]
        # 20 s (two of b's frames) after: b is again expected to stay as long as it was held
        assert sorted(sched.plan(loads, pending=8)) == chosen, at  # type: ignore[arg-type]


def test_withdrawals_are_cleared_by_the_next_plan() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 10.0, cold=True)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 10.0, warm=True)]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == ["slow"]
    sched.plan([], pending=0)
    assert sched.withdrawals == []


def test_a_probe_is_measured_against_servers_of_known_speed_only() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.seed({"fast": costs(10.0, setup=10.0)})  # measured in an earlier batch: a hint
    sched.job_started("slow", NOW - 10.0, cold=True)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 10.0, warm=True)]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == ["slow"]  # seeded counts as measured for the others
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 10.0, cold=True)
    sched.job_started("other", NOW - 10.0, cold=True)  # another probe: no yardstick either
    loads = [
        load("other", queue=1, running_since=NOW - 10.0, warm=True),
        load("slow", queue=1, running_since=NOW - 10.0, warm=True),
    ]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == []


def _ours_full(name: str, now: float) -> object:
    """Ours running there (1 s in) with one queued: the window is full."""
    return load(name, queue=2, queued=1, running_since=now - 1.0, warm=True, observed_at=now)


def _theirs(name: str, now: float) -> object:
    return load(name, queue=2, busy_since=now - 1.0, observed_at=now, warm=False, cache_owner="x")


def test_a_workflow_at_exactly_its_share_without_the_server_gives_it_up() -> None:
    clock = FakeClock()
    costly = {n: costs(4.0, setup=40.0) for n in "abcdef"}
    sched = seeded(clock, hold=100.0, **costly)  # type: ignore[arg-type]

    def loads() -> list:
        return [_ours_full("c", clock.now), _ours_full("f", clock.now)] + [_theirs(n, clock.now) for n in "abde"]

    # x holds four of six equal servers; the fair share is three; without one it still has three
    assert sched.plan(loads(), pending=40) == []
    assert sched.next_wakeup == pytest.approx(NOW + 80.0)
    clock.now = NOW + 80.0
    taken = sched.plan(loads(), pending=40)
    assert len(taken) == 1 and taken[0] in "abde"


def test_no_timer_for_a_server_that_will_not_be_taken_over() -> None:
    clock = FakeClock()
    sched = seeded(clock, hold=100.0, **{n: costs(10.0, setup=40.0) for n in "abc"})  # type: ignore[arg-type]
    # x holds two of three: without one it would be under its share; ours runs: no turn either
    assert sched.plan([_ours_full("c", NOW), _theirs("a", NOW), _theirs("b", NOW)], pending=20) == []
    assert sched.next_wakeup is None


def test_without_withdraw_probes_nothing_is_asked_back_even_with_frames_waiting() -> None:
    clock = FakeClock()
    for withdraw, asked in ((True, ["slow"]), (False, [])):
        sched = Scheduler(clock, withdraw_probes=withdraw, spread=0.0)
        sched.job_finished("fast", NOW - 20.0, NOW, setup_s=10.0, cold=True)
        sched.job_started("slow", NOW - 20.0, cold=True)
        # slow's probe ends no earlier than 20 s from now: fast does this frame and the next by then
        loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 20.0, warm=True)]
        sched.plan(loads, pending=1)
        assert sched.withdrawals == asked, withdraw


def test_a_server_is_no_longer_left_to_another_workflow_once_setups_cost_nothing() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, alpha=1.0, spread=0.0)
    sched.job_finished("a", NOW - 50.0, NOW, setup_s=40.0, cold=True)  # setups: 4 x a frame
    loads = [_ours_full("a", NOW), load("b", queue=2, busy_since=NOW - 1.0, warm=False)]
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup is None  # b is left to its workflow; ours runs: no turn
    sched.job_finished("a", NOW - 10.0, NOW, setup_s=0.0, cold=True)  # the loads now cost nothing
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 18.5)  # b is planned like any server


def test_a_client_at_exactly_its_fair_share_takes_nothing_over() -> None:
    clock = FakeClock()
    sched = seeded(
        clock, hold=100.0, **{n: costs(4.0, setup=40.0) for n in ["c1", "c2", "c3", "x1", "x2", "x3", "x4", "y1", "y2"]}
    )  # type: ignore[arg-type]

    def loads() -> list:
        ours = [_ours_full(n, clock.now) for n in ("c1", "c2", "c3")]
        x = [_theirs(n, clock.now) for n in ("x1", "x2", "x3", "x4")]
        y = [
            load(n, queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False, cache_owner="y")
            for n in ("y1", "y2")
        ]
        return ours + x + y

    # three workflows on nine equal servers: ours has three, its share; x has four
    assert sched.plan(loads(), pending=60) == []
    assert sched.next_wakeup is None
    clock.now = NOW + 80.0
    assert sched.plan(loads(), pending=60) == []


def test_a_setup_reported_for_a_failed_job_is_not_taken_for_the_next_ones() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 40.0, cold=True)
    sched.setup_finished("slow", 20.0)
    sched.job_failed("slow")
    sched.job_started("slow", NOW - 10.0, cold=True)  # a new run, still loading after 10 s
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 10.0, warm=True)]
    sched.plan(loads, pending=1)
    assert sched.withdrawals == []  # ends no earlier than 10 s from now: fast does only one frame by then


def test_a_call_made_only_to_watch_probes_keeps_the_stagger_draws() -> None:
    clock = FakeClock()
    sched = seeded(clock, withdraw_probes=True, spread=0.5, rng=SeqRng(0.9, 0.1), a=costs(10.0))
    loads = [_other_job("a", 8.0)]
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.4)
    assert sched.plan(loads, pending=0) == []  # nothing waits: only withdrawals are looked at
    assert sched.withdrawals == []  # no setup seen anywhere: nothing to ask back
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.4)
    # and without withdraw_probes a call with nothing waiting does nothing at all
    sched = seeded(clock, spread=0.5, rng=SeqRng(0.9, 0.1), a=costs(10.0))
    assert sched.plan(loads, pending=5) == []
    assert sched.plan(loads, pending=0) == []
    assert sched.next_wakeup is None
    assert sched.plan(loads, pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.4)


def test_a_send_paying_even_a_small_setup_is_watched_as_cold() -> None:
    clock = FakeClock()
    sched = seeded(clock, withdraw_probes=True, a=costs(10.0, setup=0.5))
    assert sched.plan([load("a", warm=False)], pending=1) == ["a"]
    sched.job_started("a")
    assert sched.watching


def test_no_probe_out_means_no_withdrawal() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.plan([load("fast", warm=True), load("slow", warm=True)], pending=1)
    assert sched.withdrawals == []


def test_a_server_freed_because_setups_cost_nothing_is_not_its_workflow_letting_go() -> None:
    clock = FakeClock(NOW - 30.0)
    sched = seeded(clock, hold=100.0, alpha=1.0, a=costs(100.0, setup=0.0), c=costs(10.0, setup=40.0))

    def held(name: str, now: float) -> object:
        return load(name, queue=2, busy_since=now - 1.0, observed_at=now, warm=False, cache_owner="x")

    first = [load("a", observed_at=clock.now, warm=True), held("b", clock.now), held("c", clock.now)]
    sched.plan(first, pending=1)  # type: ignore[arg-type]  # x holds b and c
    clock.now = NOW
    sched.job_finished("z", NOW - 10.0, NOW, setup_s=0.0, cold=True)  # b's setup is now taken as 0
    loads = [load("a", warm=True), held("b", NOW), held("c", NOW), load("z", warm=True)]
    # b is planned like any server; x still holds c (its batch is not ending), expected for
    # 30 s more: 11 frames end before slow a's first, so with 12 waiting a takes one
    assert sorted(sched.plan(loads, pending=12)) == ["a", "z"]  # type: ignore[arg-type]


def test_by_default_a_client_with_nothing_running_waits_four_setups_to_take_a_server_over() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=10.0))
    busy = load("a", queue=2, busy_since=NOW - 1.0, warm=False)
    assert sched.plan([busy], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 40.0)


def test_a_cold_first_frame_queued_behind_another_workflow_is_asked_back_while_a_measured_server_is_ours() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.job_finished("a", NOW - 20.0, NOW, setup_s=10.0, cold=True)
    assert sched.plan([load("a", warm=True), load("b", warm=False)], pending=3) == ["a", "b"]  # b: cold
    # b's frame now waits behind someone else's job there: taken back before it starts
    loads = [
        load("a", queue=1, running_since=NOW, warm=True),
        load("b", queue=2, queued=1, warm=False, cache_owner="x"),
    ]
    assert sched.plan(loads, pending=2) == []
    assert sched.withdrawals == ["b"]


def test_a_probe_whose_setup_is_done_is_asked_back_by_its_known_end() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 10.0, cold=True)
    sched.setup_finished("slow", 10.0)  # loaded in 10 s: its frame, like fast's, as long again
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 10.0, warm=True)]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == ["slow"]  # it ends in 10 s: fast does this frame by then


def test_a_probe_just_started_is_not_asked_back_on_a_guess() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.job_finished("fast", NOW - 2.0, NOW, setup_s=1.0, cold=True)  # 1 s loads, 1 s frames
    sched.job_started("slow", NOW - 0.5, cold=True)
    loads = [load("fast", warm=True), load("slow", queue=1, running_since=NOW - 0.5, warm=True)]
    sched.plan(loads, pending=0)
    assert sched.withdrawals == []  # it may end 0.5 s from now: fast would not be done by then


def test_the_next_look_at_a_probe_counts_the_setup_a_cold_server_elsewhere_pays() -> None:
    clock = FakeClock()
    sched = _measured_fast(clock)
    sched.job_started("slow", NOW - 4.0, cold=True)
    # fast is cold (10 s of setup first): 3 frames there are done at 40 s; slow, loading for
    # 4 s, may end by then once it has loaded for 22 s
    loads = [load("fast", warm=False), load("slow", queue=1, running_since=NOW - 4.0, warm=True)]
    assert sched.plan(loads, pending=2) == ["fast"]
    assert sched.withdrawals == []
    assert sched.next_wakeup == pytest.approx(NOW + 18.0)


@pytest.mark.parametrize("owner, chosen", [("x", []), (None, ["b"])])
def test_an_idle_server_holding_another_workflows_models_is_left_to_it(owner: object, chosen: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=40.0), b=costs(10.0, setup=40.0))
    loads = [_ours_full("a", NOW), load("b", warm=False, cache_owner=owner)]  # type: ignore[arg-type]
    assert sched.plan(loads, pending=10) == chosen  # type: ignore[arg-type]


def test_a_cold_first_frame_queued_behind_another_workflow_stays_while_no_server_is_measured_here() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, withdraw_probes=True, spread=0.0)
    sched.seed({"a": costs(10.0, setup=10.0)})  # known from an earlier batch only: a hint
    assert sched.plan([load("a", warm=True), load("b", warm=False)], pending=3) == ["a", "b"]
    loads = [
        load("a", queue=1, running_since=NOW, warm=True),
        load("b", queue=2, queued=1, warm=False, cache_owner="x"),
    ]
    sched.plan(loads, pending=2)
    assert sched.withdrawals == []
