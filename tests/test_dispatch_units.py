"""The dispatcher loop's own rules, on a stand-in pool (no simulator, no socket).

The pool here only hands out its event listener and says it has no server: what is
measured is what the loop does with the events it is given.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

from nuke_comfy_cluster.core import balancing
from nuke_comfy_cluster.core.dispatch import Dispatcher
from nuke_comfy_cluster.core.events import EventType, ServerEvent
from nuke_comfy_cluster.core.jobs import Batch, Job
from nuke_comfy_cluster.core.state import JobState


class _Pool:
    """What the dispatcher reads of a pool with no server configured."""

    strategy = balancing.LEAST_LOADED
    status_ttl = 5.0
    client_id = "units"
    servers: List[Any] = []

    def __init__(self) -> None:
        self.listener: Optional[Callable[[ServerEvent], None]] = None

    def add_event_listener(self, callback: Callable[[ServerEvent], None]) -> None:
        self.listener = callback

    def remove_event_listener(self, callback: Callable[[ServerEvent], None]) -> None:
        self.listener = None

    def start(self) -> None:
        pass

    def server_snapshots(self) -> List[Any]:
        return []

    def get_server_by_name(self, name: str) -> None:
        return None


def test_a_stream_of_server_events_runs_the_health_check_at_most_twice_a_second():
    """The health check walks every job under way: it runs every 0.5 s, not once per event
    (a busy cluster sends hundreds of progress events a second)."""
    pool = _Pool()
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    checks: List[float] = []
    dispatcher._check_health = lambda: checks.append(time.monotonic())  # type: ignore[method-assign]
    dispatcher.start()
    try:
        started = time.monotonic()
        for _ in range(60):  # one event per loop turn: each wakes the loop on its own
            assert pool.listener is not None
            pool.listener(ServerEvent(EventType.STATUS, "gpu", time.time(), data={}))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        dispatcher.stop(1.0)
    assert checks, "premise: the loop ran the health check"
    assert len(checks) <= elapsed / 0.5 + 2, f"{len(checks)} health checks in {elapsed:.2f} s"
    gaps = [b - a for a, b in zip(checks, checks[1:])]
    assert all(g >= 0.5 for g in gaps), gaps


class _Setups:
    """The scheduler's side of a cold start, as the dispatcher tells it."""

    def __init__(self) -> None:
        self.started: List[Any] = []
        self.setups: List[Any] = []

    def job_started(self, server: str, since: Optional[float], cold: bool = False) -> None:
        self.started.append((server, cold))

    def setup_finished(self, server: str, setup_s: float) -> None:
        self.setups.append((server, setup_s))


def test_the_first_node_past_the_loaders_of_a_cold_start_tells_the_scheduler_the_setup_time():
    """A cold start on an unmeasured server: when the first node after the loaders starts,
    the scheduler learns how long the loaders took (what taking back a slow probe needs,
    before the frame ends); a warm start (loaders cached) tells it nothing."""
    for cached, expected in (([], [("gpu", 2.5)]), (["4"], [])):
        dispatcher = Dispatcher(_Pool())  # type: ignore[arg-type]
        job = Job({}, frame=1, label="frame 1")
        batch = Batch([job])
        batch.static_nodes = frozenset({"4"})  # the checkpoint loader: the same in every frame
        job.server, job.state, job.prompt_id, job.attempt_token = "gpu", JobState.SUBMITTED, "p1", "t1"
        dispatcher._by_prompt["p1"] = (batch, job)
        setups = _Setups()
        dispatcher._schedulers[batch.id] = setups  # type: ignore[assignment]
        for kind, at, data in (
            (EventType.EXECUTION_START, 99.0, {}),
            (EventType.EXECUTION_CACHED, 99.0, {"nodes": cached}),
            (EventType.EXECUTING, 100.0, {"node": "4"}),
            (EventType.EXECUTING, 102.5, {"node": "3"}),
            (EventType.EXECUTING, 103.0, {"node": "9"}),
        ):
            dispatcher._route(ServerEvent(kind, "gpu", at, prompt_id="p1", data=data))
        assert setups.started == [("gpu", False), ("gpu", not cached)], setups.started
        assert setups.setups == expected, (cached, setups.setups)
