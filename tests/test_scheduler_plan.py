"""The batch scheduler's plan, decision by decision: what a server's backlog is projected to be
(ours running or queued, cold or warm, over-running; someone else's job), how slots rank and tie,
how windows, stagger draws and turns behave over consecutive calls. Fake clock, explicit loads.
"""

from __future__ import annotations

from typing import Optional

import pytest

from nuke_comfy_cluster.core.scheduler import Scheduler, ServerLoad
from tests.test_scheduler_units import NOW, FakeClock, FixedRng, SeqRng, _other_job, costs, load, seeded

# ---------------------------------------------------------------- backlog projection


@pytest.mark.parametrize("b_ft, expected", [(25.0, ["b"]), (27.0, [])])
def test_our_queued_frames_add_to_the_running_ones_remaining_time(b_ft: float, expected: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0), b=costs(b_ft))
    # a: 6 s left of the running frame and one queued behind it: a new frame there is done
    # at 26 s; the one frame waiting goes to b if b is done sooner
    loads = [load("a", queue=2, queued=1, running_since=NOW - 4.0), load("b")]
    assert sched.plan(loads, pending=1) == expected


@pytest.mark.parametrize(
    "observed, chosen, wake",
    [
        # someone else's job, start unknown: half done when seen 3 s ago, so 2 s left
        (NOW - 3.0, [], NOW + 1.5),
        # seen 20 s ago: surely done by now (never less than nothing left): ours goes now
        (NOW - 20.0, ["a"], NOW + 9.5),
        # seen just now: 5 s left
        (NOW, [], NOW + 4.5),
    ],
)
def test_another_clients_job_of_unknown_start_is_taken_as_half_done_when_seen(
    observed: float, chosen: list, wake: float
) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0))
    assert sched.plan([load("a", queue=1, observed_at=observed)], pending=5) == chosen
    assert sched.next_wakeup == pytest.approx(wake)


def test_a_server_known_only_by_cold_runs_is_planned_at_their_frame_part() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, spread=0.0)
    sched.job_finished("a", 0.0, 10.0, cold=False)
    sched.job_finished("a", 0.0, 40.0, setup_s=30.0, cold=True)
    sched.job_finished("d", 0.0, 80.0, cold=True)  # 20 s of frame + 60 s of setup, by a's share
    # d is warm now (ours ran there last): its frame at 20 s is the third to finish
    assert sorted(sched.plan([load("a"), load("d")], pending=3)) == ["a", "d"]
    assert sched.plan([load("a"), load("d")], pending=2) == ["a"]


@pytest.mark.parametrize("a_priority, expected", [(0, ["a"]), (1, ["a", "b"])])
def test_a_tie_of_finishes_goes_to_the_preferred_server(a_priority: int, expected: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0), b=costs(30.0))
    # a's third frame and b's first both end at 30 s: the third waiting frame goes to b only
    # when b is preferred
    loads = [load("a", priority=a_priority), load("b", priority=0 if a_priority else 1)]
    assert sorted(sched.plan(loads, pending=3)) == expected


