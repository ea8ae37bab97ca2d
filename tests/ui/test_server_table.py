"""The server table model and delegate, fed with pool snapshots built by hand."""

from __future__ import annotations

import time

import pytest

from .conftest import server_snapshot

pytestmark = pytest.mark.qt


def _snapshot(servers, next_server=None):
    from nuke_comfy_cluster.core.state import PoolSnapshot

    return PoolSnapshot(servers=tuple(servers), source="test", next_server=next_server, taken_at=time.time())


def _mixed(now):
    from nuke_comfy_cluster.core.state import DeviceInfo

    gpu = DeviceInfo(
        name="cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", vram_total=24 * 1024**3, vram_free=20 * 1024**3
    )
    return [
        server_snapshot(
            "alpha", "online", latency_ms=12.4, last_status_check=now - 30, device=gpu, priority=1, live=False
        ),
        server_snapshot(
            "bravo", "busy", queue_running=1, queue_pending=3, in_flight=2, last_status_check=now, live=True
        ),
        server_snapshot("charlie", "offline", last_error="charlie: connection refused (http://127.0.0.1:9/prompt)"),
        server_snapshot("delta", "disabled", enabled=False, priority=5),
        server_snapshot(
            "echo", "online", cooldown_until=now + 40, last_error="2 failures in a row", last_status_check=now - 1
        ),
        server_snapshot("foxtrot", "unknown"),
    ]


@pytest.fixture
def model(qapp):
    from nuke_comfy_cluster.ui.server_table import ServerTableModel

    return ServerTableModel()


def _cell(model, row, col, role=None):
    from nuke_comfy_cluster.ui.qt import QtCore

    role = QtCore.Qt.ItemDataRole.DisplayRole if role is None else role
    return model.data(model.index(row, col), role)


def test_table_contents_from_a_snapshot(model):
    from nuke_comfy_cluster.ui import server_table as st

    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now), next_server="alpha"), now)
    assert model.rowCount() == 6 and model.columnCount() == len(st.HEADERS)
    row = {model.server_at(r).name: r for r in range(model.rowCount())}

    a = row["alpha"]
    assert _cell(model, a, st.COL_STATUS) == "online"
    assert _cell(model, a, st.COL_NAME) == "alpha"
    assert _cell(model, a, st.COL_ADDRESS) == "127.0.0.1:8188"
    assert _cell(model, a, st.COL_QUEUE) == "0 / 0"
    assert _cell(model, a, st.COL_PRIORITY) == "1"
    assert _cell(model, a, st.COL_LATENCY) == "12 ms"
    assert _cell(model, a, st.COL_GPU) == "NVIDIA GeForce RTX 4090"
    assert _cell(model, a, st.COL_VRAM) == "20.0 GB / 24.0 GB"
    assert _cell(model, a, st.COL_SEEN) == "30 s ago"

    b = row["bravo"]
    assert _cell(model, b, st.COL_STATUS) == "busy"
    assert _cell(model, b, st.COL_QUEUE) == "1 / 3 +2 sent"
    assert _cell(model, b, st.COL_SEEN) == "live"

    assert _cell(model, row["charlie"], st.COL_QUEUE) == "–"  # unreachable: no queue to show
    assert _cell(model, row["echo"], st.COL_STATUS) == "cooling down 40 s"
    assert _cell(model, row["foxtrot"], st.COL_SEEN) == "never"
    assert _cell(model, row["foxtrot"], st.COL_LATENCY) == "–"


