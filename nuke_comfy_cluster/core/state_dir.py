"""Where the project keeps its state (batch ledger, learned speeds): per user, per platform.

- ``NCC_STATE_DIR`` when set (tests, studios that want it on a local disk);
- Linux and other POSIX: ``$XDG_STATE_HOME/nuke_comfy_cluster`` (default ``~/.local/state``);
- macOS: ``~/Library/Application Support/nuke_comfy_cluster``;
- Windows: ``%LOCALAPPDATA%\\nuke_comfy_cluster`` (default ``~\\AppData\\Local``).

Never the output folder: a shared drive may be mounted elsewhere or read-only. The
folder is not created here (no work at import time, nor on a mere question).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional

APP = "nuke_comfy_cluster"
ENV_STATE_DIR = "NCC_STATE_DIR"


def state_dir(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> Path:
    """The state folder for this user on this platform (see the module docstring)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    override = env.get(ENV_STATE_DIR, "").strip()
    if override:
        return Path(os.path.expanduser(override))
    home = Path(os.path.expanduser("~"))
    if platform == "win32":
        base = env.get("LOCALAPPDATA", "").strip()
        return (Path(base) if base else home / "AppData" / "Local") / APP
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP
    base = env.get("XDG_STATE_HOME", "").strip()
    # the XDG spec: a relative path is invalid and must be ignored
    if base and os.path.isabs(base):
        return Path(base) / APP
    return home / ".local" / "state" / APP
