"""What the batch scheduler learns of each server (:mod:`nuke_comfy_cluster.core.scheduler_costs`).

How samples are weighed, how cold runs are split into setup and frame, what a seed from an
earlier batch or the cost store counts for: each pinned where a small slip would change it.
"""

from __future__ import annotations

from typing import Optional

import pytest

from nuke_comfy_cluster.core.scheduler import Scheduler, ServerCosts
from tests.test_scheduler_units import NOW, FakeClock, costs, load, seeded

# ---------------------------------------------------------------- learning


def test_the_first_samples_are_averaged_then_the_latest_weighs_alpha() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 10.0)
    assert sched.costs()["a"].frame_dev == pytest.approx(1.0)  # a tenth, until a second sample
    sched.job_finished("a", 0.0, 20.0)
    assert sched.expected_frame_time("a") == pytest.approx(15.0)  # plain mean of two
    assert sched.costs()["a"].frame_dev == pytest.approx(5.5)  # 1 + (10 - 1) / 2
    for _ in range(2):
        sched.job_finished("a", 0.0, 15.0)
    assert sched.expected_frame_time("a") == pytest.approx(15.0)
    assert sched.costs()["a"].samples == 4
    # fifth sample: weight max(alpha, 1/5) = 0.25, no longer 1/5
    sched.job_finished("a", 0.0, 35.0)
    assert sched.expected_frame_time("a") == pytest.approx(20.0)


def test_alpha_one_follows_the_latest_sample() -> None:
    sched = Scheduler(FakeClock(), alpha=1.0)
    for t in (10.0, 10.0, 10.0, 40.0):
        sched.job_finished("a", 0.0, t)
    assert sched.expected_frame_time("a") == pytest.approx(40.0)
    slow = Scheduler(FakeClock(), alpha=0.1)
    for t in (10.0,) * 20 + (40.0,):
        slow.job_finished("a", 0.0, t)
    assert slow.expected_frame_time("a") == pytest.approx(13.0)


def test_learn_from_counts_the_earlier_batch_as_at_most_weight_samples() -> None:
    clock = FakeClock()
    earlier = Scheduler(clock)
    for _ in range(6):
        earlier.job_finished("a", 0.0, 10.0)
    for weight, expected in ((2, 20.0), (1, 25.0), (4, 17.5)):
        sched = Scheduler(clock)
        sched.learn_from(earlier, weight=weight)
        sched.job_finished("a", 0.0, 40.0)  # this batch's own frame: one sample among weight + 1
        assert sched.expected_frame_time("a") == pytest.approx(expected), weight
    default = Scheduler(clock)
    default.learn_from(earlier)
    default.job_finished("a", 0.0, 40.0)
    assert default.expected_frame_time("a") == pytest.approx(20.0)


# ---------------------------------------------------------------- what is learned: cold runs and setups


def test_a_run_timed_with_its_setup_is_cold_when_the_setup_took_time() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 25.0, setup_s=5.0)  # cold not said: 5 s of setup says it
    assert sched.expected_frame_time("a") == pytest.approx(20.0)
    assert sched.expected_setup_time("a") == pytest.approx(5.0)
    sched.job_finished("b", 0.0, 25.0, setup_s=0.0)  # no setup ran: warm, the whole run is a frame
    assert sched.expected_frame_time("b") == pytest.approx(25.0)
    assert sched.expected_setup_time("b") is None


def test_a_cold_run_no_longer_than_its_setup_teaches_only_the_setup() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 30.0, setup_s=30.0, cold=True)
    assert sched.expected_frame_time("a") is None
    assert sched.expected_setup_time("a") == pytest.approx(30.0)
    sched.job_finished("b", 0.0, 0.001, setup_s=0.0, cold=True)
    assert sched.expected_frame_time("b") is None
    # a setup timed longer than the run (clock skew) is still a setup, never negative
    sched.job_finished("c", 0.0, 10.0, setup_s=-3.0, cold=True)
    assert sched.expected_setup_time("c") == pytest.approx(0.0)
    assert sched.expected_frame_time("c") == pytest.approx(13.0)


def test_a_missed_start_still_teaches_a_timed_setup() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 50.0, 50.0, setup_s=12.0, cold=True)
    assert sched.expected_setup_time("a") == pytest.approx(12.0)
    assert sched.expected_frame_time("a") is None
    sched.job_finished("b", 50.0, 40.0, setup_s=0.0)
    assert sched.expected_setup_time("b") is None


def test_a_cold_run_shorter_than_a_frame_teaches_a_setup_of_zero() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 10.0, cold=False)
    sched.job_finished("a", 0.0, 8.0, cold=True)
    assert sched.expected_setup_time("a") == pytest.approx(0.0)
    assert sched.expected_frame_time("a") == pytest.approx(10.0)


