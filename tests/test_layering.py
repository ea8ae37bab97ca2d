"""The core imports neither Qt nor nuke, and importing any module does no work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def test_core_imports_with_qt_and_nuke_blocked():
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys, threading
        for name in ("nuke", "nukescripts", "PySide2", "PySide6", "qtpy", "PyQt5", "PyQt6", "shiboken2", "shiboken6"):
            sys.modules[name] = None
        import nuke_comfy_cluster.core as core
        names = [m.name for m in pkgutil.iter_modules(core.__path__, "nuke_comfy_cluster.core.")]
        names += ["nuke_comfy_cluster.cli", "nuke_comfy_cluster.cli.status_cmds", "nuke_comfy_cluster.cli.submit_cmd"]
        for name in names:
            importlib.import_module(name)
        assert threading.active_count() == 1, threading.enumerate()
        print(len(names))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 15


def test_nothing_but_nuke_host_imports_nuke():
    offenders = []
    for path in (REPO / "nuke_comfy_cluster").rglob("*.py"):
        if "nuke_host" in path.parts:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import nuke", "from nuke ", "import nukescripts", "from nukescripts")):
                if not stripped.startswith(("import nuke_comfy_cluster", "from nuke_comfy_cluster")):
                    offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert offenders == []


def test_ui_imports_qt_only_through_the_shim():
    offenders = []
    for path in (REPO / "nuke_comfy_cluster" / "ui").rglob("*.py"):
        if path.name == "qt.py":
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s.startswith(("import PySide", "from PySide", "import shiboken", "from shiboken")):
                offenders.append(f"{path.name}: {s}")
    assert offenders == []


def test_every_package_module_is_importable_without_side_effects():
    """Import every module (ui with Qt, nuke_host without nuke): no thread, no socket."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, socket, sys, threading
        opened = []
        real = socket.socket.connect
        socket.socket.connect = lambda self, *a: opened.append(a) or real(self, *a)
        import nuke_comfy_cluster
        names = [m.name for m in pkgutil.walk_packages(nuke_comfy_cluster.__path__, "nuke_comfy_cluster.")]
        skip = ("nuke_comfy_cluster.__main__", "nuke_comfy_cluster.sim.__main__")
        for name in names:
            if name not in skip:
                importlib.import_module(name)
        assert "nuke" not in sys.modules, "something imported nuke at import time"
        assert threading.active_count() == 1, threading.enumerate()
        assert not opened, opened
        print(len(names))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 40
