"""Fixtures for the Nuke host: a fresh fake Nuke per test, a cluster from the environment, simulators.

The simulators share one "network drive" (a tmp folder): one input folder for
all, one output folder each (two servers writing one folder would race for
ComfyUI's file counter, as real servers would). Configurations point at that
drive through a symlink, so dir_local and dir_remote really differ and the
path mapping is exercised.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from nuke_comfy_cluster.sim.process import SimProcess, stop_all
from tests.conftest import protocol_dir

from .fake_nuke import FakeNuke

WORKFLOWS = protocol_dir() / "workflows"

SIM_SECONDS = 0.1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """A fresh fake Nuke (GUI session) installed as ``nuke`` / ``nukescripts``."""
    saved_path = list(sys.path)
    f = FakeNuke(gui=True)
    f.install(monkeypatch)
    yield f
    # runs left behind by a failing test must not keep marshalling into the next one, nor count
    # as running there (their last main-thread call was never pumped)
    from nuke_comfy_cluster.nuke_host import submit

    for run in submit.active_runs():
        run.cancel()
    with submit._runs_lock:
        submit._runs.clear()
    submit._ended_away.clear()
    sys.path[:] = saved_path


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch):
    """``configure([server dicts])``: NUKE_COMFYUI_SERVERS for a fresh process-wide cluster."""
    from nuke_comfy_cluster.core import api

    monkeypatch.setattr(api, "_default", None)

    def apply(servers: List[Dict[str, Any]]) -> None:
        _close(api)
        monkeypatch.setenv("NUKE_COMFYUI_SERVERS", json.dumps(servers))

    yield apply
    _close(api)


def _close(api: Any) -> None:
    cluster, api._default = api._default, None
    if cluster is None:
        return
    cluster.close()


@pytest.fixture(scope="session")
def share(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    real = tmp_path_factory.mktemp("share")
    (real / "input").mkdir()
    link = real.parent / (real.name + "-mounted")
    os.symlink(str(real), str(link))
    return {"remote": real, "local": link}


@pytest.fixture(scope="session")
def sims(share: Dict[str, Path]):
    """Three simulators (speeds 1, 1, 0.5) on the shared drive."""
    procs = [
        SimProcess(
            speed=speed,
            seconds=SIM_SECONDS,
            name=name,
            output_dir=str(share["remote"] / ("out_" + name)),
            input_dir=str(share["remote"] / "input"),
        )
        for speed, name in ((1.0, "sim-a"), (1.0, "sim-b"), (0.5, "sim-c"))
    ]
    errors: List[BaseException] = []

    def start(p: SimProcess) -> None:
        try:
            p.start(timeout=30)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    try:
        if errors:
            raise errors[0]
        yield procs
    finally:
        stop_all(procs, cleanup=False)


def server_dicts(procs: List[SimProcess], share: Optional[Dict[str, Path]] = None) -> List[Dict[str, Any]]:
    out = []
    for p in procs:
        entry: Dict[str, Any] = {"name": p.name, "ip": "127.0.0.1", "port": p.port}
        if share is not None:
            entry.update(dir_local=str(share["local"]), dir_remote=str(share["remote"]))
        out.append(entry)
    return out


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Names of the threads that opened a TCP connection (the main thread never may)."""
    seen: List[str] = []
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.fixture
def plate(fake: FakeNuke) -> Callable[..., Any]:
    """``plate(first, last, name="Plate")``: a selected Read upstream, like footage in a script."""

    def make(first: int = 1001, last: int = 1024, name: str = "Plate") -> Any:
        read = fake.nuke.nodes.Read(name=name, file=f"/footage/{name}.####.exr", first=first, last=last)
        read.setSelected(True)
        return read

    return make