def test_status_colours_and_reasons(model):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore, QtGui

    Qt = QtCore.Qt
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now)), now)
    row = {model.server_at(r).name: r for r in range(model.rowCount())}
    expected = {
        "alpha": "online",
        "bravo": "busy",
        "charlie": "offline",
        "delta": "disabled",
        "echo": "cooling",
        "foxtrot": "unknown",
    }
    colours = set()
    for name, key in expected.items():
        want = QtGui.QColor(st.STATUS_COLOURS[key])
        assert _cell(model, row[name], st.COL_STATUS, st.StatusColourRole) == want, name
        brush = _cell(model, row[name], st.COL_STATUS, Qt.ItemDataRole.ForegroundRole)
        assert brush.color() == want, name
        icon = _cell(model, row[name], st.COL_STATUS, Qt.ItemDataRole.DecorationRole)
        image = icon.pixmap(12, 12).toImage()
        assert QtGui.QColor(image.pixel(6, 6)).name() == want.name(), name  # the dot is painted in it
        colours.add(want.name())
    assert len(colours) == len(expected)  # every state tells itself apart

    assert "connection refused" in _cell(model, row["charlie"], st.COL_STATUS, Qt.ItemDataRole.ToolTipRole)
    assert "cooling down" in _cell(model, row["echo"], st.COL_STATUS, Qt.ItemDataRole.ToolTipRole)
    assert "disabled" in _cell(model, row["delta"], st.COL_STATUS, Qt.ItemDataRole.ToolTipRole)
    assert "Available" in _cell(model, row["alpha"], st.COL_STATUS, Qt.ItemDataRole.ToolTipRole)
    # a disabled server is drawn grey in every column
    grey = QtGui.QColor(st.STATUS_COLOURS["disabled"])
    assert _cell(model, row["delta"], st.COL_NAME, Qt.ItemDataRole.ForegroundRole).color() == grey
    assert _cell(model, row["alpha"], st.COL_NAME, Qt.ItemDataRole.ForegroundRole) is None


def test_next_server_is_marked(model):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    Qt = QtCore.Qt
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now), next_server="bravo"), now)
    row = {model.server_at(r).name: r for r in range(model.rowCount())}
    assert _cell(model, row["bravo"], st.COL_NAME, Qt.ItemDataRole.FontRole).bold()
    assert _cell(model, row["bravo"], st.COL_NAME, Qt.ItemDataRole.DecorationRole) is not None
    assert "next prompt" in _cell(model, row["bravo"], st.COL_NAME, Qt.ItemDataRole.ToolTipRole)
    assert _cell(model, row["alpha"], st.COL_NAME, Qt.ItemDataRole.FontRole) is None
    assert _cell(model, row["alpha"], st.COL_NAME, Qt.ItemDataRole.DecorationRole) is None


def test_sorting_by_queue_and_priority(qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui import server_view as sv
    from nuke_comfy_cluster.ui.qt import QtCore

    model = st.ServerTableModel()
    view = sv.ServerTableView(model)
    qtbot.addWidget(view)
    now = time.time()
    servers = [
        server_snapshot("a", "busy", queue_running=1, queue_pending=4, priority=2),
        server_snapshot("b", "online", priority=9),
        server_snapshot("c", "busy", queue_running=1, queue_pending=0, priority=0),
        server_snapshot("d", "offline", priority=1),
    ]
    model.set_snapshot(_snapshot(servers), now)
    assert list(sv.names_in_view_order(view)) == ["c", "d", "a", "b"]  # default: by priority
    view.sortByColumn(st.COL_QUEUE, QtCore.Qt.SortOrder.AscendingOrder)
    assert list(sv.names_in_view_order(view)) == ["b", "c", "a", "d"]  # unreachable sorts last
    view.sortByColumn(st.COL_STATUS, QtCore.Qt.SortOrder.AscendingOrder)
    assert list(sv.names_in_view_order(view))[0] == "b" and list(sv.names_in_view_order(view))[-1] == "d"
    # a live update re-sorts: "b" gets a long queue
    servers[1] = server_snapshot("b", "busy", queue_running=1, queue_pending=9, priority=9)
    model.set_snapshot(_snapshot(servers), now)
    view.sortByColumn(st.COL_QUEUE, QtCore.Qt.SortOrder.AscendingOrder)
    assert list(sv.names_in_view_order(view)) == ["c", "a", "b", "d"]


def test_in_place_update_keeps_the_selection(qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui import server_view as sv

    model = st.ServerTableModel()
    view = sv.ServerTableView(model)
    qtbot.addWidget(view)
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now)), now)
    view.selectRow(2)
    chosen = view.selected_server()
    resets = []
    model.modelReset.connect(lambda: resets.append(True))
    model.set_snapshot(_snapshot(_mixed(now + 1)), now + 1)
    assert view.selected_server() == chosen
    assert resets == []
    model.set_snapshot(_snapshot(_mixed(now)[:3]), now)  # a server removed: the rows are rebuilt
    assert resets == [True] and model.rowCount() == 3


