"""Write the cluster's health as Prometheus metrics for node_exporter's textfile collector.

Usage (cron or a systemd timer, every minute or so)::

    python examples/monitoring/comfy_cluster_textfile.py /var/lib/node_exporter/textfile_collector/comfy_cluster.prom

It runs ``python -m nuke_comfy_cluster health --json`` with the same Python and
environment (so ``NUKE_COMFYUI_SERVERS`` must be set for it), converts the answer
and replaces the .prom file atomically, so node_exporter never reads half a file.
Exit code: 0 when the file was written (whatever the cluster's state: that is in
the metrics), 1 when it could not be written.

Standard library only; runs on Python 3.9+.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

#: the checkout this file lives in, so ``-m nuke_comfy_cluster`` works without an install
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 60.0


def run_health() -> Optional[Dict[str, Any]]:
    """The parsed ``health --json`` answer, or None when the command could not give one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nuke_comfy_cluster", "health", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _label(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}".rstrip("0")


def metrics(data: Optional[Dict[str, Any]], now: float) -> str:
    """The .prom text for one ``health --json`` answer (None: the check itself failed)."""
    out: List[str] = [
        "# HELP comfy_cluster_check_ok 1 when the health command ran and answered JSON.",
        "# TYPE comfy_cluster_check_ok gauge",
        f"comfy_cluster_check_ok {0 if data is None else 1}",
        "# HELP comfy_cluster_check_timestamp_seconds When this file was written.",
        "# TYPE comfy_cluster_check_timestamp_seconds gauge",
        f"comfy_cluster_check_timestamp_seconds {now:.0f}",
    ]
    if data is None:
        return "\n".join(out) + "\n"
    code = data.get("exit_code")
    out += [
        "# HELP comfy_cluster_health Exit code of health: 0 all enabled servers up, 1 some down, 2 none or config invalid.",
        "# TYPE comfy_cluster_health gauge",
        f"comfy_cluster_health {code if isinstance(code, int) else 2}",
        "# HELP comfy_cluster_config_errors Configuration errors (fix them with: python -m nuke_comfy_cluster validate).",
        "# TYPE comfy_cluster_config_errors gauge",
        "comfy_cluster_config_errors {}".format(len(data.get("errors") or [])),
    ]

    def up(s: Dict[str, Any]) -> bool:
        return s.get("status") in ("online", "busy")

    def when_up(key: str, scale: float = 1.0) -> Any:
        # a down server's queue and latency are stale: leave them out rather than report 0
        def get(s: Dict[str, Any]) -> Optional[float]:
            value = _number(s.get(key))
            return None if value is None or not up(s) else value * scale

        return get

    per_server = (
        ("up", "1 when the server answered its last status request.", lambda s: 1 if up(s) else 0),
        ("enabled", "1 when the server is enabled in the configuration.", lambda s: 1 if s.get("enabled") else 0),
        ("priority", "Configured priority (lower = preferred).", lambda s: _number(s.get("priority"))),
        ("queue_running", "Prompts running on the server (all clients).", when_up("queue_running")),
        ("queue_pending", "Prompts waiting on the server (all clients).", when_up("queue_pending")),
        ("latency_seconds", "Round trip of the status request.", when_up("latency_ms", 0.001)),
        ("vram_free_bytes", "Free video memory of the first device.", when_up("vram_free")),
        ("vram_total_bytes", "Total video memory of the first device.", when_up("vram_total")),
    )
    servers = [s for s in data.get("servers") or [] if isinstance(s, dict)]
    for suffix, help_text, get in per_server:
        name = "comfy_cluster_server_" + suffix
        rows = []
        for server in servers:
            value = get(server)
            if value is not None:
                rows.append('{}{{server="{}"}} {}'.format(name, _label(server.get("name", "")), _format(value)))
        if rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"] + rows
    return "\n".join(out) + "\n"


def write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".comfy_cluster.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: List[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: comfy_cluster_textfile.py OUTPUT.prom", file=sys.stderr)
        return 1
    text = metrics(run_health(), time.time())
    try:
        write_atomic(argv[0], text)
    except OSError as exc:
        print(f"cannot write {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
