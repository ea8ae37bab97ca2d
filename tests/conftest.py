"""Shared fixtures: the protocol captures and simulator clusters on free loopback ports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# no screen here or in CI: Qt must not try to reach a display
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def protocol_dir() -> Path:
    env = os.environ.get("COMFYUI_PROTOCOL_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "comfyui-protocol"


@pytest.fixture(scope="session")
def captures() -> Path:
    path = protocol_dir() / "captures"
    if not path.is_dir():
        pytest.fail(f"protocol captures not found at {path} (set COMFYUI_PROTOCOL_DIR)")
    return path


def load_capture(name: str) -> dict:
    with open(protocol_dir() / "captures" / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads or writes the developer's real configuration."""
    monkeypatch.setenv("NUKE_COMFY_CLUSTER_HOME", str(tmp_path / "ncc-home"))
    # the batch ledger, beside (not inside) the test's folder, which tests list as output folders
    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path.parent / (tmp_path.name + "-ncc-state")))
    for var in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT", "NUKE_COMFYUI_DIR_LOCAL", "NUKE_COMFYUI_DIR_REMOTE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def start_sims():
    """start_sims([speeds], seconds=...) -> [SimProcess]; every process is stopped after the test."""
    from nuke_comfy_cluster.sim.process import SimProcess

    started = []

    def start(speeds, **kw):
        procs = []
        for speed in speeds:
            proc = SimProcess(speed=speed, **kw)
            started.append(proc)
            proc.start()
            procs.append(proc)
        return procs

    yield start
    for proc in started:
        try:
            proc.sigcont()
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        proc.stop()


def sim_configs(procs, **kw):
    from nuke_comfy_cluster.core.config import ServerConfig

    return [ServerConfig(name=f"sim{i}", ip="127.0.0.1", port=p.port, priority=i, **kw) for i, p in enumerate(procs)]


def wait_until(predicate, timeout=10.0, interval=0.05):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
