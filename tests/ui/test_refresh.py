"""Refresh against real simulator processes, one of them frozen (SIGSTOP): the GUI never waits."""

from __future__ import annotations

import time

import pytest

from .conftest import sim_servers

pytestmark = [pytest.mark.qt, pytest.mark.integration]

#: generous: the point is "not seconds" (a synchronous refresh would block ~3 s on the hung server)
MAX_GUI_GAP_S = 0.75


def test_refresh_with_a_hung_server_does_not_block_the_gui(start_sims, make_cluster, make_panel, heartbeat, qtbot):
    from nuke_comfy_cluster.core.http import STATUS_TIMEOUT
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    procs = start_sims([1.0, 1.0, 1.0], seconds=0.2)
    hung = procs[2]
    hung.sigstop()
    try:
        cluster = make_cluster(sim_servers(procs), start=False)
        panel = make_panel(cluster, auto_refresh=False)
        beat = heartbeat(10)
        started = time.monotonic()
        with qtbot.waitSignal(panel.refresh_finished, timeout=30000) as finished:
            qtbot.mouseClick(panel.refresh_button, QtCore.Qt.MouseButton.LeftButton)
            # busy at once, while the worker waits for the frozen server
            assert not panel.refresh_button.isEnabled()
            assert panel.refresh_button.text() == "Refreshing…"
            assert not panel.refresh(), "a second refresh is not started while one runs"
        elapsed = time.monotonic() - started
        beat.stop()

        # the hung server really held the refresh for its read timeout ...
        assert elapsed >= STATUS_TIMEOUT[1] * 0.8, elapsed
        assert finished.args[0] >= STATUS_TIMEOUT[1] * 0.8
        # ... while the GUI event loop kept ticking
        assert beat.ticks > 50
        assert beat.max_gap < MAX_GUI_GAP_S, "GUI blocked for {:.3f} s".format(beat.max_gap)

        assert panel.refresh_button.isEnabled() and panel.refresh_button.text() == "Refresh"
        by_name = {panel.model.server_at(r).name: r for r in range(panel.model.rowCount())}
        for name in ("sim0", "sim1"):
            assert panel.model.data(panel.model.index(by_name[name], st.COL_STATUS)) == "online"
        hung_row = by_name["sim2"]
        assert panel.model.data(panel.model.index(hung_row, st.COL_STATUS)) == "offline: no answer in {:.0f} s".format(
            STATUS_TIMEOUT[1]
        )
        tip = panel.model.data(panel.model.index(hung_row, st.COL_STATUS), QtCore.Qt.ItemDataRole.ToolTipRole)
        assert tip.startswith("Not used: sim2")
        assert any(word in tip.lower() for word in ("no answer", "timed out", "timeout", "hung")), tip
        assert "2/3 servers available" in panel.status_label.text()
    finally:
        hung.sigcont()


def test_live_status_arrives_without_refresh(start_sims, make_cluster, make_panel, qtbot):
    """With the pool running, the table follows the servers by itself (push or poll)."""
    from nuke_comfy_cluster.ui import server_table as st

    procs = start_sims([1.0, 0.5], seconds=0.2)
    cluster = make_cluster(sim_servers(procs))  # started: websockets + background polling
    panel = make_panel(cluster, auto_refresh=False)

    def all_online():
        return [panel.model.data(panel.model.index(r, st.COL_STATUS)) for r in range(panel.model.rowCount())] == [
            "online",
            "online",
        ]

    qtbot.waitUntil(all_online, timeout=15000)
    qtbot.waitUntil(lambda: all(panel.model.server_at(r).live for r in range(2)), timeout=15000)
    assert panel.model.data(panel.model.index(0, st.COL_SEEN)) == "live"
    # device and VRAM come from /system_stats, polled when the socket connects
    qtbot.waitUntil(lambda: panel.model.data(panel.model.index(0, st.COL_GPU)) not in ("", "–"), timeout=10000)
    assert "GB" in panel.model.data(panel.model.index(0, st.COL_VRAM))
    assert panel.snapshot.next_server in ("sim0", "sim1")
