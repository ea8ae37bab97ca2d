"""The panel docked beside the viewer: small sizes, every server still a visible row."""

from __future__ import annotations

import json

import pytest

from .conftest import closed_port

pytestmark = pytest.mark.qt

SERVERS = ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]


@pytest.fixture
def broken_config_cluster():
    """Four usable servers and one broken entry: an error banner, four rows."""
    from nuke_comfy_cluster.core.api import Cluster
    from nuke_comfy_cluster.core.pool import ComfyUIServerPool

    entries = [
        {"name": name, "ip": "127.0.0.1", "port": closed_port(), "priority": i} for i, name in enumerate(SERVERS)
    ]
    entries.append({"name": "gpu-e", "ip": "127.0.0.1", "port": "http"})
    pool = ComfyUIServerPool()
    pool.load_configuration({"NUKE_COMFYUI_SERVERS": json.dumps(entries)})
    cluster = Cluster(pool, start=False)
    yield cluster
    cluster.close()


def _settled(qtbot, panel, size):
    panel.resize(*size)
    panel.show()
    qtbot.waitUntil(lambda: panel.size().width() == size[0] and panel.size().height() == size[1], timeout=5000)
    qtbot.wait(50)  # the table is fitted after the layout has run


def _visible_rows(panel):
    from nuke_comfy_cluster.ui import server_table as st

    table = panel.table
    height = table.viewport().height()
    names = []
    for row in range(table.proxy.rowCount()):
        rect = table.visualRect(table.proxy.index(row, st.COL_NAME))
        if rect.isValid() and rect.top() >= 0 and rect.bottom() < height:
            names.append(table.proxy.index(row, st.COL_NAME).data())
    return sorted(names)


@pytest.mark.parametrize("size", [(420, 360), (600, 400)])
def test_docked_every_server_is_a_visible_row(size, broken_config_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import server_table as st

    panel = make_panel(broken_config_cluster, auto_refresh=False)
    hint = panel.minimumSizeHint()
    assert hint.width() <= size[0] and hint.height() <= size[1], hint
    _settled(qtbot, panel, size)

    qtbot.waitUntil(lambda: _visible_rows(panel) == SERVERS, timeout=5000)
    assert panel.jobs_box.height() > 60, "the jobs keep some room"

    # the config error is one line until clicked
    banner = panel.banner
    assert banner.level == "error" and not banner.expanded
    assert banner.height() <= 2 * banner.fontMetrics().height() + 8
    assert "Error:" in banner.label.text() and "port" in banner.label.text()

    # columns that do not fit are hidden, GPU and VRAM first; what shows fits the width
    table = panel.table
    hidden = table.hidden_columns()
    assert st.COL_GPU in hidden and st.COL_VRAM in hidden
    assert st.COL_STATUS not in hidden and st.COL_NAME not in hidden and st.COL_QUEUE not in hidden
    assert table.horizontalHeader().length() <= table.viewport().width()
    # ... and come back from the header's menu
    gpu = next(a for a in table.column_menu().actions() if a.data() == st.COL_GPU)
    gpu.setChecked(True)
    assert st.COL_GPU not in table.hidden_columns()
    assert _visible_rows(panel) == SERVERS  # a horizontal scroll bar now: the rows still show


def test_the_banner_opens_on_click_and_folds_again(broken_config_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui.qt import QtCore

    panel = make_panel(broken_config_cluster, auto_refresh=False)
    _settled(qtbot, panel, (420, 360))
    banner = panel.banner
    one_line = banner.height()
    qtbot.mouseClick(banner, QtCore.Qt.MouseButton.LeftButton)
    assert banner.expanded and banner.details.isVisible()
    assert "gpu-e" in banner.details.text() or "entry 5" in banner.details.text()
    assert "Using 4 servers" in banner.details.text()  # the source, below the problems
    qtbot.waitUntil(lambda: banner.height() > one_line, timeout=2000)
    qtbot.mouseClick(banner.toggle, QtCore.Qt.MouseButton.LeftButton)
    assert not banner.expanded and not banner.details.isVisible()


def test_one_button_opens_the_editor(broken_config_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui.qt import QtWidgets

    panel = make_panel(broken_config_cluster, auto_refresh=False)
    buttons = [b for b in panel.findChildren(QtWidgets.QPushButton) if b.isVisibleTo(panel)]
    to_editor = [b for b in buttons if "config" in b.text().lower() or "edit" in b.text().lower()]
    assert to_editor == [panel.config_button]
    assert panel.banner.findChildren(QtWidgets.QPushButton) == []


def test_the_status_line_does_not_hold_the_panel_wide(broken_config_cluster, make_panel, qtbot):
    panel = make_panel(broken_config_cluster, auto_refresh=False)
    panel._message("x" * 400)  # noqa: SLF001 - a long message, as a failed submission may give
    assert panel.minimumSizeHint().width() <= 420
    _settled(qtbot, panel, (420, 360))
    assert panel.status_label.text().endswith("x" * 10)  # the whole text is kept...
    assert panel.status_label.shown_text().endswith("…")  # ...and drawn cut
    assert "x" * 400 in panel.status_label.toolTip()


def test_the_one_line_names_the_file_not_its_folders(qapp):
    from nuke_comfy_cluster.ui.widgets import ConfigBanner

    banner = ConfigBanner()
    where = "/mnt/studio/pipeline/config/nuke/comfyui_servers.json"
    banner.set_state(f"Using 2 servers from {where}", [], [f'{where} entry 5 ("gpu-new") at line 26: field "port"'])
    assert banner.label.text() == 'Error: comfyui_servers.json entry 5 ("gpu-new") at line 26: field "port"'
    assert where in banner.details.text() and where in banner.toolTip()
