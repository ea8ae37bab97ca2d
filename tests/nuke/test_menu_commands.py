"""The Nuke menu commands: status refresh (off the main thread), server panel, config editor."""

from __future__ import annotations

import threading

import pytest

from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.nuke_host.startup import MENU_NAME
from tests.conftest import REPO

from .conftest import server_dicts
from .fake_nuke import FakeNuke


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
def test_server_panel_and_config_editor_commands_open_qt_windows(fake: FakeNuke, configure, sims, qtbot):
    pytest.importorskip("nuke_comfy_cluster.ui.config_editor")
    from nuke_comfy_cluster.core.api import default_cluster
    from nuke_comfy_cluster.ui.config_editor import DISCARD
    from nuke_comfy_cluster.ui.qt import QtWidgets

    configure(server_dicts(sims))
    fake.run_file(str(REPO / "menu.py"))

    panel = command(fake, "Server Panel").invoke().widget
    qtbot.addWidget(panel)
    assert isinstance(panel, QtWidgets.QWidget) and panel.cluster is default_cluster()
    assert fake.called("restorePanel")

    dialog = command(fake, "Edit Servers...").invoke()
    qtbot.addWidget(dialog)
    assert isinstance(dialog, QtWidgets.QDialog) and dialog.isVisible()
    assert dialog.pool is default_cluster().pool  # edits apply to the pool the nodes use
    dialog.ask_unsaved = lambda action: DISCARD
    dialog.close()
    panel.shutdown()
