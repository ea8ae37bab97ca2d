"""Options several commands share: ``--config FILE`` and ``-v`` after the command name."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from ..core.config import ENV_SERVERS, read_config_file


def positive_seconds(text: str) -> float:
    """argparse type for --watch / --timeout: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return value


def add_common(p: Any, config: bool = True) -> None:
    """``--config FILE`` (same as NUKE_COMFYUI_SERVERS=FILE) and ``-v`` accepted after the command too."""
    if config:
        p.add_argument(
            "--config",
            metavar="FILE",
            help=f"read the servers from this JSON file (same as {ENV_SERVERS}=FILE)",
        )
    # SUPPRESS: without -v here, the value given before the command name stays
    p.add_argument("-v", dest="verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def apply_config(args: argparse.Namespace) -> Optional[int]:
    """Point the environment at ``--config FILE`` for this process; an exit code when the file is unusable.

    An explicit file that cannot be read must not quietly fall back to another
    server list (a submit would go to 127.0.0.1), so it is refused here.
    """
    path = getattr(args, "config", None)
    if not path:
        return None
    full = os.path.abspath(os.path.expanduser(path))
    read = read_config_file(full, "--config")
    if read.text is None:
        print(f"error: {read.issues[0].message}", file=sys.stderr)
        return 2
    os.environ[ENV_SERVERS] = full
    return None
