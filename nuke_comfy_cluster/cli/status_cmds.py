"""status and health: what the servers are doing, for people and for monitoring."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

from ..core.pool import ComfyUIServerPool
from ..core.state import PoolSnapshot, ServerSnapshot


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="poll every server once and print the table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS", help="repeat until Ctrl-C")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("health", help="exit 0 all enabled servers healthy, 1 some down, 2 none or bad config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS until Ctrl-C")
    p.set_defaults(func=cmd_health)


def server_dict(s: ServerSnapshot) -> Dict[str, Any]:
    return {
        "name": s.name,
        "url": s.url,
        "status": s.status.value,
        "queue_running": s.queue_running,
        "queue_pending": s.queue_pending,
        "priority": s.priority,
        "enabled": s.enabled,
        "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 1),
        "device": s.device.name or None,
        "vram_free": s.device.vram_free or None,
        "vram_total": s.device.vram_total or None,
        "comfyui_version": s.device.comfyui_version or None,
        "last_error": s.last_error,
    }


def snapshot_dict(pool: ComfyUIServerPool, snap: PoolSnapshot) -> Dict[str, Any]:
    loaded = pool.config_load
    return {
        "source": loaded.source if loaded else "",
        "notice": snap.source,
        "warnings": list(snap.warnings),
        "errors": list(snap.errors),
        "next_server": snap.next_server,
        "servers": [server_dict(s) for s in snap.servers],
    }


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n else "-"


def format_table(snap: PoolSnapshot) -> str:
    rows: List[List[str]] = [["", "NAME", "STATUS", "QUEUE", "PRIO", "LATENCY", "GPU", "VRAM FREE", "NOTE"]]
    for s in snap.servers:
        rows.append(
            [
                ">" if s.name == snap.next_server else "",
                s.name,
                s.status.value,
                f"{s.queue_running}/{s.queue_pending}",
                str(s.priority),
                "-" if s.latency_ms is None else f"{s.latency_ms:.0f} ms",
                s.device.name or "-",
                _gb(s.device.vram_free),
                "" if s.status.reachable else (s.last_error or "")[:60],
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


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
                print(format_table(snap), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)


def health_code(pool: ComfyUIServerPool, snap: PoolSnapshot) -> int:
    """0 every enabled server healthy, 1 some down, 2 none reachable or configuration invalid."""
    loaded = pool.config_load
    if loaded is not None and not loaded.ok:
        return 2
    enabled = [s for s in snap.servers if s.enabled]
    up = [s for s in enabled if s.status.reachable]
    if not up:
        return 2
    return 0 if len(up) == len(enabled) else 1


def cmd_health(args: argparse.Namespace) -> int:
    with _pool() as pool:
        while True:
            snap = pool.update_all_server_status(force=True)
            code = health_code(pool, snap)
            if args.json:
                out = snapshot_dict(pool, snap)
                out["exit_code"] = code
                print(json.dumps(out), flush=True)
            else:
                word = {0: "OK", 1: "DEGRADED", 2: "DOWN"}[code]
                print(f"{word} {snap.source}")
                for e in snap.errors:
                    print(f"  config error: {e}")
                for s in snap.servers:
                    state = s.status.value
                    detail = (
                        f"queue {s.queue_running}/{s.queue_pending} {s.latency_ms or 0:.0f} ms"
                        if s.status.reachable
                        else (s.last_error or "")
                    )
                    print(f"  {state:<8} {s.name} ({s.url}) {detail}".rstrip(), flush=True)
            if not args.watch:
                return code
            time.sleep(args.watch)