def test_only_the_last_four_cold_runs_wait_for_a_warm_frame() -> None:
    sched = Scheduler(FakeClock())
    for total in (30.0, 40.0, 50.0, 60.0, 70.0):
        sched.job_finished("a", 0.0, total, cold=True)
    # nothing to split them by yet: the last cold run, as a client that cannot tell
    assert sched.expected_frame_time("a") == pytest.approx(70.0)
    assert sched.expected_setup_time("a") is None
    sched.job_finished("a", 0.0, 10.0, cold=False)
    # setups 30, 40, 50, 60 (the 20 of the first run is forgotten): their mean
    assert sched.expected_setup_time("a") == pytest.approx(45.0)
    assert sched.expected_frame_time("a") == pytest.approx(10.0)
    # split: the next warm frame has nothing left to split
    sched.job_finished("a", 0.0, 10.0, cold=False)
    assert sched.expected_setup_time("a") == pytest.approx(45.0)


def test_cold_runs_alone_are_split_by_the_median_setup_share_seen_elsewhere() -> None:
    sched = Scheduler(FakeClock())
    for name, frame, setup in (("a", 10.0, 10.0), ("b", 10.0, 30.0), ("c", 10.0, 100.0)):
        sched.job_finished(name, 0.0, frame, cold=False)
        sched.job_finished(name, 0.0, frame + setup, setup_s=setup, cold=True)
    # shares 1, 3, 10: the median, 3, splits d's last cold run (80 s) into 20 + 60
    sched.job_finished("d", 0.0, 40.0, cold=True)
    sched.job_finished("d", 0.0, 80.0, cold=True)
    assert sched.expected_frame_time("d") == pytest.approx(20.0)
    assert sched.expected_setup_time("d") == pytest.approx(60.0)
    got = sched.costs()["d"]
    assert (got.frame_s, got.frame_dev, got.samples) == (pytest.approx(20.0), pytest.approx(2.0), 1)
    assert (got.setup_s, got.setup_samples) == (pytest.approx(60.0), 1)
    # two shares (1 and 3): the upper one
    two = Scheduler(FakeClock())
    for name, frame, setup in (("a", 10.0, 10.0), ("b", 10.0, 30.0)):
        two.job_finished(name, 0.0, frame, cold=False)
        two.job_finished(name, 0.0, frame + setup, setup_s=setup, cold=True)
    two.job_finished("d", 0.0, 80.0, cold=True)
    assert two.expected_frame_time("d") == pytest.approx(20.0)


def test_an_unmeasured_setup_is_planned_at_the_share_seen_elsewhere() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=20.0), b=costs(20.0))
    # b's setup never measured: 2 x its 20 s frame, as on a; cold, 40 + 20 s > a's 10 + 20 + 10 ...
    loads = [load("a", warm=True), load("b", warm=False)]
    assert sched.plan(loads, pending=5) == ["a"]
    assert sched.expected_setup_time("b") is None
    # told a cold frame runs there, its setup is not taken for a slow frame
    sched.job_started("b", NOW, cold=True)
    clock.now = NOW + 50.0
    assert sched.frame_time("b") == pytest.approx(20.0)
    clock.now = NOW + 70.0
    assert sched.frame_time("b") == pytest.approx(30.0)


def test_an_unknown_server_is_planned_as_slow_as_the_slowest_known_one() -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0), b=costs(30.0))
    # c's probe would be done at 30 s, like b's frame: the third frame goes to a at 30 s
    assert sched.plan([load("a"), load("b"), load("c")], pending=3) == ["a"]
    # with a prior of 5 s, c's probe is worth it
    sched = seeded(clock, default_frame_time=5.0, a=costs(10.0), b=costs(30.0))
    assert sorted(sched.plan([load("a"), load("b"), load("c")], pending=3)) == ["a", "c"]


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("frame_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_seed_without_a_usable_frame_time_is_ignored(frame_s: float) -> None:
    sched = Scheduler(FakeClock())
    sched.seed({"a": ServerCosts(frame_s=frame_s, setup_s=5.0, setup_samples=1)})
    assert sched.expected_frame_time("a") is None and sched.expected_setup_time("a") is None
    assert sched.costs() == {}


@pytest.mark.parametrize("setup_s, kept", [(0.0, 0.0), (-1.0, None), (float("inf"), None), (None, None)])
def test_a_seeds_setup_is_kept_when_usable(setup_s: Optional[float], kept: Optional[float]) -> None:
    sched = Scheduler(FakeClock())
    sched.seed({"a": ServerCosts(frame_s=10.0, setup_s=setup_s, setup_samples=1)})
    assert sched.expected_frame_time("a") == pytest.approx(10.0)
    assert sched.expected_setup_time("a") == kept


def test_a_seed_keeps_its_deviation_and_counts_as_at_most_weight_samples() -> None:
    sched = Scheduler(FakeClock())
    sched.seed({"a": ServerCosts(frame_s=10.0, frame_dev=-2.0), "b": ServerCosts(frame_s=10.0, frame_dev=3.0)})
    assert sched.costs()["a"].frame_dev == 0.0 and sched.costs()["b"].frame_dev == pytest.approx(3.0)
    assert sched.costs()["a"].samples == 1
    sched.seed({"c": ServerCosts(frame_s=10.0, samples=0, setup_s=10.0, setup_samples=0)})
    assert sched.costs()["c"].samples == 1 and sched.costs()["c"].setup_samples == 1
    # a setup seeded as 5 samples counts as 2: a new sample weighs a third
    sched.seed({"d": ServerCosts(frame_s=10.0, samples=5, setup_s=10.0, setup_samples=5)})
    assert sched.costs()["d"].samples == 2 and sched.costs()["d"].setup_samples == 2
    sched.job_finished("d", 0.0, 50.0, setup_s=40.0, cold=True)
    assert sched.expected_setup_time("d") == pytest.approx(20.0)


def test_a_seed_does_not_replace_what_this_batch_learned() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 20.0)
    sched.job_finished("b", 0.0, 30.0, cold=True)  # a cold run not split yet counts too
    sched.seed({"a": ServerCosts(frame_s=5.0), "b": ServerCosts(frame_s=5.0), "c": ServerCosts(frame_s=5.0)})
    assert sched.expected_frame_time("a") == pytest.approx(20.0)
    assert sched.expected_frame_time("b") == pytest.approx(30.0)
    assert sched.expected_frame_time("c") == pytest.approx(5.0)


