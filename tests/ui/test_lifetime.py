"""Object lifetime: closed windows are freed on the GUI thread, never by the cyclic GC.

Python's cyclic garbage collector runs on whichever thread allocates when its
threshold is crossed: in Nuke that is often one of the cluster's websocket or
status threads. A widget tree it frees is deleted on that thread; Qt cannot stop
the widgets' timers from there ("QObject::~QObject: Timers cannot be stopped from
another thread") and the next timer event lands on freed memory. That was the
PySide2 test crash of issue 15, and Nuke could crash the same way. So a closed
panel or editor must hold no reference cycle: when its owner drops it, reference
counting frees it at once, on the owner's (GUI) thread.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from typing import Any, Iterator

import pytest

from tests.conftest import REPO

from .conftest import closed_port

pytestmark = pytest.mark.qt


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects during the test (the GC would hide a cycle)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _dead_cluster(make_cluster: Any) -> Any:
    from nuke_comfy_cluster.core.config import ServerConfig

    return make_cluster([ServerConfig(name="gpu-a", ip="127.0.0.1", port=closed_port())], start=False)


def test_a_closed_panel_is_freed_by_reference_counting(qtbot, make_cluster, no_cyclic_gc):
    from nuke_comfy_cluster.ui.panel import ClusterPanel

    cluster = _dead_cluster(make_cluster)
    panel = ClusterPanel(cluster)  # as Nuke builds it: no parent, the first refresh pending
    panel.resize(420, 360)
    panel.show()
    _wait(qtbot, panel, lambda p: not p.refreshing)
    assert panel.shutdown(timeout=20.0)
    panel.close()
    freed = weakref.ref(panel)
    del panel
    assert freed() is None, "a closed panel is only freed by the cyclic GC: " + _referrers(freed)


def test_a_closed_config_editor_is_freed_by_reference_counting(qtbot, tmp_path, no_cyclic_gc):
    from nuke_comfy_cluster.ui.config_editor import ConfigEditorDialog

    dialog = ConfigEditorDialog(None, path=str(tmp_path / "servers.json"), environ={})
    _wait(qtbot, dialog, lambda d: d.ready and not d.busy)
    dialog.close()
    freed = weakref.ref(dialog)
    del dialog
    assert freed() is None, "a closed editor is only freed by the cyclic GC: " + _referrers(freed)


def test_core_threads_hold_children_of_the_panel_not_the_panel(qtbot, make_cluster, no_cyclic_gc):
    """The pool listener and the dispatcher hook run on core threads: whatever they hold
    must not keep the panel alive, or a core thread could end up the one that frees it."""
    from nuke_comfy_cluster.ui.panel import ClusterPanel

    cluster = _dead_cluster(make_cluster)
    panel = ClusterPanel(cluster, auto_refresh=False)
    qtbot.addWidget(panel)
    held = list(getattr(cluster.pool, "_listeners", ())) + list(getattr(cluster.dispatcher, "_batch_listeners", ()))
    ours = [h for h in held if getattr(h, "__self__", None) is not None and _owned_by(h.__self__, panel)]
    assert ours, "the panel registered no listener with the core"
    assert all(h.__self__ is not panel for h in ours), "a core thread holds the panel itself"
    assert panel.shutdown()


def test_a_panel_left_to_a_garbage_collection_on_another_thread_does_not_crash():
    """The crash itself, in a child process: a closed panel is dropped, a worker thread
    runs the collector, then the GUI thread processes its events."""
    code = textwrap.dedent(
        """
        import gc, threading
        from nuke_comfy_cluster.ui.qt import QtWidgets
        app = QtWidgets.QApplication([])
        from nuke_comfy_cluster.core.api import Cluster
        from nuke_comfy_cluster.core.config import ServerConfig
        from nuke_comfy_cluster.ui.panel import ClusterPanel
        cluster = Cluster.from_servers([ServerConfig(name="a", ip="127.0.0.1", port={port})], start=False)
        gc.disable()
        for _ in range(3):
            panel = ClusterPanel(cluster, auto_refresh=False)
            panel.shutdown()
            del panel
            worker = threading.Thread(target=gc.collect)
            worker.start()
            worker.join()
            for _ in range(3):
                app.processEvents()
        cluster.close()
        print("ok")
        """
    ).format(port=closed_port())
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    from nuke_comfy_cluster.ui.qt import BINDING

    env["NCC_QT_API"] = BINDING.lower()
    out = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr[-3000:]
    assert "Timers cannot be stopped from another thread" not in out.stderr


def test_a_bridge_never_emits_after_close(qtbot):
    from nuke_comfy_cluster.ui.workers import SnapshotBridge

    bridge = SnapshotBridge(min_interval=0.0)
    got = []
    bridge.snapshot_changed.connect(got.append)
    stop = threading.Event()

    def hammer() -> None:
        n = 0
        while not stop.is_set():
            bridge.push(n)
            n += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        qtbot.waitUntil(lambda: len(got) >= 3, timeout=10000)
        bridge.close()
        seen = len(got)
        qtbot.wait(100)
    finally:
        stop.set()
        thread.join(10)
    assert len(got) == seen, "a snapshot was delivered after close()"


def _wait(qtbot: Any, widget: Any, done: Any) -> None:
    # a helper, not a closure in the test: a closure cell would outlive ``del widget``
    qtbot.waitUntil(lambda: done(widget), timeout=20000)


def _owned_by(obj: Any, panel: Any) -> bool:
    parent = obj
    while parent is not None:
        if parent is panel:
            return True
        try:
            parent = parent.parent()
        except (AttributeError, RuntimeError):
            return False
    return False


def _referrers(ref: Any) -> str:
    obj = ref()
    if obj is None:
        return ""
    names = [type(r).__name__ for r in gc.get_referrers(obj) if r is not sys._getframe()]  # noqa: SLF001
    return "held by " + ", ".join(names)