@pytest.mark.parametrize(
    "ran, observed, margin, wake",
    [
        (8.0, NOW, 0.1, NOW + 1.5),  # within its 10 s estimate: ends at 10 s
        (10.0, NOW, 0.1, NOW + 0.5),  # at its estimate and not heard to end: over-running, 11 s
        (15.0, NOW, 0.1, NOW + 1.0),  # 15 s: expected to end at 16.5 s
        (15.0, NOW, 0.2, NOW + 2.5),  # with a margin of 0.2: 18 s
        # last seen 5 s ago; an end would have been heard within the lead time: it has run
        # 14.5 s for sure, and is expected to end at 15.95 s
        (15.0, NOW - 5.0, 0.1, NOW + 0.45),
    ],
)
def test_a_frame_running_over_its_estimate_is_expected_to_end_a_margin_later(
    ran: float, observed: float, margin: float, wake: float
) -> None:
    clock = FakeClock()
    sched = seeded(clock, overrun_margin=margin, a=costs(10.0))
    assert sched.plan([load("a", queue=1, running_since=NOW - ran, observed_at=observed)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)


@pytest.mark.parametrize("dev, chosen, wake", [(1.0, [], NOW + 2.5), (3.0, ["a"], NOW + 8.5)])
def test_the_deviation_margin_sends_earlier_to_a_server_of_uneven_frames(dev: float, chosen: list, wake: float) -> None:
    clock = FakeClock()
    sched = seeded(clock, deviation_margin=2.0, a=costs(10.0, dev=dev))
    # someone else's job there ends in 5 s: the top-up goes lead + 2 x deviation before
    assert sched.plan([load("a", queue=1, busy_since=NOW - 5.0)], pending=5) == chosen
    assert sched.next_wakeup == pytest.approx(wake)
    # known from a cold run alone: a deviation of a tenth of its frame time
    sched = Scheduler(clock, spread=0.0, deviation_margin=2.0)
    sched.job_finished("a", 0.0, 10.0, cold=True)
    assert sched.plan([load("a", queue=1, busy_since=NOW - 5.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 2.5)


@pytest.mark.parametrize("busy_since, wake", [(None, NOW + 8.5), (NOW - 3.0, NOW + 8.5), (NOW - 0.5, NOW + 9.0)])
def test_the_job_after_our_last_heard_end_started_no_earlier_than_that_end(
    busy_since: Optional[float], wake: float
) -> None:
    clock = FakeClock(NOW - 1.0)
    sched = seeded(clock, a=costs(10.0))
    # seen 6 s ago: ours running and someone else's queued behind it; ours ended 1 s ago
    sched.job_finished("a", NOW - 11.0, NOW - 1.0)
    clock.now = NOW
    stale = load("a", queue=2, observed_at=NOW - 6.0, busy_since=busy_since)
    assert sched.plan([stale], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)  # someone else's 10 s job, begun then


def test_a_stagger_draw_is_forgotten_when_its_slot_leaves_the_plan() -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=0.5, rng=SeqRng(0.9, 0.1), a=costs(10.0))
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.4)  # in [7.5, 8.5]
    full = load("a", queue=3, queued=2, busy_since=NOW - 2.0)  # our window there is full
    assert sched.plan([full], pending=5) == []
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 7.6)  # a new draw


def test_of_two_servers_free_to_take_over_the_one_done_first_is_taken() -> None:
    clock = FakeClock()
    sched = seeded(clock, hold=2.0, a=costs(10.0, setup=40.0), b=costs(20.0, setup=40.0))

    def busy(name: str) -> ServerLoad:
        return load(name, queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False)

    assert sched.plan([busy("b"), busy("a")], pending=5) == []
    clock.now = NOW + 80.0  # nothing of ours runs: both free after two of their setups
    assert sched.plan([busy("b"), busy("a")], pending=5) == ["a"]  # one per call


def test_a_takeover_is_named_first_even_before_a_preferred_servers_frame() -> None:
    # the frames go out in the order named: the claim on another workflow's server first
    clock = FakeClock()
    sched = seeded(clock, hold=2.0, a=costs(10.0, setup=40.0), n=costs(10.0, setup=40.0))
    busy = load("a", queue=2, busy_since=NOW - 1.0, warm=False)
    assert sched.plan([busy], pending=10) == []
    clock.now = NOW + 80.0
    busy = load("a", queue=2, busy_since=clock.now - 1.0, observed_at=clock.now, warm=False)
    ours = load("n", priority=-1, observed_at=clock.now, warm=True)
    assert sched.plan([ours, busy], pending=10) == ["a", "n"]


# ---------------------------------------------------------------- setups in the backlog


