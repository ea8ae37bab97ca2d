"""The pool against real simulator processes: push, poll, dead and hung servers."""

from __future__ import annotations

import time

import pytest

from nuke_comfy_cluster.core.errors import NoServerAvailable
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.core.state import ServerStatus
from tests.conftest import sim_configs, wait_until

pytestmark = pytest.mark.integration

SLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def _queue(proc, n, client="someone-else"):
    import requests

    for _ in range(n):
        r = requests.post(proc.url + "/prompt", json={"prompt": SLOW, "client_id": client}, timeout=5)
        assert r.status_code == 200


def test_poll_reports_queue_latency_device(start_sims):
    (proc,) = start_sims([1.0], seconds=2.0)
    pool = ComfyUIServerPool(sim_configs([proc]), use_websocket=False)
    snap = pool.update_all_server_status()
    s = snap.servers[0]
    assert s.status is ServerStatus.ONLINE and s.queue_length == 0
    assert s.latency_ms is not None and s.device.name and s.device.comfyui_version
    _queue(proc, 3)
    s = pool.update_all_server_status().servers[0]
    assert s.status is ServerStatus.BUSY and (s.queue_running, s.queue_pending) == (1, 2)
    pool.close()


def test_websocket_push_updates_queue_without_polling(start_sims):
    (proc,) = start_sims([1.0], seconds=1.0)
    pool = ComfyUIServerPool(sim_configs([proc]), status_ttl=3600)
    pool.start()
    try:
        assert wait_until(lambda: pool.servers[0].live, 10)
        assert wait_until(lambda: pool.servers[0].status is ServerStatus.ONLINE, 10)
        checks_before = pool.servers[0].last_status_check
        _queue(proc, 2)
        # a status push arrives for every queue change; TTL is an hour, so this is the push
        assert wait_until(lambda: pool.servers[0].queue_length == 2, 5)
        assert pool.servers[0].last_status_check != checks_before
        assert wait_until(lambda: pool.servers[0].queue_length == 0, 10)
    finally:
        pool.stop()
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith(("ncc-ws", "ncc-events", "ncc-status-loop"))]


def test_one_dead_and_one_hung_server_cost_one_timeout(start_sims):
    live, dead, hung = start_sims([1.0, 1.0, 1.0], seconds=0.5)
    configs = sim_configs([live, dead, hung])
    dead.kill()
    hung.sigstop()
    pool = ComfyUIServerPool(configs, use_websocket=False)
    started = time.monotonic()
    snap = pool.update_all_server_status()
    elapsed = time.monotonic() - started
    by = snap.by_name()
    assert by["sim0"].status is ServerStatus.ONLINE
    assert by["sim1"].status is ServerStatus.OFFLINE and "refused" in by["sim1"].last_error
    assert by["sim2"].status is ServerStatus.OFFLINE and "no answer" in by["sim2"].last_error
    # parallel: the hung server's read timeout (3 s), not the sum of everyone's
    assert elapsed < 6.0, elapsed
    assert pool.get_available_server().name == "sim0"
    with pytest.raises(NoServerAvailable, match="sim2"):
        pool.choose_server("sim2")
    hung.sigcont()
    pool.close()


def test_server_dies_and_comes_back(start_sims):
    (proc,) = start_sims([1.0], seconds=0.5)
    pool = ComfyUIServerPool(sim_configs([proc]), status_ttl=0.3)
    pool.start()
    try:
        assert wait_until(lambda: pool.servers[0].status is ServerStatus.ONLINE and pool.servers[0].live, 10)
        proc.kill()
        assert wait_until(lambda: pool.servers[0].status is ServerStatus.OFFLINE, 10)
        assert not pool.servers[0].live
        proc.restart()
        assert wait_until(lambda: pool.servers[0].status is ServerStatus.ONLINE, 15)
        assert wait_until(lambda: pool.servers[0].live, 15)
    finally:
        pool.stop()


def test_enable_priority_override_and_notifications(start_sims):
    a, b = start_sims([1.0, 1.0], seconds=0.5)
    pool = ComfyUIServerPool(sim_configs([a, b]), use_websocket=False)
    seen = []
    pool.add_listener(seen.append)
    pool.update_all_server_status()
    assert pool.snapshot().next_server == "sim0"
    pool.set_priority("sim1", -5)
    assert pool.snapshot().next_server == "sim1"
    pool.set_enabled("sim1", False)
    assert pool.snapshot().by_name()["sim1"].status is ServerStatus.DISABLED
    assert pool.snapshot().next_server == "sim0"
    pool.set_override("sim1")
    with pytest.raises(NoServerAvailable, match="disabled"):
        pool.choose_server()
    pool.set_override(None)
    assert pool.choose_server().name == "sim0"
    assert len(seen) >= 4 and all(s.servers for s in seen)
    pool.close()


def test_failures_put_a_server_in_cooldown(start_sims):
    (proc,) = start_sims([1.0])
    pool = ComfyUIServerPool(sim_configs([proc]), use_websocket=False)
    pool.update_all_server_status()
    server = pool.servers[0]
    server.record_failure("boom")
    assert server.is_available()
    server.record_failure("boom again")
    assert not server.is_available()
    assert "cooling down" in server.get_status().unavailable_reason(time.time())
    assert server.get_status().counters.failures == 2
    pool.close()
