"""The real-ComfyUI tier: fixtures starting real ComfyUI 0.3.39 servers (see servers.py).

Collected only when asked for -- ``bash scripts/test --real`` (which sets
``NCC_REAL_TIER=1``) or a path under tests/real on the pytest command line --
so the rest of the suite never waits for a venv build or server starts.

One fleet of servers is shared by the whole tier (starting one costs 8-20 s and
~850 MB): three with the test-only nodes at GPU speeds 1 / 0.5 / 0.25, and one
started with ``--disable-all-custom-nodes`` (the box that lacks a custom node).
A test that kills a server leaves it to the ``fleet`` fixture to start it
again, on the same port, before the next test that needs it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

HERE = Path(__file__).resolve().parent

#: name -> RealServer keyword arguments
FLEET = {
    "fast": dict(speed=1.0, checkpoints=["a.safetensors"]),
    "mid": dict(speed=0.5, checkpoints=["a.safetensors"]),
    "slow": dict(speed=0.25, checkpoints=["a.safetensors"]),
    "bare": dict(speed=2.0, custom_nodes=False, checkpoints=["a.safetensors"]),
}


def _selected(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    if os.environ.get("NCC_REAL_TIER") == "1" or _selected(config):
        return None
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real: runs against real ComfyUI servers (tests/real)")


@pytest.fixture(scope="session")
def comfy_build():
    from .servers import build_comfyui, source_available

    if source_available() is None:
        pytest.skip("no ComfyUI source: set COMFYUI_SRC or put ../shared/comfyui/ComfyUI-0.3.39.tar.gz beside the repo")
    started = time.monotonic()
    build = build_comfyui()
    print(f"\n[real tier] ComfyUI build ready in {time.monotonic() - started:.1f}s: {build.root}")
    return build


@pytest.fixture(scope="session")
def _fleet(comfy_build) -> Iterator[Dict[str, object]]:
    from .servers import start_servers, stop_servers

    started = time.monotonic()
    servers = start_servers(comfy_build, [dict(name=name, **spec) for name, spec in FLEET.items()])
    print(f"\n[real tier] {len(servers)} ComfyUI servers up in {time.monotonic() - started:.1f}s")
    try:
        yield {server.name: server for server in servers}
    finally:
        stop_servers(servers)


@pytest.fixture
def fleet(_fleet):
    """The shared servers, each running (restarted on its port if a test killed it) and idle."""
    from .servers import RealServer

    dead = [s for s in _fleet.values() if not s.alive]
    for server in dead:
        server.restart()
    for server in _fleet.values():
        assert isinstance(server, RealServer)
        server.post_json("/queue", {"clear": True})
        server.post_json("/interrupt", {})
    deadline = time.monotonic() + 60
    for server in _fleet.values():
        while server.get_json("/prompt")["exec_info"]["queue_remaining"]:
            assert time.monotonic() < deadline, f"{server.name} does not get idle"
            time.sleep(0.1)
    return _fleet
