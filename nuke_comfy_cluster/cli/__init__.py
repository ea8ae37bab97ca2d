"""Command line: ``python -m nuke_comfy_cluster COMMAND``.

Commands: validate, status, health, submit, demo, backup, restore, export, import,
panel, install, uninstall. Every command turns project errors into one message
on stderr and an exit code; a traceback means a bug.

Exit codes shared by every command: 0 success, 1 the work failed (or, for
``validate`` / ``health``, what they check is bad), 2 refused (bad arguments,
configuration or workflow: nothing was rendered), 130 / 143 / 129 stopped by
SIGINT (Ctrl-C) / SIGTERM / SIGHUP, 141 the reader of stdout went away
(``validate | head -1``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import List, Optional

from ..core.errors import ClusterError, user_message

EXIT_REFUSED = 2
EXIT_BROKEN_PIPE = 141

#: ``-v``: what the project does (which frame went to which server and why)
#: ``-vv``: also every HTTP connection (urllib3)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import batch_cmds, config_cmds, demo, status_cmds, submit_cmd

    parser = argparse.ArgumentParser(
        prog="python -m nuke_comfy_cluster", description="Run ComfyUI from Nuke on a cluster of servers."
    )
    parser.add_argument("--version", action="version", version=f"nuke_comfy_cluster {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what happens: which frame went to which server and why (-vv: every HTTP request too; never secrets)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    config_cmds.register(sub)
    status_cmds.register(sub)
    submit_cmd.register(sub)
    demo.register(sub)
    batch_cmds.register(sub)

    panel = sub.add_parser("panel", help="open the cluster panel in its own window", add_help=False)
    panel.set_defaults(func=_delegate("nuke_comfy_cluster.ui.standalone", "main"))
    install = sub.add_parser("install", help="install the plugin into a Nuke user folder", add_help=False)
    install.set_defaults(func=_delegate("nuke_comfy_cluster.nuke_host.installer", "main_install"))
    uninstall = sub.add_parser("uninstall", help="remove what install added", add_help=False)
    uninstall.set_defaults(func=_delegate("nuke_comfy_cluster.nuke_host.installer", "main_uninstall"))
    return parser


def _delegate(module: str, function: str):  # type: ignore[no-untyped-def]
    """Sub-commands with their own argument parsers (their modules import Qt or are optional)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), function)(args.rest) or 0)

    return run


def setup_logging(verbose: int) -> None:
    level = logging.WARNING
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format=_LOG_FORMAT if verbose else "%(levelname)s %(name)s: %(message)s")
    if verbose == 1:
        logging.getLogger("nuke_comfy_cluster").setLevel(logging.INFO)
    if verbose < 2:
        # urllib3 logs every connection retry as a warning: a down server is reported once, by us
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def _split_delegated(argv: List[str]) -> Optional[int]:
    """Index of a delegated command (panel, install, uninstall) after the global options, or None."""
    for i, word in enumerate(argv):
        if word in ("panel", "install", "uninstall"):
            return i
        if not word.startswith("-"):
            return None
    return None


def _quiet_broken_pipe() -> int:
    # the reader is gone: point stdout at nothing so the interpreter's final flush is silent too
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Optional[List[str]] = None) -> int:
    from .signals import Stopped, stop_signals_raise

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        at = _split_delegated(argv)
        if at is not None:
            # delegated commands parse their own flags
            args = parser.parse_args(argv[: at + 1])
            args.rest = argv[at + 1 :]
        else:
            args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or argparse's own usage error (exit 2)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_REFUSED
    setup_logging(getattr(args, "verbose", 0) or 0)
    if getattr(args, "config", None) and args.command != "validate":
        from .options import apply_config

        refused = apply_config(args)
        if refused is not None:
            return refused
    code = EXIT_REFUSED
    try:
        # Qt's event loop runs no Python while idle: a handler would hold SIGTERM back, so the
        # panel keeps the default actions
        guard = contextlib.nullcontext() if args.command == "panel" else stop_signals_raise()
        with guard:
            try:
                code = int(args.func(args) or 0)
            except ClusterError as e:
                print(f"error: {user_message(e)}", file=sys.stderr)
                code = EXIT_REFUSED
            except Stopped as e:
                print(f"interrupted ({e.name})", file=sys.stderr)
                code = e.exit_code
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                code = 130
        sys.stdout.flush()
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    return code
