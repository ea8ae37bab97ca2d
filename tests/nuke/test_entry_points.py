"""init.py and menu.py, run the way Nuke runs them, against the fake Nuke."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from nuke_comfy_cluster.nuke_host import startup
from tests.conftest import REPO

from .fake_nuke import FakeNuke, FakePanel, Missing

INIT = str(REPO / "init.py")
MENU = str(REPO / "menu.py")


def test_start_up_does_no_thread_or_network_work():
    # a clean interpreter: the test process itself has simulator and cluster threads
    code = textwrap.dedent(
        """
        import socket, sys, threading
        sys.path.insert(0, {tests!r})
        from fake_nuke import FakeNuke
        def refuse(*a, **k):
            raise AssertionError("network at start-up")
        socket.socket.connect = refuse
        fake = FakeNuke(gui=True)
        sys.modules.update(nuke=fake.nuke, nukescripts=fake.nukescripts)
        sys.modules["nukescripts.panels"] = fake.panels_module
        fake.run_file({init!r})
        fake.run_file({menu!r})
        import pkgutil, importlib, nuke_comfy_cluster.nuke_host as host
        for m in pkgutil.iter_modules(host.__path__, "nuke_comfy_cluster.nuke_host."):
            importlib.import_module(m.name)
        from nuke_comfy_cluster.core import api
        assert api._default is None, "a cluster was built at start-up"
        assert threading.active_count() == 1, threading.enumerate()
        assert "PySide6" not in sys.modules and "PySide2" not in sys.modules, "Qt imported at start-up"
        assert "nuke_comfy_cluster.ui.panel" not in sys.modules
        print(len(fake.registered_widgets), len(fake.menus["Nuke"].items()))
        # when the artist opens it, Nuke evaluates the widget in __main__: it must resolve from nothing
        from fake_nuke import FakePanel
        cls = FakePanel(*fake.registered_widgets[0]).widget_class()
        from nuke_comfy_cluster.ui.qt import QtWidgets
        print(cls.__module__ + "." + cls.__name__, issubclass(cls, QtWidgets.QWidget))
        """
    ).format(tests=str(REPO / "tests" / "nuke"), init=INIT, menu=MENU)
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", startup.PANEL_CLASS, "True"]


def test_menu_py_registers_the_panel_and_adds_the_menus(fake: FakeNuke):
    fake.run_file(INIT)
    fake.run_file(MENU)

    assert fake.registered_widgets == [(startup.PANEL_WIDGET, startup.PANEL_TITLE, startup.PANEL_ID)]
    assert fake.menus["Pane"].findItem(startup.PANEL_TITLE) is not None
    assert startup.PANEL_ID in fake.panels

    tool = fake.menus["Nodes"].findItem(startup.MENU_NAME)
    assert tool is not None and tool.icon().endswith("comfy_cluster.png")
    with open(tool.icon(), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    node_item = fake.menus["Nodes"].findItem(f"{startup.MENU_NAME}/{startup.NODE_COMMAND}")
    assert node_item is not None and node_item.icon() == tool.icon()

    labels = [item.name() for item in fake.menus["Nuke"].findItem(startup.MENU_NAME).items()]
    assert labels == [label for label, _ in startup.COMMANDS]


def test_running_menu_py_twice_leaves_one_of_each(fake: FakeNuke):
    fake.run_file(MENU)
    fake.run_file(MENU)
    assert len(fake.menus["Pane"].items()) == 1
    assert len(fake.menus["Nuke"].findItem(startup.MENU_NAME).items()) == len(startup.COMMANDS)


def test_terminal_session_gets_no_menus(monkeypatch: pytest.MonkeyPatch):
    fake = FakeNuke(gui=False)
    fake.install(monkeypatch)
    fake.run_file(INIT)
    fake.run_file(MENU)
    assert fake.registered_widgets == []
    assert fake.menus == {}
    assert startup.install() is False


def test_a_failing_step_is_logged_and_the_rest_still_installs(fake: FakeNuke, caplog: pytest.LogCaptureFixture):
    def broken(*args, **kwargs):
        raise RuntimeError("no Qt in this Nuke")

    fake.panels_module.registerWidgetAsPanel = broken
    with caplog.at_level(logging.ERROR):
        fake.run_file(MENU)  # must not raise
    assert "register_panel failed" in caplog.text and "no Qt in this Nuke" in caplog.text
    assert fake.menus["Nodes"].findItem(startup.MENU_NAME) is not None
    assert startup.install() is False


def test_a_broken_package_does_not_stop_nuke(fake: FakeNuke, monkeypatch: pytest.MonkeyPatch, capfd):
    monkeypatch.setitem(sys.modules, "nuke_comfy_cluster.nuke_host.startup", None)  # import fails
    fake.run_file(MENU)  # must not raise: the traceback is printed and Nuke goes on
    err = capfd.readouterr().err
    assert "menu.py" in err and "ModuleNotFoundError" in err
    assert fake.menus == {}


def test_init_py_adds_the_vendored_packages_after_the_hosts(tmp_path, monkeypatch: pytest.MonkeyPatch):
    vendored = tmp_path / "site-packages"
    vendored.mkdir()
    monkeypatch.setattr(startup, "plugin_root", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert startup.init() == [str(vendored)]
    assert sys.path[-1] == str(vendored)
    assert startup.init() == []  # once


def test_fake_raises_on_what_it_does_not_implement(fake: FakeNuke):
    # the fake is only worth something if unknown API fails loudly
    with pytest.raises(Missing):
        fake.nuke.createNode("Blur")
    with pytest.raises(Missing):
        fake.nuke.nodes.Blur()
    with pytest.raises(Missing):
        fake.nuke.root().dependencies()


@pytest.mark.qt
def test_the_registered_panel_is_a_real_qwidget(fake: FakeNuke, configure, sims, qtbot):
    from nuke_comfy_cluster.ui.qt import QtWidgets

    from .conftest import server_dicts

    configure(server_dicts(sims))
    fake.run_file(MENU)
    widget, title, panel_id = fake.registered_widgets[0]
    cls = FakePanel(widget, title, panel_id).widget_class()  # resolved in __main__, as Nuke does
    assert f"{cls.__module__}.{cls.__name__}" == startup.PANEL_CLASS
    assert issubclass(cls, QtWidgets.QWidget)

    # the Pane menu entry builds it with no arguments, on the shared cluster
    panel = fake.menus["Pane"].findItem(title).invoke().widget
    qtbot.addWidget(panel)
    assert isinstance(panel, QtWidgets.QWidget)
    from nuke_comfy_cluster.core.api import default_cluster

    assert panel.cluster is default_cluster()
    panel.shutdown()


@pytest.mark.parametrize("gui", [True, False])
def test_init_py_registers_the_script_callbacks_once_in_every_session(monkeypatch: pytest.MonkeyPatch, gui: bool):
    # a terminal session closing its script must not drop its batches either
    fake = FakeNuke(gui=gui)
    fake.install(monkeypatch)
    fake.run_file(INIT)
    fake.run_file(INIT)  # Nuke may run an init.py twice (two plugin paths): one callback each
    assert fake.script_callbacks("load") == [startup.on_script_load]
    assert fake.script_callbacks("close") == [startup.on_script_close]


def test_the_script_callbacks_import_the_lifecycle_only_when_a_script_opens(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, {tests!r})
        from fake_nuke import FakeNuke
        fake = FakeNuke(gui=True)
        sys.modules.update(nuke=fake.nuke, nukescripts=fake.nukescripts)
        fake.run_file({init!r})
        print("nuke_comfy_cluster.nuke_host.lifecycle" in sys.modules)
        fake.save_script({script!r})
        fake.load_script({script!r})  # an empty script: closing and loading find nothing to do
        print("nuke_comfy_cluster.nuke_host.lifecycle" in sys.modules, fake.asked)
        """
    ).format(tests=str(REPO / "tests" / "nuke"), init=INIT, script=str(tmp_path / "empty.nk"))
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["False", "True []"]