def test_edits_become_signals(model, qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    Qt = QtCore.Qt
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now)), now)
    assert model.flags(model.index(0, st.COL_ENABLED)) & Qt.ItemFlag.ItemIsUserCheckable
    assert model.flags(model.index(0, st.COL_PRIORITY)) & Qt.ItemFlag.ItemIsEditable
    assert not model.flags(model.index(0, st.COL_NAME)) & Qt.ItemFlag.ItemIsEditable
    assert _cell(model, 0, st.COL_ENABLED, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked

    with qtbot.waitSignal(model.enabled_toggled, timeout=1000) as toggled:
        # a view passes the check state as an int (Qt 6) or the enum (Qt 5): both work
        assert model.setData(model.index(0, st.COL_ENABLED), 0, Qt.ItemDataRole.CheckStateRole)
    assert toggled.args == ["alpha", False]
    with qtbot.waitSignal(model.enabled_toggled, timeout=1000) as toggled:
        model.setData(model.index(3, st.COL_ENABLED), Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
    assert toggled.args == ["delta", True]
    with qtbot.waitSignal(model.priority_edited, timeout=1000) as edited:
        assert model.setData(model.index(1, st.COL_PRIORITY), "7", Qt.ItemDataRole.EditRole)
    assert edited.args == ["bravo", 7]
    assert not model.setData(model.index(1, st.COL_PRIORITY), "seven", Qt.ItemDataRole.EditRole)


def test_priority_delegate_edits_with_a_spin_box(qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui import server_view as sv
    from nuke_comfy_cluster.ui.qt import QtCore, QtWidgets

    model = st.ServerTableModel()
    view = sv.ServerTableView(model)
    qtbot.addWidget(view)
    view.show()
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now)[:2]), now)
    index = view.proxy.index(0, st.COL_PRIORITY)
    name = index.data(st.NameRole)
    view.setCurrentIndex(index)
    view.edit(index)
    editor = view.findChild(QtWidgets.QSpinBox)
    assert editor is not None
    assert editor.value() == model.server_at(model.row_of(name)).priority
    # a live update while the user types must not overwrite the value being typed
    editor.setValue(42)
    model.set_snapshot(_snapshot(_mixed(now + 1)[:2]), now + 1)
    assert editor.value() == 42
    with qtbot.waitSignal(model.priority_edited, timeout=1000) as edited:
        qtbot.keyClick(editor, QtCore.Qt.Key.Key_Return)
    assert edited.args == [name, 42]