@pytest.mark.parametrize(
    "ran, b_ft, chosen", [(30.0, 29.0, ["b"]), (30.0, 31.0, []), (55.0, 19.0, ["b"]), (55.0, 22.0, [])]
)
def test_our_frame_running_cold_is_planned_with_its_setup(ran: float, b_ft: float, chosen: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=40.0), b=costs(b_ft, setup=40.0))
    sched.job_started("a", NOW - ran, cold=True)
    # 30 s in: 40 s of setup + 10 s of frame, done at 20 s, the next frame at 30 s.
    # 55 s in: over-running, expected at 60.5 s (done at 5.5 s), frames there take 15 s:
    # the next is done at 20.5 s. The one frame waiting goes to b if b is done sooner.
    loads = [load("a", queue=1, running_since=NOW - ran, warm=True), load("b", warm=True)]
    assert sched.plan(loads, pending=1) == chosen


@pytest.mark.parametrize("b_ft, chosen", [(55.0, ["b"]), (65.0, [])])
def test_our_cold_frame_queued_there_is_planned_with_its_setup(b_ft: float, chosen: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=40.0), b=costs(b_ft, setup=40.0))
    assert sched.plan([load("a", warm=False)], pending=1) == ["a"]  # cold: it will load first
    # not started yet: done at 50 s, the next one there at 60 s
    loads = [load("a", queue=1, queued=1, warm=True), load("b", warm=True)]
    assert sched.plan(loads, pending=1) == chosen


@pytest.mark.parametrize("ref_ft, chosen", [(45.0, ["ref"]), (55.0, [])])
def test_a_cold_probe_of_unknown_speed_grows_by_its_frame_part(ref_ft: float, chosen: list) -> None:
    clock = FakeClock()
    # setups are as long as frames (from fast); new's probe is cold and has run 30 s:
    # planned at twice that (ends 30 s from now), its frames at 30 - 10 s of setup = 20 s
    sched = seeded(clock, default_frame_time=10.0, fast=costs(10.0, setup=10.0), ref=costs(ref_ft))
    sched.job_started("new", NOW - 30.0, cold=True)
    loads = [load("new", queue=1, running_since=NOW - 30.0, warm=True), load("ref", warm=True)]
    assert sched.plan(loads, pending=1) == chosen


@pytest.mark.parametrize("ref_ft, chosen", [(0.7, ["ref"]), (2.0, [])])
def test_a_probe_that_just_started_is_planned_at_the_prior(ref_ft: float, chosen: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, default_frame_time=0.5, ref=costs(ref_ft))
    # 0.2 s into a 0.5 s probe: its next frame done at 0.8 s
    loads = [load("new", queue=1, running_since=NOW - 0.2), load("ref")]
    assert sched.plan(loads, pending=1) == chosen


@pytest.mark.parametrize("finishes, chosen", [(8, ["a"]), (9, [])])
def test_the_last_eight_of_our_finishes_are_remembered_against_a_stale_queue_length(
    finishes: int, chosen: list
) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0))
    for k in range(finishes):  # all ours, seen queued 20 s ago, all ended since
        clock.now = NOW - finishes + k
        sched.job_finished("a", clock.now - 10.0, clock.now)
    clock.now = NOW
    assert sched.plan([load("a", queue=finishes, observed_at=NOW - 20.0)], pending=5) == chosen


@pytest.mark.parametrize("pending", [1, 2, 3])
def test_a_lone_servers_window_takes_every_frame_waiting(pending: int) -> None:
    clock = FakeClock()
    sched = seeded(clock, lead_time=10.0, a=costs(4.0))  # a window of 10 s of 4 s frames: 3
    assert sched.plan([load("a")], pending=pending) == ["a"] * pending


def test_the_tail_guard_holds_whatever_the_backlog_of_a_third_server() -> None:
    clock = FakeClock()
    sched = seeded(clock, fast=costs(10.0), slow=costs(40.0), busy=costs(10.0))
    # fast frees up in 3 s; busy has 200 s of someone else's work: a frame there ends
    # after slow's; it changes nothing, the last frame still waits for fast
    loads = [
        load("busy", queue=20, busy_since=NOW - 1.0),
        load("fast", queue=1, running_since=NOW - 7.0),
        load("slow"),
    ]
    assert sched.plan(loads, pending=1) == []
    assert sched.plan(loads, pending=5) == ["slow"]


