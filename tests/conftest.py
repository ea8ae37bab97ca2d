"""Shared fixtures: the protocol captures and simulator clusters on free loopback ports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def protocol_dir() -> Path:
    env = os.environ.get("COMFYUI_PROTOCOL_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "comfyui-protocol"


@pytest.fixture(scope="session")
def captures() -> Path:
    path = protocol_dir() / "captures"
    if not path.is_dir():
        pytest.fail("protocol captures not found at {} (set COMFYUI_PROTOCOL_DIR)".format(path))
    return path


def load_capture(name: str) -> dict:
    with open(protocol_dir() / "captures" / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads or writes the developer's real configuration."""
    monkeypatch.setenv("NUKE_COMFY_CLUSTER_HOME", str(tmp_path / "ncc-home"))
    for var in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT", "NUKE_COMFYUI_DIR_LOCAL", "NUKE_COMFYUI_DIR_REMOTE"):
        monkeypatch.delenv(var, raising=False)
