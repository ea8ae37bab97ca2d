"""validate, backup, restore, export, import: the configuration file from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core import compatibility, config_store, identity
from ..core.config import (
    ENV_SERVERS,
    ConfigIssue,
    ServerConfig,
    load_config,
    parse_servers,
    read_config_file,
)
from ..core.errors import ConfigError
from ..core.templating import validate_workflow
from .options import add_common


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a configuration (exit 0 valid, 1 invalid)")
    p.add_argument("file", nargs="?", help="a JSON file; default: what the environment gives")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit 1): for CI of a config repository")
    p.add_argument(
        "--workflow",
        metavar="WF",
        help="also ask every enabled server whether it can run this API-format workflow (nodes, models) and "
        "whether two entries are the same server; nothing is rendered (exit 1 when no server can run it)",
    )
    add_common(p)
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
    add_common(p)
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


def _server_rows(servers: Sequence[ServerConfig]) -> str:
    rows = [["NAME", "ADDRESS", "PRIORITY", "ENABLED"]]
    rows += [[s.name, s.base_url, str(s.priority), "yes" if s.enabled else "no"] for s in servers]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _read_for_validate(path: str) -> Tuple[List[ServerConfig], List[ConfigIssue], str]:
    read = read_config_file(os.path.abspath(os.path.expanduser(path)), origin="")
    if read.text is None:
        return [], list(read.issues), f"{path}: not read"
    servers, issues = parse_servers(read.text, origin=path)
    return (
        servers,
        list(read.issues) + issues,
        "{}: {} server{}".format(path, len(servers), "" if len(servers) == 1 else "s"),
    )


def cmd_validate(args: argparse.Namespace) -> int:
    path = args.file or getattr(args, "config", None)
    if args.file and getattr(args, "config", None) and args.file != args.config:
        raise ConfigError("give the file to validate once: as FILE or as --config FILE")
    if path:
        servers, issues, notice = _read_for_validate(path)
        source = path
        ok = bool(servers) and not any(i.level == "error" for i in issues)
    else:
        loaded = load_config()
        servers, issues, ok = list(loaded.servers), list(loaded.issues), loaded.ok
        source, notice = loaded.source, loaded.notice
    warnings = [i for i in issues if i.level == "warning"]
    strict_failed = bool(args.strict and warnings)
    valid = ok and not strict_failed
    matrix = _servers_and_workflow(servers, args.workflow) if args.workflow else None
    if matrix is not None and not any(c.usable for c in matrix[0].values()):
        valid = False
    if args.json:
        out: Dict[str, Any] = {
            "valid": valid,
            "source": source,
            "notice": notice,
            "servers": [s.name for s in servers],
            "details": [
                {"name": s.name, "url": s.base_url, "priority": s.priority, "enabled": s.enabled} for s in servers
            ],
            "issues": _issues_json(issues),
        }
        if args.strict:
            out["strict"] = True
        if matrix is not None:
            out["workflow"] = args.workflow
            out["compatibility"] = {name: c.to_json() for name, c in matrix[0].items()}
            out["duplicates"] = [d.message for d in matrix[1]]
        print(json.dumps(out, indent=2))
        return 0 if valid else 1
    print(notice)
    if servers:
        print(_server_rows(servers))
    for issue in issues:
        print(f"{issue.level}: {issue.message}")
    if matrix is not None:
        results, duplicates = matrix
        print(f"servers x {args.workflow} (nothing rendered):")
        for line in compatibility.format_matrix(results):
            print("  " + line)
        for dup in duplicates:
            print(f"warning: {dup.message}")
        text = compatibility.summary(results)
        print(text or "every enabled server can run it")
    if not ok:
        print("INVALID")
    elif strict_failed:
        print("INVALID (--strict: {} warning{})".format(len(warnings), "" if len(warnings) == 1 else "s"))
    else:
        print(
            "valid" + (" ({} warning{})".format(len(warnings), "" if len(warnings) == 1 else "s") if warnings else "")
        )
    return 0 if valid else 1


def _servers_and_workflow(servers: List[ServerConfig], path: str) -> Tuple[Dict[str, Any], List[Any]]:
    """The compatibility matrix (enabled servers x workflow) and the duplicate entries."""
    from ..core.server import ComfyUIServer
    from .submit_cmd import load_workflow

    workflow = validate_workflow(load_workflow(path), path)
    live = [ComfyUIServer(s) for s in servers if s.enabled]
    try:
        duplicates = identity.check_duplicates(live)
        results = compatibility.check_servers(live, workflow)
    finally:
        for server in live:
            server.close()
    return results, duplicates


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
    if chosen.isdigit() and not os.path.exists(chosen):
        number = int(chosen)
        if not 1 <= number <= len(backups):
            have = (
                "there are no backups of {}".format(path)
                if not backups
                else "the backups of {} are numbered 1-{}; run `restore` to list them".format(path, len(backups))
            )
            raise ConfigError(f"no backup #{number}: {have}")
        chosen = str(backups[number - 1].path)
    result = config_store.restore_backup(path, chosen)
    print(f"restored {path} from {chosen} (previous version kept as {result.backup})")
    return 0


def _with_secrets(servers: Sequence[ServerConfig]) -> List[str]:
    return [s.name for s in servers if s.token or s.headers]


def cmd_export(args: argparse.Namespace) -> int:
    loaded = load_config()
    servers = list(loaded.servers)
    config_store.export_config(servers, args.dest, include_secrets=args.include_secrets, make_folders=False)
    print(f"exported {len(servers)} server(s) to {args.dest}")
    secret = _with_secrets(servers)
    if secret and not args.include_secrets:
        print(
            "warning: the token/headers of {} were left out: importing this file back drops them "
            "(export with --include-secrets to keep them; that file is then readable by you only)".format(
                ", ".join(secret)
            ),
            file=sys.stderr,
        )
    return 0


def _dropped_secrets(path: str, incoming: Sequence[ServerConfig]) -> List[str]:
    """Servers that have a token or headers in the file being replaced and none in the import."""
    read = read_config_file(path, origin="")
    if read.text is None:
        return []
    current, _ = parse_servers(read.text, origin=path)
    new = {s.name.casefold(): s for s in incoming}
    return [
        s.name
        for s in current
        if (s.token or s.headers)
        and s.name.casefold() in new
        and not (new[s.name.casefold()].token or new[s.name.casefold()].headers)
    ]


def _live_config_note(target: str) -> Optional[str]:
    """Why the import does not change what Nuke and these commands use now, or None when it does."""
    raw = os.environ.get(ENV_SERVERS, "").strip()
    loaded = load_config()
    if loaded.source == "file" and loaded.path and os.path.abspath(loaded.path) == os.path.abspath(target):
        return None
    how = f"to use it, set {ENV_SERVERS}={target}"
    if raw and raw.lstrip("\"'")[:1] in "[{":
        return f"{ENV_SERVERS} holds inline JSON, which Nuke and these commands read: the live configuration did not change; {how}"
    if not raw:
        return f"{ENV_SERVERS} is not set, so this file is not read ({loaded.notice}); {how}"
    return f"{ENV_SERVERS} names another file ({loaded.path or raw}): the live configuration did not change; {how}"


def cmd_import(args: argparse.Namespace) -> int:
    servers, issues = config_store.import_config(args.src)
    errors = [i for i in issues if i.level == "error"]
    for issue in issues:
        print(f"{issue.level}: {issue.message}", file=sys.stderr)
    if errors or not servers:
        print(f"error: {args.src} was not imported: fix the errors above", file=sys.stderr)
        return 1
    path = config_file(args.file)
    dropped = _dropped_secrets(path, servers) if os.path.isfile(path) else []
    result = config_store.save_servers(path, servers)
    print(
        "imported {} server(s) into {}{}".format(
            len(servers), result.path, f" (previous version kept as {result.backup})" if result.backup else ""
        )
    )
    if dropped:
        print(
            "warning: {} had a token/headers in {} and none in {}: dropped (the backup above still has them)".format(
                ", ".join(dropped), path, args.src
            ),
            file=sys.stderr,
        )
    note = _live_config_note(str(result.path))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0
