"""A Nagios / Icinga / Zabbix-style check for the ComfyUI cluster.

Usage::

    python examples/monitoring/check_comfy_cluster.py

Prints one line such as::

    COMFY CLUSTER WARNING - 2/3 enabled servers up; down: gpu3 (gpu3: cannot connect ...) | up=2;;;0;3 queue=5;;;0

and exits with the plugin convention, which ``health`` already follows:
0 OK, 1 WARNING (some enabled servers down), 2 CRITICAL (none up, or the
configuration has errors), 3 UNKNOWN (the check itself could not run).

It runs ``python -m nuke_comfy_cluster health --json`` with the same Python and
environment, so ``NUKE_COMFYUI_SERVERS`` must be set for the monitoring user.
Standard library only; runs on Python 3.9+.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 60.0
WORDS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def check() -> Tuple[int, str]:
    """(exit code, the one line to print)."""
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
    except subprocess.TimeoutExpired:
        return 3, f"health did not answer within {TIMEOUT_S:.0f} s"
    except OSError as exc:
        return 3, f"cannot run health: {exc}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        data: Dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        data = {}
    code = data.get("exit_code")
    if not isinstance(code, int) or code not in (0, 1, 2):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return 3, f"health exited {done.returncode} without a usable answer: {tail[:200]}"

    servers = [s for s in data.get("servers") or [] if isinstance(s, dict)]
    enabled = [s for s in servers if s.get("enabled")]
    up = [s for s in enabled if s.get("status") in ("online", "busy")]
    down = [s for s in enabled if s not in up]
    queue = sum(int(s.get("queue_running") or 0) + int(s.get("queue_pending") or 0) for s in up)
    parts: List[str] = [f"{len(up)}/{len(enabled)} enabled servers up"]
    errors = data.get("errors") or []
    if errors:
        parts.append(f"config error: {str(errors[0]).splitlines()[0][:200]}")
    if down:
        parts.append(
            "down: "
            + ", ".join(
                "{} ({})".format(s.get("name"), (s.get("last_error") or s.get("status") or "")[:80]) for s in down
            )
        )
    perf = f"up={len(up)};;;0;{len(enabled)} queue={queue};;;0"
    return code, "; ".join(parts) + " | " + perf


def main() -> int:
    code, text = check()
    print(f"COMFY CLUSTER {WORDS[code]} - {text}")
    return code


if __name__ == "__main__":
    sys.exit(main())
