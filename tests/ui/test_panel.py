"""The panel on a real pool: edits reach the pool, the override dropdown, the banner, shutdown.

Servers here listen nowhere (a released loopback port): a refresh finds them refused
at once, without any simulator.
"""

from __future__ import annotations

import json

import pytest

from .conftest import closed_port

pytestmark = pytest.mark.qt


def _configs(names=("a", "b", "c")):
    from nuke_comfy_cluster.core.config import ServerConfig

    return [ServerConfig(name=n, ip="127.0.0.1", port=closed_port(), priority=i) for i, n in enumerate(names)]


def _proxy_index(panel, name, col):
    from nuke_comfy_cluster.ui.server_table import NameRole

    proxy = panel.table.proxy
    for row in range(proxy.rowCount()):
        if proxy.index(row, 0).data(NameRole) == name:
            return proxy.index(row, col)
    raise AssertionError("no row for " + name)


def test_enable_toggle_reaches_the_pool_at_once(make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    Qt = QtCore.Qt
    cluster = make_cluster(_configs(), start=False)
    panel = make_panel(cluster, auto_refresh=False)
    assert panel.model.rowCount() == 3
    index = _proxy_index(panel, "b", st.COL_ENABLED)
    assert index.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked

    # what a click on the checkbox does: setData through the sorting proxy
    assert panel.table.model().setData(index, Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert cluster.pool.get_server_by_name("b").enabled is False
    qtbot.waitUntil(lambda: _proxy_index(panel, "b", st.COL_STATUS).data() == "disabled", timeout=2000)
    assert _proxy_index(panel, "b", st.COL_ENABLED).data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Unchecked

    panel.table.model().setData(_proxy_index(panel, "b", st.COL_ENABLED), 2, Qt.ItemDataRole.CheckStateRole)
    assert cluster.pool.get_server_by_name("b").enabled is True
    # re-enabling polls that one server (on a worker): it is refused, so it shows offline, and why
    qtbot.waitUntil(
        lambda: _proxy_index(panel, "b", st.COL_STATUS).data() == "offline: connection refused", timeout=10000
    )


def test_priority_edit_in_the_table_reaches_the_pool(make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui import server_view as sv
    from nuke_comfy_cluster.ui.qt import QtCore, QtWidgets

    cluster = make_cluster(_configs(), start=False)
    panel = make_panel(cluster, auto_refresh=False)
    panel.show()
    index = _proxy_index(panel, "a", st.COL_PRIORITY)
    panel.table.setCurrentIndex(index)
    panel.table.edit(index)
    editor = panel.table.findChild(QtWidgets.QSpinBox)
    assert editor is not None
    editor.selectAll()
    qtbot.keyClicks(editor, "12")
    qtbot.keyClick(editor, QtCore.Qt.Key.Key_Return)  # the delegate commits on the next event loop turn
    qtbot.waitUntil(lambda: cluster.pool.get_server_by_name("a").priority == 12, timeout=2000)
    # the next snapshot shows it, and the default sort (priority) moves "a" last
    qtbot.waitUntil(lambda: _proxy_index(panel, "a", st.COL_PRIORITY).data() == "12", timeout=2000)
    assert list(sv.names_in_view_order(panel.table)) == ["b", "c", "a"]


def test_override_dropdown(make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore, QtGui

    Qt = QtCore.Qt
    configs = _configs()
    cluster = make_cluster(configs, start=False)
    panel = make_panel(cluster, auto_refresh=False)
    combo = panel.override_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["Auto (least loaded)", "a", "b", "c"]
    assert combo.currentIndex() == 0 and cluster.pool.override is None

    # the user picks "b" with the keyboard (activated, as from the popup)
    combo.setFocus()
    combo.setCurrentIndex(1)
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentText() == "b"
    assert cluster.pool.override == "b"

    # the servers turn out unreachable: each item is greyed with the reason, the pin is flagged
    with qtbot.waitSignal(panel.refresh_finished, timeout=15000):
        assert panel.refresh()
    grey = QtGui.QColor(st.STATUS_COLOURS["disabled"])
    for i in range(1, combo.count()):
        assert combo.itemData(i, Qt.ItemDataRole.ForegroundRole).color() == grey
        assert " — " in combo.itemText(i)
        assert "Unavailable" in combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
    assert combo.itemData(0, Qt.ItemDataRole.ForegroundRole) is None
    assert combo.currentIndex() == 2, "the rebuilt list keeps the pinned server selected"
    assert panel.override_warning.isVisibleTo(panel)
    assert "b is unavailable" in panel.override_warning.text()

    # back to automatic
    qtbot.keyClick(combo, Qt.Key.Key_Home)
    assert combo.currentIndex() == 0
    assert cluster.pool.override is None
    assert not panel.override_warning.isVisibleTo(panel)


def test_banner_for_an_invalid_configuration(make_panel, qtbot):
    from nuke_comfy_cluster.core.api import Cluster
    from nuke_comfy_cluster.core.pool import ComfyUIServerPool

    port = closed_port()
    environ = {
        "NUKE_COMFYUI_SERVERS": '[\n  {"name": "a", "ip": "127.0.0.1", "port": 8188},\n  {"name": "b" "ip": "x"}\n]',
        "NUKE_COMFYUI_IP": "127.0.0.1",
        "NUKE_COMFYUI_PORT": str(port),
    }
    pool = ComfyUIServerPool()
    pool.load_configuration(environ)
    cluster = Cluster(pool, start=False)
    try:
        panel = make_panel(cluster, auto_refresh=False)
        banner = panel.banner
        assert banner.level == "error"
        text = banner.text()
        assert "NUKE_COMFYUI_SERVERS is invalid at line 3, column" in text
        assert "using single server 127.0.0.1:{}".format(port) in text
        assert "Error:" in text
        assert "214, 69, 65" in banner.styleSheet()  # drawn red
        assert panel.model.rowCount() == 1

        # a warning only (an unknown field): amber, and the servers are used
        ok = '[{"name": "a", "ip": "127.0.0.1", "port": 8188, "prio": 1}]'
        pool.load_configuration({"NUKE_COMFYUI_SERVERS": ok})
        qtbot.waitUntil(lambda: banner.level == "warning", timeout=2000)
        assert 'unknown field "prio"' in banner.text()
        assert "Using 1 server from NUKE_COMFYUI_SERVERS (inline JSON)" in banner.text()

        pool.load_configuration({"NUKE_COMFYUI_SERVERS": ok.replace(', "prio": 1', "")})
        qtbot.waitUntil(lambda: banner.level == "info", timeout=2000)
        assert banner.styleSheet() == ""
    finally:
        cluster.close()


def test_shutdown_stops_listening_and_leaves_no_thread(make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.workers import running_task_count

    cluster = make_cluster(_configs(), start=False)
    panel = make_panel(cluster, auto_refresh=False)
    assert panel.refresh()  # a worker under way while the panel closes
    assert panel.refreshing and not panel.refresh_button.isEnabled()
    assert panel.refresh_button.text() == "Refreshing…"
    panel.close()
    assert panel.closed
    assert running_task_count() == 0
    cluster.pool.set_priority("a", 99)
    qtbot.wait(100)
    assert _proxy_index(panel, "a", st.COL_PRIORITY).data() != "99"
    assert not panel.refresh(), "a closed panel starts no work"


def test_no_argument_panel_uses_the_default_cluster(qtbot, monkeypatch):
    """Nuke builds the registered class with no arguments."""
    from nuke_comfy_cluster.core import api
    from nuke_comfy_cluster.ui.panel import ClusterPanel

    port = closed_port()
    monkeypatch.setenv("NUKE_COMFYUI_SERVERS", '[{"name": "solo", "ip": "127.0.0.1", "port": %d}]' % port)
    monkeypatch.setattr(api, "_default", None)
    panel = ClusterPanel()
    qtbot.addWidget(panel)
    try:
        assert panel.cluster is api._default
        assert [panel.model.server_at(r).name for r in range(panel.model.rowCount())] == ["solo"]
        with qtbot.waitSignal(panel.refresh_finished, timeout=15000):
            pass  # the first refresh starts by itself
        assert panel.model.server_at(0).status.value == "offline"
    finally:
        panel.shutdown()
        api._default.close()


def test_announce_batch_reaches_open_panels(make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.core.jobs import Batch, Job
    from nuke_comfy_cluster.ui.panel import announce_batch

    cluster = make_cluster(_configs(), start=False)
    panel = make_panel(cluster, auto_refresh=False)
    batch = Batch([Job({"1": {}}, index=0, label="frame 1", frame=1)], name="from the node")
    with qtbot.waitSignal(panel.batch_watched, timeout=2000):
        announce_batch(batch)
    assert [b.name for b in panel.jobs.model.batches()] == ["from the node"]


@pytest.mark.integration
def test_a_server_left_out_of_a_running_batch_says_why_in_its_row(
    start_sims, make_cluster, make_panel, qtbot, tmp_path
):
    """A server without a node the workflow needs: the batch leaves it out, its row says so
    while the batch runs, and goes back to its plain state when the batch ends."""
    from nuke_comfy_cluster.core.jobs import Job
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    from .conftest import sim_servers

    Qt = QtCore.Qt

    without = start_sims([1.0], seconds=1.5, extra_args=["--without-nodes", "ImageInvert", "--cache-none"])[0]
    full = start_sims([1.0], seconds=1.5, extra_args=["--cache-none"])[0]
    cluster = make_cluster(sim_servers([without, full]))
    panel = make_panel(cluster)
    qtbot.waitUntil(lambda: not panel.refreshing and panel.snapshot is not None, timeout=20000)
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "left_out"}},
    }

    def job(i):
        prompt = json.loads(json.dumps(workflow))
        prompt["1"]["inputs"]["color"] = i  # each frame its own prompt
        return Job(prompt, index=i, label=f"frame {i}", frame=i)

    with qtbot.waitSignal(panel.batch_watched, timeout=20000):
        panel.submit_in_background(lambda: cluster.submit_batch([job(i) for i in range(4)], name="invert"))
    row = panel.model.row_of("sim0")
    status = lambda: panel.model.data(panel.model.index(row, st.COL_STATUS))  # noqa: E731
    qtbot.waitUntil(lambda: "left out: no node ImageInvert" in status(), timeout=20000)
    assert status().split(" · ")[0] in ("online", "busy")
    assert "ImageInvert" in panel.model.data(panel.model.index(row, st.COL_STATUS), Qt.ItemDataRole.ToolTipRole)
    qtbot.waitUntil(lambda: panel.jobs.model.batches()[0].finished, timeout=60000)
    qtbot.waitUntil(lambda: "left out" not in status(), timeout=5000)