def test_the_status_cell_says_why_a_server_is_not_used(model):
    """In the row, not only in a tooltip; the offline reasons come from real connection attempts."""
    from nuke_comfy_cluster.core.config import ServerConfig
    from nuke_comfy_cluster.core.server import ComfyUIServer
    from nuke_comfy_cluster.core.state import ServerCounters
    from nuke_comfy_cluster.ui import server_table as st

    from .conftest import closed_port

    def polled(name, ip, port):
        server = ComfyUIServer(ServerConfig(name=name, ip=ip, port=port))
        try:
            server.update_status()
            return server.get_status()
        finally:
            server.close()

    now = time.time()
    servers = [
        polled("refused", "127.0.0.1", closed_port()),
        polled("nowhere", "no-such-host.invalid", 8188),
        server_snapshot("off", "disabled", enabled=False),
        server_snapshot("hot", "online", cooldown_until=now + 20, counters=ServerCounters(dispatches=5, failures=3)),
        server_snapshot(
            "slow",
            "offline",
            last_error="slow: no answer from http://10.0.0.9:8188 within 30 s (server hung or overloaded)",
        ),
        server_snapshot(
            "proxy",
            "error",
            last_error="proxy: GET /prompt answered HTTP 401 (refused our credentials: check the token)",
        ),
        server_snapshot("odd", "offline", last_error="odd: something new went wrong at http://10.0.0.9:8188/prompt"),
        server_snapshot("partial", "online"),
        server_snapshot("new", "unknown"),
    ]
    model.set_snapshot(_snapshot(servers), now)
    model.set_left_out({"partial": "no node ControlNetApplyAdvanced"})
    shown = {model.server_at(r).name: _cell(model, r, st.COL_STATUS) for r in range(model.rowCount())}
    assert shown == {
        "refused": "offline: connection refused",
        "nowhere": "DNS: no such host",
        "off": "disabled",
        "hot": "cooling down 20 s after 3 failures",
        "slow": "offline: no answer in 30 s",
        "proxy": "error: HTTP 401, credentials refused",
        "odd": "offline: something new went wrong at",
        "partial": "online · left out: no node ControlNetApplyAdvanced",
        "new": "not checked yet",
    }
    model.set_left_out({})  # the batch ended
    assert _cell(model, model.row_of("partial"), st.COL_STATUS) == "online"


def test_the_queue_column_explains_itself(model):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui.qt import QtCore

    Qt = QtCore.Qt
    tip = model.headerData(st.COL_QUEUE, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "running / waiting" in tip and "+N sent" in tip
    assert model.headerData(st.COL_QUEUE, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) == "Run / wait"
    now = time.time()
    model.set_snapshot(_snapshot([server_snapshot("b", "busy", queue_running=1, queue_pending=0, in_flight=1)]), now)
    assert _cell(model, 0, st.COL_QUEUE) == "1 / 0 +1 sent"
    assert "not listed by the server yet" in _cell(model, 0, st.COL_QUEUE, Qt.ItemDataRole.ToolTipRole)


def test_a_narrow_table_hides_gpu_and_vram_first_and_the_header_menu_brings_them_back(qtbot):
    from nuke_comfy_cluster.ui import server_table as st
    from nuke_comfy_cluster.ui import server_view as sv

    model = st.ServerTableModel()
    view = sv.ServerTableView(model)
    qtbot.addWidget(view)
    now = time.time()
    model.set_snapshot(_snapshot(_mixed(now)), now)
    view.fit_columns()
    view.resize(2000, 300)
    view.show()
    qtbot.waitUntil(lambda: view.viewport().width() > 1600, timeout=5000)
    assert view.hidden_columns() == []

    view.resize(400, 300)
    qtbot.waitUntil(lambda: st.COL_GPU in view.hidden_columns(), timeout=5000)
    hidden = view.hidden_columns()
    assert hidden == view.auto_hidden_columns()
    assert st.COL_VRAM in hidden and st.COL_STATUS not in hidden and st.COL_NAME not in hidden
    # hidden in the stated order: nothing later in HIDE_ORDER goes while an earlier one shows
    order = [c for c in sv.HIDE_ORDER if c in hidden]
    assert order == list(sv.HIDE_ORDER[: len(order)])
    visible = [c for c in range(len(st.HEADERS)) if c not in hidden]
    assert sum(view.columnWidth(c) for c in visible[:-1]) <= view.viewport().width()

    menu = view.column_menu()
    actions = {a.data(): a for a in menu.actions() if a.data() is not None}
    assert not actions[st.COL_GPU].isChecked() and "no room" in actions[st.COL_GPU].text()
    actions[st.COL_GPU].setChecked(True)  # the user wants the GPU back: it stays, the table scrolls
    assert st.COL_GPU not in view.hidden_columns()
    view.resize(390, 300)
    qtbot.wait(50)
    assert st.COL_GPU not in view.hidden_columns()
    view.column_menu().actions()[-1].trigger()  # "Fit columns to the width"
    assert st.COL_GPU in view.hidden_columns()

    view.resize(2000, 300)
    qtbot.waitUntil(lambda: view.hidden_columns() == [], timeout=5000)
