"""The binding shim: the binding pytest-qt runs is the one the UI uses, and the shared names work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.qt


def test_shim_uses_the_binding_pytest_qt_runs(qapp):
    from pytestqt.qt_compat import qt_api

    from nuke_comfy_cluster.ui import qt

    assert qt.BINDING.lower() == qt_api.pytest_qt_api
    forced = os.environ.get("NCC_QT_API")
    if forced:
        assert qt.BINDING.lower() == forced.lower()
    assert qt.QT_MAJOR == (6 if qt.BINDING == "PySide6" else 5)
    assert qt.QtCore.__name__ == qt.BINDING + ".QtCore"


def test_qaction_exec_and_enum_helpers(qtbot):
    from nuke_comfy_cluster.ui import qt

    widget = qt.QtWidgets.QWidget()
    qtbot.addWidget(widget)
    action = qt.QAction("Refresh", widget)
    fired = []
    action.triggered.connect(lambda *_: fired.append(True))
    action.trigger()
    assert fired == [True]
    expected_home = qt.QtGui if qt.QT_MAJOR == 6 else qt.QtWidgets
    assert qt.QAction is expected_home.QAction

    loop = qt.QtCore.QEventLoop()
    qt.QtCore.QTimer.singleShot(0, lambda: loop.exit(7))
    assert qt.exec_(loop) == 7

    assert qt.enum_value(qt.QtCore.Qt.CheckState.Checked) == 2
    assert qt.enum_value(2) == 2


def test_unknown_binding_name_is_refused_with_a_message():
    env = dict(os.environ, NCC_QT_API="pyqt4")
    proc = subprocess.run(
        [sys.executable, "-c", "import nuke_comfy_cluster.ui.qt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "NCC_QT_API='pyqt4'" in proc.stderr and "pyside6" in proc.stderr


def test_importing_the_ui_package_does_no_qt_work():
    code = "import sys, nuke_comfy_cluster.ui; print(any(m.startswith(('PySide2', 'PySide6')) for m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_binding_calls_do_not_run_the_singletons_down():
    """PySide6 6.12.0 loses a reference to None on every void call and to True on every
    emit(); on Python 3.11 that aborts the interpreter ("none_dealloc" / "bool_dealloc")
    after a few thousand calls. The shim's fix keeps a fresh interpreter alive through many."""
    code = """
import sys
from nuke_comfy_cluster.ui import qt

app = qt.QtWidgets.QApplication([])
fixed = qt.apply_binding_fixes()

class Source(qt.QtCore.QObject):
    changed = qt.Signal(object)

source = Source()
got = []
source.changed.connect(got.append)
label = qt.QtWidgets.QLabel()
for i in range(20000):
    label.setText(str(i % 7))      # void calls
for i in range(5000):
    qt.emit(source.changed, i)     # emits
print(fixed, len(got))
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr  # an abort (134) is the bug itself
    fixed, received = proc.stdout.split()
    assert received == "5000"
    assert "dealloc" not in proc.stderr
