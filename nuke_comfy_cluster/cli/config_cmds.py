"""validate, backup, restore, export, import: the configuration file from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List

from ..core import config_store
from ..core.config import ConfigLoad, load_config, parse_servers
from ..core.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a configuration (exit 0 valid, 1 invalid)")
    p.add_argument("file", nargs="?", help="a JSON file; default: what the environment gives")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("backup", help="make a timestamped backup of the configuration file")
    p.add_argument("--file", help="config file (default: NUKE_COMFYUI_SERVERS file or the user file)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="list backups, or restore one (the current file is backed up first)")
    p.add_argument("backup", nargs="?", help="backup file or its number in the list; none: list them")
    p.add_argument("--file", help="config file (default: NUKE_COMFYUI_SERVERS file or the user file)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("export", help="write the current servers to a JSON file (secrets left out)")
    p.add_argument("dest")
    p.add_argument("--include-secrets", action="store_true", help="also write tokens and header values")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="validate a JSON file and save it as the configuration (with a backup)")
    p.add_argument("src")
    p.add_argument("--file", help="config file to write (default: NUKE_COMFYUI_SERVERS file or the user file)")
    p.set_defaults(func=cmd_import)


def config_file(explicit: str = "") -> str:
    """The file the editor and these commands write: the variable's file, else the user file."""
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    loaded = load_config()
    if loaded.source == "file" and loaded.path:
        return loaded.path
    return str(config_store.default_config_path())


def _issues_json(issues: Any) -> List[dict]:
    return [
        {"level": i.level, "message": i.message, "line": i.line, "column": i.column, "index": i.index, "field": i.field}
        for i in issues
    ]


def cmd_validate(args: argparse.Namespace) -> int:
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            print(f"error: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
            return 1
        servers, issues = parse_servers(text, origin=args.file)
        ok = bool(servers) and not any(i.level == "error" for i in issues)
        source = args.file
        notice = f"{args.file}: {len(servers)} server(s)"
    else:
        loaded: ConfigLoad = load_config()
        servers, issues, ok = list(loaded.servers), list(loaded.issues), loaded.ok
        source, notice = loaded.source, loaded.notice
    if args.json:
        print(
            json.dumps(
                {
                    "valid": ok,
                    "source": source,
                    "notice": notice,
                    "servers": [s.name for s in servers],
                    "issues": _issues_json(issues),
                },
                indent=2,
            )
        )
    else:
        print(notice)
        for issue in issues:
            print(f"{issue.level}: {issue.message}")
        print("valid" if ok else "INVALID")
    return 0 if ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    path = config_file(args.file)
    if not os.path.exists(path):
        raise ConfigError(f"no configuration file at {path} to back up")
    print(config_store.backup_now(path))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    path = config_file(args.file)
    backups = config_store.list_backups(path)
    if not args.backup:
        if not backups:
            print(f"no backups of {path}")
            return 0
        for n, b in enumerate(backups, 1):
            count = "" if b.servers is None else f" ({b.servers} servers)"
            print("{:3d}  {}  {}{}".format(n, b.created.strftime("%Y-%m-%d %H:%M:%S"), b.path, count))
        return 0
    chosen = args.backup
    if chosen.isdigit() and 1 <= int(chosen) <= len(backups):
        chosen = str(backups[int(chosen) - 1].path)
    result = config_store.restore_backup(path, chosen)
    print(f"restored {path} from {chosen} (previous version kept as {result.backup})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    loaded = load_config()
    config_store.export_config(list(loaded.servers), args.dest, include_secrets=args.include_secrets)
    print(f"exported {len(loaded.servers)} server(s) to {args.dest}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    servers, issues = config_store.import_config(args.src)
    errors = [i for i in issues if i.level == "error"]
    for issue in issues:
        print(f"{issue.level}: {issue.message}", file=sys.stderr)
    if errors or not servers:
        print(f"error: {args.src} was not imported: fix the errors above", file=sys.stderr)
        return 1
    path = config_file(args.file)
    result = config_store.save_servers(path, servers)
    print("imported {} server(s) into {}{}".format(
        len(servers), result.path, f" (previous version kept as {result.backup})" if result.backup else ""
    ))
    return 0
