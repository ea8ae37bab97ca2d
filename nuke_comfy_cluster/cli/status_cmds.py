"""status and health: what the servers are doing, for people and for monitoring."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from ..core.pool import ComfyUIServerPool
from ..core.state import PoolSnapshot, ServerSnapshot
from .options import add_common, positive_seconds

#: the first word of a health line, by exit code
HEALTH_WORDS = {0: "OK", 1: "DEGRADED", 2: "DOWN"}
CONFIG_WORD = "CONFIG-ERROR"


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="poll every server once and print the table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--watch", nargs="?", const=2.0, type=positive_seconds, metavar="SECONDS", help="repeat until Ctrl-C"
    )
    add_common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("health", help="exit 0 all enabled servers healthy, 1 some down, 2 none or bad config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", type=positive_seconds, metavar="SECONDS", help="repeat every SECONDS until Ctrl-C")
    add_common(p)
    p.set_defaults(func=cmd_health)


def short_gpu_name(name: str) -> str:
    """``cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync`` -> ``NVIDIA GeForce RTX 4090`` (as the panel shows it)."""
    text = name.split(" : ")[0].strip()
    head, _, rest = text.partition(" ")
    if rest and ":" in head and head.split(":")[-1].isdigit():
        text = rest
    return text


def _reason(s: ServerSnapshot, now: float) -> str:
    """Why the balancer does not use a server, without the server's own name in front (the row has it)."""
    reason = s.unavailable_reason(now) or ""
    prefix = f"{s.name}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def server_dict(s: ServerSnapshot, now: Optional[float] = None) -> Dict[str, Any]:
    return {
        "name": s.name,
        "url": s.url,
        "status": s.status.value,
        "queue_running": s.queue_running if s.status.reachable else None,
        "queue_pending": s.queue_pending if s.status.reachable else None,
        "priority": s.priority,
        "enabled": s.enabled,
        "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 1),
        "device": s.device.name or None,
        "gpu": short_gpu_name(s.device.name) or None,
        "vram_free": s.device.vram_free or None,
        "vram_total": s.device.vram_total or None,
        "comfyui_version": s.device.comfyui_version or None,
        "last_error": s.last_error,
        "note": _reason(s, time.time() if now is None else now) or None,
    }


def snapshot_dict(pool: ComfyUIServerPool, snap: PoolSnapshot) -> Dict[str, Any]:
    loaded = pool.config_load
    now = time.time()
    return {
        "timestamp": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": loaded.source if loaded else "",
        "notice": snap.source,
        "warnings": list(snap.warnings),
        "errors": list(snap.errors),
        "next_server": snap.next_server,
        "servers": [server_dict(s, now) for s in snap.servers],
    }


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n else "-"


def format_table(snap: PoolSnapshot, width: Optional[int] = None) -> str:
    """The server table; the NOTE column wraps under itself to ``width`` (None: no wrapping)."""
    now = time.time()
    rows: List[List[str]] = [["", "NAME", "STATUS", "QUEUE", "PRIO", "LATENCY", "GPU", "VRAM FREE", "NOTE"]]
    for s in snap.servers:
        up = s.status.reachable
        rows.append(
            [
                ">" if s.name == snap.next_server else "",
                s.name,
                s.status.value,
                f"{s.queue_running}/{s.queue_pending}" if up else "-",
                str(s.priority),
                "-" if s.latency_ms is None or not up else f"{s.latency_ms:.0f} ms",
                short_gpu_name(s.device.name) or "-",
                _gb(s.device.vram_free) if up else "-",
                _reason(s, now),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    indent = sum(widths) + 2 * len(widths)
    note_width = None if width is None else max(20, width - indent)
    lines = []
    for r in rows:
        lead = "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  "
        note = r[-1]
        if note_width is None or len(note) <= note_width:
            lines.append((lead + note).rstrip())
            continue
        parts = textwrap.wrap(note, note_width, break_long_words=True, break_on_hyphens=False) or [""]
        lines.append(lead + parts[0])
        lines.extend(" " * indent + part for part in parts[1:])
    return "\n".join(lines)


def _table_width() -> Optional[int]:
    """Wrap to the terminal; when piped, keep each note on its line in full (for grep)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def _pool() -> ComfyUIServerPool:
    pool = ComfyUIServerPool(use_websocket=False)
    pool.load_configuration()
    return pool


def _print_header(snap: PoolSnapshot) -> None:
    print(snap.source, file=sys.stderr)
    for w in snap.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in snap.errors:
        print(f"error: {e}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    with _pool() as pool:
        while True:
            snap = pool.update_all_server_status(force=True)
            if args.json:
                print(json.dumps(snapshot_dict(pool, snap), indent=None if args.watch else 2), flush=True)
            else:
                _print_header(snap)
                print(format_table(snap, _table_width()), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)


def servers_code(snap: PoolSnapshot) -> int:
    """0 every enabled server answers, 1 some do not, 2 none does (or none is enabled)."""
    enabled = [s for s in snap.servers if s.enabled]
    up = [s for s in enabled if s.status.reachable]
    if not up:
        return 2
    return 0 if len(up) == len(enabled) else 1


def health_code(pool: ComfyUIServerPool, snap: PoolSnapshot) -> int:
    """0 every enabled server healthy, 1 some down, 2 none reachable or configuration invalid."""
    loaded = pool.config_load
    if loaded is not None and not loaded.ok:
        return 2
    return servers_code(snap)


def cmd_health(args: argparse.Namespace) -> int:
    with _pool() as pool:
        while True:
            snap = pool.update_all_server_status(force=True)
            code = health_code(pool, snap)
            servers = servers_code(snap)
            config_ok = pool.config_load is None or pool.config_load.ok
            if args.json:
                out = snapshot_dict(pool, snap)
                out["config_valid"] = config_ok
                out["servers_health"] = HEALTH_WORDS[servers]
                out["exit_code"] = code
                print(json.dumps(out), flush=True)
            else:
                _print_health(snap, servers, config_ok, bool(args.watch))
            if not args.watch:
                return code
            time.sleep(args.watch)


def _print_health(snap: PoolSnapshot, servers: int, config_ok: bool, stamped: bool) -> None:
    enabled = [s for s in snap.servers if s.enabled]
    up = sum(1 for s in enabled if s.status.reachable)
    when = time.strftime("%Y-%m-%d %H:%M:%S ") if stamped else ""
    if config_ok:
        print(f"{when}{HEALTH_WORDS[servers]} {snap.source}")
    else:
        # the configuration is judged apart from the servers: a broken entry is a server artists miss
        count = len(snap.errors)
        print(
            "{}{} {} configuration error{}; servers: {} ({} of {} enabled up) — {}".format(
                when,
                CONFIG_WORD,
                count,
                "" if count == 1 else "s",
                HEALTH_WORDS[servers],
                up,
                len(enabled),
                snap.source,
            )
        )
        for e in snap.errors:
            print(f"  config error: {e}")
    now = time.time()
    for s in snap.servers:
        if s.status.reachable:
            detail = f"queue {s.queue_running}/{s.queue_pending} {s.latency_ms or 0:.0f} ms"
        else:
            detail = _reason(s, now)
        print(f"  {s.status.value:<8} {s.name} ({s.url}) {detail}".rstrip(), flush=True)