@pytest.mark.parametrize("setup", [0.5, 40.0])
def test_an_idle_server_warm_with_our_models_is_topped_up_without_a_stagger(setup: float) -> None:
    clock = FakeClock()
    sched = seeded(clock, rng=FixedRng(0.5), spread=0.5, a=costs(10.0, setup=setup), b=costs(10.0, setup=setup))
    sched.job_finished("a", NOW - 10.0, NOW, cold=False)  # ours ran there last
    assert sched.plan([load("a"), _other_job("b", 5.0, warm=True)], pending=10) == ["a"]


def test_a_frame_sent_does_not_lend_its_stagger_draw_to_the_next() -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=0.5, rng=SeqRng(0.0, 0.9), a=costs(10.0))
    assert sched.plan([_other_job("a", 0.2, max_in_flight=1)], pending=5) == ["a"]  # drawn at once
    # asked again before the server's queue says so: a new draw, not a second frame now
    assert sched.plan([_other_job("a", 0.2, max_in_flight=1)], pending=4) == []
    assert sched.next_wakeup == pytest.approx(NOW + 0.63)


def test_nothing_waiting_and_nothing_known_plans_nothing() -> None:
    sched = Scheduler(FakeClock(), withdraw_probes=True)
    assert sched.plan([load("a", warm=False), load("b", warm=True)], pending=0) == []
    assert sched.next_wakeup is None and sched.withdrawals == []


@pytest.mark.parametrize("moved, wake", [(0.5, NOW + 8.4), (0.6, NOW + 8.2)])
def test_a_stagger_draw_is_kept_while_the_planned_start_moves_less_than_the_lead_time(
    moved: float, wake: float
) -> None:
    clock = FakeClock()
    sched = seeded(clock, spread=0.5, rng=SeqRng(0.9, 0.1), a=costs(10.0))
    assert sched.plan([_other_job("a", 8.0)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(NOW + 8.4)
    # someone else's job is now seen to end ``moved`` s later than planned
    assert sched.plan([_other_job("a", 8.0 + moved)], pending=5) == []
    assert sched.next_wakeup == pytest.approx(wake)


def test_a_single_waiting_frame_is_probed_when_nothing_is_known() -> None:
    sched = Scheduler(FakeClock())
    assert sched.plan([load("b", priority=1), load("a", priority=0)], pending=1) == ["a"]


def test_equal_servers_take_turns_across_plans() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0), b=costs(10.0))
    idle = [load("a"), load("b")]
    assert [sched.plan(idle, pending=1) for _ in range(4)] == [["a"], ["b"], ["a"], ["b"]]


def test_a_server_load_is_an_immutable_snapshot_whose_cap_defaults_to_the_policy() -> None:
    snap = ServerLoad("a", 0, 0, NOW, 0, None)
    with pytest.raises(AttributeError):
        snap.queue_remaining = 3  # type: ignore[misc]
    assert (snap.max_in_flight, snap.busy_since, snap.warm, snap.cache_owner) == (0, None, None, None)
    sched = seeded(FakeClock(), lead_time=10.0, a=costs(4.0))
    assert sched.plan([snap], pending=5) == ["a", "a", "a"]  # no cap given: the window decides


def test_with_no_idle_server_every_server_running_one_other_job_gets_a_blind_probe() -> None:
    sched = Scheduler(FakeClock(), spread=0.0)
    loads = [load("a", queue=1, warm=False), load("b", queue=1, warm=True)]
    assert sched.plan(loads, pending=5) == ["a", "b"]


def test_withdraws_tells_whether_probes_may_be_asked_back() -> None:
    assert Scheduler(withdraw_probes=True).withdraws is True
    assert Scheduler().withdraws is False
