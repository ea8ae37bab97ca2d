"""Scale of the plan: a 100,000-frame batch must behave like a 100-frame one.

    python -m benchmarks.scale [--seconds-per-run 8] [--json]

For batches of 100, 10,000 and 100,000 frames, one client renders for a fixed
time on two simulators (0.05 s frames), then closes (cancelling the rest). Printed
per size: frames delivered, client CPU per delivered frame (this process's CPU
time, all threads, including building the batch and cancelling the rest on close:
one-off costs that grow with the batch), the same in steady state (from 30 % of
the run to its end: what planning and following each frame costs), the most of
our prompts seen in one server's queue (sampled from ``/queue``), and memory
growth. The 100-frame run is the baseline in the same run: steady CPU per frame
must stay within 1.5 x of it and
our prompts per server queue within the scheduler's hard cap (``max_window``, 8:
frames this short make the planned window reach it at every size), or exit 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.scheduler import Scheduler
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.sim.process import SimProcess

WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": "%d"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s_####"}},
}
WINDOW = Scheduler().max_window


def _ours_in_queues(procs: List[SimProcess], client_id: str) -> int:
    worst = 0
    for p in procs:
        try:
            q = requests.get(p.url + "/queue", timeout=2).json()
        except (requests.RequestException, ValueError):
            continue
        items = q.get("queue_running", []) + q.get("queue_pending", [])
        worst = max(worst, sum(1 for it in items if isinstance(it[3], dict) and it[3].get("client_id") == client_id))
    return worst


def _done(batch: Any) -> int:
    return sum(1 for j in batch.jobs if j.state is JobState.DONE)


def one(procs: List[SimProcess], frames: int, seconds: float) -> Dict[str, Any]:
    servers = [ServerConfig(f"s{i}", "127.0.0.1", p.port) for i, p in enumerate(procs)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    cluster = Cluster.from_servers(servers, ledger=False)
    worst = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal worst
        while not stop.wait(0.2):
            worst = max(worst, _ours_in_queues(procs, cluster.pool.client_id))

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        batch = cluster.submit_frames(WORKFLOW, range(1, frames + 1), output_dir=out, sequence_name="s")
        sampler.start()
        batch.wait(0.3 * seconds)
        done1 = _done(batch)
        cpu1 = time.process_time()
        snap = batch.wait(max(0.0, seconds - (time.monotonic() - started)))
        cpu2 = time.process_time()
        done = snap.done
        stop.set()
        sampler.join()
        cluster.close(timeout=5)
    cpu = time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "frames": frames,
        "delivered": done,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_frame": round(1000 * cpu / max(done, 1), 2),
        "steady_cpu_ms_per_frame": round(1000 * (cpu2 - cpu1) / max(done - done1, 1), 2),
        "max_ours_per_server_queue": worst,
        "peak_rss_growth_mb": round((rss - rss0) / 1024, 1),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-run", type=float, default=8.0)
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    procs = [SimProcess(speed=1.0, seconds=0.05), SimProcess(speed=1.0, seconds=0.05)]
    for p in procs:
        p.start()
    try:
        rows = [one(procs, int(n), args.seconds_per_run) for n in args.sizes.split(",")]
    finally:
        for p in procs:
            p.stop()
    base = rows[0]["cpu_ms_per_frame"]
    steady = rows[0]["steady_cpu_ms_per_frame"]
    for r in rows:
        r["cpu_vs_smallest"] = round(r["cpu_ms_per_frame"] / base, 2) if base else None
        r["steady_vs_smallest"] = round(r["steady_cpu_ms_per_frame"] / steady, 2) if steady else None
        r["pass"] = (r["steady_vs_smallest"] or 0) <= 1.5 and r["max_ours_per_server_queue"] <= WINDOW
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"{'frames':>8} {'delivered':>9} {'CPU ms/frame':>12} {'x smallest':>10} {'steady ms':>9} "
            f"{'x smallest':>10} {'ours/queue':>10} {'RSS +MB':>8}"
        )
        for r in rows:
            print(
                f"{r['frames']:>8} {r['delivered']:>9} {r['cpu_ms_per_frame']:>12} {r['cpu_vs_smallest']:>10} "
                f"{r['steady_cpu_ms_per_frame']:>9} {r['steady_vs_smallest']:>10} "
                f"{r['max_ours_per_server_queue']:>10} {r['peak_rss_growth_mb']:>8}"
            )
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
