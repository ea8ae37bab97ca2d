"""Fixtures for the Qt tests (run under PySide6 and PySide2, offscreen).

Every cluster and panel made here is closed after its test; simulator processes
come from the root ``start_sims`` fixture, which stops them.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, List, Optional

import pytest

# before any QApplication exists: tests never need a display
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_snapshot(name: str, status: str = "online", **kw: Any) -> Any:
    """A ServerSnapshot as the pool would hand it to the UI."""
    from nuke_comfy_cluster.core.state import ServerSnapshot, ServerStatus

    port = kw.pop("port", 8188)
    fields = dict(
        name=name,
        host=kw.pop("host", "127.0.0.1"),
        port=port,
        url="http://127.0.0.1:{}".format(port),
        priority=kw.pop("priority", 0),
        enabled=kw.pop("enabled", status != "disabled"),
        status=ServerStatus(status),
    )
    fields.update(kw)
    return ServerSnapshot(**fields)


@pytest.fixture
def make_cluster() -> Any:
    """make_cluster(configs, start=True) -> Cluster; closed after the test."""
    from nuke_comfy_cluster.core.api import Cluster

    made: List[Any] = []

    def make(configs: Any, start: bool = True, **kw: Any) -> Any:
        cluster = Cluster.from_servers(configs, start=start, **kw)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def make_panel(qtbot: Any, make_cluster: Any) -> Any:
    """make_panel(cluster, **kw) -> ClusterPanel; shut down (threads joined) before its cluster closes."""
    from nuke_comfy_cluster.ui.panel import ClusterPanel

    panels: List[Any] = []

    def make(cluster: Any, **kw: Any) -> Any:
        panel = ClusterPanel(cluster, **kw)
        qtbot.addWidget(panel)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        assert panel.shutdown(timeout=20.0), "a panel worker thread did not finish"


class Heartbeat:
    """A QTimer on the GUI thread: the longest gap between its ticks is how long the
    event loop was blocked (plus the interval)."""

    def __init__(self, interval_ms: int = 10) -> None:
        from nuke_comfy_cluster.ui.qt import QtCore

        self.interval = interval_ms / 1000.0
        self.max_gap = 0.0
        self.ticks = 0
        self._last: Optional[float] = None
        self.timer = QtCore.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last is not None:
            self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        self.ticks += 1

    def start(self) -> Heartbeat:
        self._last = time.monotonic()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.stop()


@pytest.fixture
def heartbeat(qtbot: Any) -> Callable[..., Heartbeat]:
    beats: List[Heartbeat] = []

    def make(interval_ms: int = 10) -> Heartbeat:
        beat = Heartbeat(interval_ms).start()
        beats.append(beat)
        return beat

    yield make
    for beat in beats:
        beat.stop()


def sim_servers(procs: Any, **kw: Any) -> List[Any]:
    from nuke_comfy_cluster.core.config import ServerConfig

    return [
        ServerConfig(name="sim{}".format(i), ip="127.0.0.1", port=p.port, priority=i, **kw) for i, p in enumerate(procs)
    ]


def frame_jobs(frames: Any) -> List[Any]:
    """Jobs of a tiny simulator workflow, each frame a different prompt (no cache hits)."""
    from nuke_comfy_cluster.ui.standalone import demo_jobs

    return demo_jobs(list(frames))
