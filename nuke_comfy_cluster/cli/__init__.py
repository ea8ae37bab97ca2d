"""Command line: ``python -m nuke_comfy_cluster COMMAND``.

Commands: validate, status, health, submit, demo, backup, restore, export, import,
panel, install, uninstall. Every command turns project errors into one message
on stderr and an exit code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..core.errors import ClusterError, user_message


def build_parser() -> argparse.ArgumentParser:
    from . import config_cmds, demo, status_cmds, submit_cmd

    parser = argparse.ArgumentParser(
        prog="python -m nuke_comfy_cluster", description="Run ComfyUI from Nuke on a cluster of servers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (never secrets)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    config_cmds.register(sub)
    status_cmds.register(sub)
    submit_cmd.register(sub)
    demo.register(sub)

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


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # delegated commands parse their own flags
    if argv and argv[0] in ("panel", "install", "uninstall"):
        args = parser.parse_args(argv[:1])
        args.rest = argv[1:]
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):
        # urllib3 logs every connection retry as a warning: a down server is reported once, by us
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except ClusterError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
