"""Load and leaks, CI size: 120 frames over 4 simulators with 2 concurrent clients.

The full run (1,000 frames, 8 simulators, 4 clients) is ``python -m benchmarks.load``.
"""

from __future__ import annotations

import sys
import threading

import pytest

from benchmarks.load import run_load
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from tests.conftest import sim_configs, wait_until

pytestmark = pytest.mark.integration

SIMS, CLIENTS, FRAMES = 4, 2, 120


@pytest.mark.timeout(120)
def test_many_frames_many_clients_nothing_lost_nothing_left_behind():
    r = run_load(sims=SIMS, clients=CLIENTS, frames=FRAMES, seconds=0.05, batch_size=30, timeout=90)
    assert r["lost"] == 0 and r["delivered"] == FRAMES, r
    assert r["run_twice"] == 0 and r["never_ran"] == 0, r
    # every per-frame map of every dispatcher is empty once its batches are over
    assert all(not any(left.values()) for left in r["dispatcher_leftovers"]), r["dispatcher_leftovers"]

    threads = r["threads"]
    # per client: event + status loop, <= 16 status pollers, one websocket per server, the
    # dispatcher loop and <= 8 I/O workers; none grows with frames
    per_client = 2 + 16 + SIMS + 1 + 8
    assert threads["peak"] - threads["before_clients"] <= CLIENTS * per_client, threads
    assert threads["ncc_names_left"] == [], threads  # closing a cluster ends its threads

    requests = r["requests"]
    # nothing resent, but for first frames the scheduler took back on purpose (each counted)
    assert requests["submits"] == FRAMES + requests["taken_back"], requests
    # no /queue polling in the dispatch loop: a workflow without loaders asks /queue only to
    # take a first frame back (one look, a second after a delete)
    assert requests["by_route"].get("GET queue", 0) <= 2 * requests["taken_back"], requests
    if sys.platform.startswith("linux"):
        # generous: the point is "not per frame" (a leak of one result per frame is >1 MB here)
        assert r["rss_mb"]["growth_per_100_frames_after_warmup"] < 2.0, r["rss_mb"]


@pytest.mark.timeout(30)
def test_a_status_loop_turn_racing_stop_starts_no_socket(start_sims):
    """stop() clears the sockets while the status loop may still be in its turn; a socket
    that turn started afterwards reconnected forever, owned by nobody (a leaked thread)."""
    (sim,) = start_sims([1.0], seconds=0.1)
    pool = ComfyUIServerPool(sim_configs([sim]))
    pool.start()
    try:
        assert wait_until(lambda: pool.server_snapshots()[0].live, 10)
    finally:
        pool.stop()
    pool._start_socket(pool.servers[0])  # noqa: SLF001 - what the late turn does
    assert pool._sockets == {}  # noqa: SLF001
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name == "ncc-ws-sim0"], 10)
    pool.close()
