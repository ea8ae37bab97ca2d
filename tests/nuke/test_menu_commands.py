"""The Nuke menu commands: status refresh (off the main thread), server panel, config editor."""

from __future__ import annotations

import sys
import threading

import pytest

from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.nuke_host.startup import MENU_NAME, PANEL_ID, PANEL_TITLE
from tests.conftest import REPO

from .conftest import server_dicts
from .fake_nuke import FakeNuke
from .test_node import OFFLINE


def command(fake: FakeNuke, label: str):
    return fake.menus["Nuke"].findItem(f"{MENU_NAME}/{label}")


@pytest.mark.integration
def test_refresh_status_polls_off_the_main_thread_and_updates_the_nodes(fake: FakeNuke, configure, sims, connects):
    configure(server_dicts(sims[:2]))
    fake.run_file(str(REPO / "menu.py"))
    node = command(fake, "ComfyUI Cluster Node").invoke()
    assert node[N.K_SERVER].values() == [N.AUTO_SERVER, "sim-a", "sim-b"]

    configure(server_dicts(sims) + [{"name": "gpu-dead", "ip": "127.0.0.1", "port": 1}])
    worker = command(fake, "Refresh Server Status").invoke()
    assert worker is not None and worker.name == "ncc-refresh-status"
    fake.pump(lambda: bool(fake.messages), 30, "the status summary")
    worker.join(5)

    summary = fake.messages[-1]
    for sim in sims:
        assert f"{sim.name} ({sim.url}): online" in summary or f"{sim.name} ({sim.url}): busy" in summary
    assert "gpu-dead (http://127.0.0.1:1): offline" in summary
    assert node[N.K_SERVER].values() == [N.AUTO_SERVER, "sim-a", "sim-b", "sim-c", "gpu-dead"]
    assert threading.main_thread().name not in connects


@pytest.mark.qt
def test_the_server_panel_command_docks_the_panel_and_reuses_it(fake: FakeNuke, configure, qtbot):
    from nuke_comfy_cluster.core.api import default_cluster
    from nuke_comfy_cluster.ui.panel import ClusterPanel
    from nuke_comfy_cluster.ui.qt import QtWidgets

    configure(OFFLINE)
    fake.run_file(str(REPO / "menu.py"))
    # from the menu bar Nuke has no current pane: the panel must say where it docks
    panel = command(fake, "Server Panel").invoke()
    properties = fake.api_getPaneFor("Properties.1")
    assert fake.api_getPaneFor(PANEL_ID) is properties
    qtbot.addWidget(properties.stack)
    assert isinstance(panel, ClusterPanel) and panel.cluster is default_cluster()
    assert properties.stack.currentWidget() is panel

    # the artist looks at another tab of that pane, then asks for the panel again
    other = QtWidgets.QWidget()
    properties.stack.addWidget(other)
    properties.stack.setCurrentWidget(other)
    assert command(fake, "Server Panel").invoke() is panel
    assert properties.stack.currentWidget() is panel
    assert fake.widgets_built == [panel]

    # closed, it opens again; opened from a pane's menu, the menu bar finds that one
    fake.close_panel(PANEL_ID)
    assert panel.closed
    from_pane_menu = fake.pane_menu(PANEL_TITLE, pane="DAG.1").widget
    dag = fake.api_getPaneFor("DAG.1")
    qtbot.addWidget(dag.stack)
    assert fake.api_getPaneFor(PANEL_ID) is dag
    assert command(fake, "Server Panel").invoke() is from_pane_menu
    assert fake.widgets_built == [panel, from_pane_menu]
    assert fake.messages == []
    from_pane_menu.shutdown()


@pytest.mark.qt
def test_without_qt_the_server_panel_command_explains(fake: FakeNuke, configure, monkeypatch: pytest.MonkeyPatch):
    configure(OFFLINE)
    fake.run_file(str(REPO / "menu.py"))
    monkeypatch.setitem(sys.modules, "nuke_comfy_cluster.ui.panel", None)  # the binding cannot load
    assert command(fake, "Server Panel").invoke() is None
    assert fake.messages and "Opening the ComfyUI Cluster panel failed" in fake.messages[-1]
    assert fake.api_getPaneFor(PANEL_ID) is None


@pytest.mark.qt
def test_the_config_editor_command_edits_the_shared_pool(fake: FakeNuke, configure, qtbot):
    from nuke_comfy_cluster.core.api import default_cluster
    from nuke_comfy_cluster.ui.config_editor import DISCARD
    from nuke_comfy_cluster.ui.qt import QtWidgets

    configure(OFFLINE)
    fake.run_file(str(REPO / "menu.py"))
    dialog = command(fake, "Edit Servers...").invoke()
    qtbot.addWidget(dialog)
    assert isinstance(dialog, QtWidgets.QDialog) and dialog.isVisible()
    assert dialog.pool is default_cluster().pool  # edits apply to the pool the nodes use
    dialog.ask_unsaved = lambda action: DISCARD
    dialog.close()
