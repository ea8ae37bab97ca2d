"""The same server listed twice: found by address and by what the server says, used once."""

from __future__ import annotations

import threading

import requests

from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.identity import (
    LOOPBACK,
    find_duplicates,
    find_duplicates_by_identity,
    literal_addresses,
    resolved_addresses,
    stats_fingerprint,
)
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.core.server import ComfyUIServer
from nuke_comfy_cluster.core.state import ServerStatus
from tests.conftest import load_capture, wait_until

SLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "id"}},
}


def cfg(name, ip, port=8188, **kw):
    return ServerConfig(name=name, ip=ip, port=port, **kw)


def test_literal_addresses():
    for loop in ("localhost", "LOCALHOST.", "127.0.0.1", "127.0.1.1", "::1", "[::1]", "::ffff:127.0.0.1", "0.0.0.0"):
        assert literal_addresses(loop) == {LOOPBACK}, loop
    assert literal_addresses("10.0.0.5") == literal_addresses("::ffff:10.0.0.5") == {"10.0.0.5"}
    assert literal_addresses("fe80::1%eth0") == {"fe80::1"}
    assert literal_addresses("gpu1.studio.lan") == {"name:gpu1.studio.lan"}


def test_find_duplicates_by_address():
    found = find_duplicates(
        [
            cfg("a", "127.0.0.1"),
            cfg("b", "localhost"),  # same as a
            cfg("c", "localhost", 8189),  # another port: another server
            cfg("d", "10.0.0.5"),
            cfg("e", "10.0.0.6"),
            cfg("f", "::ffff:10.0.0.5"),  # same as d
            cfg("g", "GPU1.studio.lan"),
            cfg("h", "gpu1.studio.lan"),  # same as g
        ]
    )
    assert [(d.name, d.same_as) for d in found] == [("b", "a"), ("f", "d"), ("h", "g")]
    assert "127.0.0.1:8188 and localhost:8188" in found[0].why or "localhost:8188 and 127.0.0.1:8188" in found[0].why
    assert "used once, as a" in found[0].message


def test_resolution_sees_a_name_and_its_address():
    # "localhost" is special-cased; a name that resolves through the resolver is the real test
    name = "ncc-test-host.invalid"
    found = find_duplicates(
        [cfg("ip", "127.0.0.1"), cfg("named", name)],
        addresses=lambda h, p: {LOOPBACK} if h == name else resolved_addresses(h, p),
    )
    assert [(d.name, d.same_as) for d in found] == [("named", "ip")]
    assert resolved_addresses("127.0.0.1", 1) == {LOOPBACK}
    assert resolved_addresses("no-such-host.invalid", 1) == {"name:no-such-host.invalid"}


def test_fingerprint_of_real_system_stats():
    stats = load_capture("system_stats.json")["body_json"]
    changed = {**stats, "system": {**stats["system"], "ram_free": 1}}
    assert stats_fingerprint(stats) == stats_fingerprint(changed)  # free memory moves: not identity
    other = {**stats, "system": {**stats["system"], "argv": stats["system"]["argv"][:-1]}}
    assert stats_fingerprint(stats) != stats_fingerprint(other)
    assert stats_fingerprint("garbage") is None


def test_identity_probe_against_simulators(start_sims):
    one, two = start_sims([1.0, 1.0], seconds=0.05)
    same = [ComfyUIServer(cfg("a", "127.0.0.1", one.port)), ComfyUIServer(cfg("b", "localhost", one.port))]
    others = [ComfyUIServer(cfg("a", "127.0.0.1", one.port)), ComfyUIServer(cfg("c", "127.0.0.1", two.port))]
    # fresh server: identical stats, no history yet -> only "may be"
    found = find_duplicates_by_identity(same)
    assert [(d.name, d.same_as, d.certain) for d in found] == [("b", "a", False)]
    assert requests.post(one.url + "/prompt", json={"prompt": SLOW, "client_id": "t"}, timeout=5).ok
    assert wait_until(lambda: requests.get(one.url + "/history", timeout=5).json(), 10)
    found = find_duplicates_by_identity(same)
    assert [(d.name, d.same_as, d.certain) for d in found] == [("b", "a", True)]
    assert find_duplicates_by_identity(others) == []
    for s in same + others:
        s.close()


def test_pool_uses_a_server_listed_twice_once(start_sims):
    (proc,) = start_sims([1.0], seconds=0.05)
    pool = ComfyUIServerPool(
        [cfg("gpu1", "127.0.0.1", proc.port), cfg("gpu1b", "localhost", proc.port)], status_ttl=1.0
    )
    dup = pool.get_server_by_name("gpu1b")
    assert dup.duplicate_of == "gpu1"  # at load, before anything started
    pool.start()
    try:
        assert wait_until(lambda: pool.get_server_by_name("gpu1").live, 10)
        names = {t.name for t in threading.enumerate()}
        assert "ncc-ws-gpu1" in names and "ncc-ws-gpu1b" not in names  # one socket, one clientId
        snap = pool.snapshot()
        assert any("gpu1b is the same server as gpu1" in w for w in snap.warnings)
        dup_snap = snap.by_name()["gpu1b"]
        assert dup_snap.status is ServerStatus.DISABLED and "same server" in dup_snap.unavailable_reason(0)
        assert dup_snap.enabled  # the user's setting is kept
        for _ in range(5):
            assert pool.get_available_server().name == "gpu1"
        # the kept entry switched off: the other one is the way to that server now
        pool.set_enabled("gpu1", False)
        assert dup.duplicate_of is None
        assert wait_until(lambda: dup.live, 10)
    finally:
        pool.close()