def test_a_seeded_server_gets_a_full_window_unless_it_failed_last_time() -> None:
    clock = FakeClock()
    earlier = seeded(clock, a=costs(4.0), b=costs(4.0))
    earlier.job_failed("b")
    sched = Scheduler(clock, lead_time=10.0)
    sched.learn_from(earlier)
    # a: 10 s of 4 s frames; b failed last and never recovered: one frame at a time
    assert sorted(sched.plan([load("a"), load("b")], pending=20)) == ["a", "a", "a", "b"]
    # learned here already: what the earlier batch says of it does not count
    again = Scheduler(clock, lead_time=10.0)
    again.job_finished("b", 0.0, 4.0)
    again.learn_from(earlier)
    assert again.plan([load("b")], pending=20) == ["b", "b", "b"]


def test_short_frames_are_learned_as_they_ran_and_never_as_free() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 0.25)
    assert sched.expected_frame_time("a") == pytest.approx(0.25)
    sched.job_finished("b", 0.0, 1e-5)  # a clock too coarse for it: one millisecond
    assert sched.expected_frame_time("b") == pytest.approx(1e-3)


def test_failures_are_counted_per_server() -> None:
    sched = Scheduler(FakeClock())
    assert sched.failures("a") == 0
    sched.job_failed("a")
    sched.job_failed("a")
    assert (sched.failures("a"), sched.failures("b")) == (2, 0)


@pytest.mark.parametrize("b_ft, chosen", [(14.0, ["b"]), (20.0, [])])
def test_a_server_running_ours_is_taken_as_warm_when_the_caller_cannot_tell(b_ft: float, chosen: list) -> None:
    clock = FakeClock()
    sched = seeded(clock, a=costs(10.0, setup=40.0), b=costs(b_ft, setup=40.0))
    sched.job_started("a", NOW - 5.0)
    # ours runs on a: the next frame there finds our models, done at 15 s (not 55 s)
    loads = [load("a", queue=1, running_since=NOW - 5.0), load("b", warm=True)]
    assert sched.plan(loads, pending=1) == chosen


def test_costs_say_when_no_setup_was_ever_measured() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 10.0)
    got = sched.costs()["a"]
    assert (got.setup_s, got.setup_samples) == (None, 0)
    sched.job_finished("b", 0.0, 30.0, setup_s=20.0, cold=True)
    assert sched.costs()["b"].setup_samples == 1


def test_an_unknown_server_is_planned_as_slow_as_the_frame_part_of_a_cold_only_one() -> None:
    clock = FakeClock()
    sched = Scheduler(clock, spread=0.0)
    sched.job_finished("a", 0.0, 10.0, cold=False)
    sched.job_finished("a", 0.0, 40.0, setup_s=30.0, cold=True)
    sched.job_finished("d", 0.0, 80.0, cold=True)  # 20 s of frame + 60 s of setup, by a's share
    # c, never used, is planned like the slowest known frame (d's 20 s, not its 60 s of setup)
    loads = [load("a"), load("c", warm=True), load("d")]
    assert sorted(sched.plan(loads, pending=3)) == ["a", "c"]


def test_a_run_not_known_warm_does_not_split_earlier_cold_runs() -> None:
    sched = Scheduler(FakeClock())
    sched.job_finished("a", 0.0, 30.0, cold=True)
    sched.job_finished("a", 0.0, 10.0)  # the caller cannot tell: a frame time, not a warm one
    assert sched.expected_frame_time("a") == pytest.approx(10.0)
    assert sched.expected_setup_time("a") is None
    sched.job_finished("a", 0.0, 10.0, cold=False)  # known warm: the cold run was 20 s of setup
    assert sched.expected_setup_time("a") == pytest.approx(20.0)
