from __future__ import annotations

import pytest

from nuke_comfy_cluster.core import balancing
from nuke_comfy_cluster.core.state import ServerSnapshot, ServerStatus

NOW = 1000.0


def snap(name, queue=0, priority=0, status=ServerStatus.ONLINE, enabled=True, in_flight=0, cooldown=None):
    return ServerSnapshot(
        name=name, host="127.0.0.1", port=1, url="http://x", priority=priority, enabled=enabled,
        status=status, queue_running=min(queue, 1), queue_pending=max(0, queue - 1), in_flight=in_flight,
        cooldown_until=cooldown,
    )


def test_least_loaded_picks_shortest_queue():
    servers = [snap("a", queue=3), snap("b", queue=1), snap("c", queue=2)]
    assert balancing.choose(servers, now=NOW) == "b"


def test_our_unseen_submissions_count_as_load():
    servers = [snap("a", queue=0, in_flight=2), snap("b", queue=1)]
    assert balancing.choose(servers, now=NOW) == "b"


def test_ties_go_to_lower_priority_number_then_round_robin():
    servers = [snap("a", priority=5), snap("b", priority=1), snap("c", priority=1)]
    assert balancing.choose(servers, now=NOW) == "b"
    assert balancing.choose(servers, now=NOW, last_pick="b") == "c"
    assert balancing.choose(servers, now=NOW, last_pick="c") == "b"


def test_unavailable_servers_are_skipped():
    servers = [
        snap("off", status=ServerStatus.OFFLINE),
        snap("dis", enabled=False, status=ServerStatus.DISABLED),
        snap("cool", cooldown=NOW + 10),
        snap("err", status=ServerStatus.ERROR),
        snap("ok", queue=9),
    ]
    assert balancing.choose(servers, now=NOW) == "ok"
    assert balancing.choose(servers[:4], now=NOW) is None


def test_cooldown_expires():
    assert balancing.choose([snap("cool", cooldown=NOW - 1)], now=NOW) == "cool"


def test_exclude_names_servers_that_failed_the_job():
    servers = [snap("a"), snap("b", queue=5)]
    assert balancing.choose(servers, now=NOW, exclude=["a"]) == "b"


def test_round_robin_cycles_over_available():
    servers = [snap("a", queue=9), snap("b"), snap("c", status=ServerStatus.OFFLINE)]
    picks, last = [], None
    for _ in range(4):
        last = balancing.choose(servers, balancing.ROUND_ROBIN, now=NOW, last_pick=last)
        picks.append(last)
    assert picks == ["a", "b", "a", "b"]


def test_priority_strategy_ignores_queue():
    servers = [snap("a", queue=9, priority=0), snap("b", queue=0, priority=1)]
    assert balancing.choose(servers, balancing.PRIORITY, now=NOW) == "a"


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy"):
        balancing.choose([snap("a")], "fastest", now=NOW)


def test_unavailable_reason_names_the_cause():
    assert snap("a", enabled=False, status=ServerStatus.DISABLED).unavailable_reason(NOW) == "disabled"
    assert "cooling down" in snap("a", cooldown=NOW + 30).unavailable_reason(NOW)
    assert snap("a").unavailable_reason(NOW) is None
