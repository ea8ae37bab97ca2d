"""How long one status refresh takes with 1 live + 1 dead + 1 hung server.

``python -m benchmarks.status_refresh [--json] [--rounds N]``

Ours polls in parallel, so a hung server costs one read timeout whatever else is
down. The baseline in the same run polls the same servers one after another with
the same timeouts (what a simple loop over servers does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.http import STATUS_TIMEOUT
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.sim.process import start_cluster, stop_all


def measure(rounds: int) -> Dict[str, Any]:
    procs = start_cluster([1.0, 1.0, 1.0], seconds=0.5)
    live, dead, hung = procs
    try:
        configs = [
            ServerConfig(name=n, ip="127.0.0.1", port=p.port) for n, p in zip(("live", "dead", "hung"), procs)
        ]
        dead.kill()
        hung.sigstop()
        pool = ComfyUIServerPool(configs, use_websocket=False)
        ours: List[float] = []
        sequential: List[float] = []
        for _ in range(rounds):
            t = time.monotonic()
            snap = pool.update_all_server_status(force=True)
            ours.append(time.monotonic() - t)
            t = time.monotonic()
            for server in pool.servers:
                server.update_status()
            sequential.append(time.monotonic() - t)
        statuses = {s.name: s.status.value for s in snap.servers}
        pool.close()
    finally:
        hung.sigcont()
        stop_all(procs)
    return {
        "servers": statuses,
        "status_timeout_s": list(STATUS_TIMEOUT),
        "ours_parallel_s": {"median": statistics.median(ours), "max": max(ours)},
        "baseline_sequential_s": {"median": statistics.median(sequential), "max": max(sequential)},
        "speedup": statistics.median(sequential) / statistics.median(ours),
    }


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.status_refresh")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(list(argv) or None)
    result = measure(args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("servers: {}".format(result["servers"]))
        print("ours (parallel):        median {:.2f} s, max {:.2f} s".format(*result["ours_parallel_s"].values()))
        print("baseline (sequential):  median {:.2f} s, max {:.2f} s".format(*result["baseline_sequential_s"].values()))
        print("one refresh is {:.1f}x faster; a hung server costs one read timeout ({} s)".format(
            result["speedup"], STATUS_TIMEOUT[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
