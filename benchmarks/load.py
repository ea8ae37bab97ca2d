"""Load and leaks: many frames, many simulators, several clients in one process.

::

    python -m benchmarks.load            # 1,000 frames over 8 simulators, 4 concurrent clients
    python -m benchmarks.load --json
    python -m benchmarks.load --frames 4000 --seconds 0.05

Each client is its own :class:`~nuke_comfy_cluster.core.api.Cluster` (own pool,
websockets, client id and dispatcher), all in this process, all working through
their share of the frames at once on the same simulators, as an artist does: one
batch of ``--batch-size`` frames after another (a finished batch is let go, so
memory that grows with frames after warm-up is a leak). Printed:

- frames delivered, lost, and run more than once (from every server's ``/history``);
- memory of this process (RSS): at start, after warm-up (a fifth of the frames
  done), peak, at the end, and its growth per 100 frames after warm-up
  (least squares over the samples): flat means no leak per frame;
- threads: at start, peak, at the end, and after the clusters are closed;
- what the dispatchers still hold once every batch is over (maps that would grow
  with every frame if something leaked): must be empty;
- requests per route and per second, split into the status layer (``GET /prompt``,
  ``GET /system_stats``), reconciliation (``GET /queue``, ``GET /history``),
  submits and downloads; client CPU time per frame.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.jobs import Batch
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.sim.process import SimProcess, start_cluster, stop_all

try:
    import resource
except ImportError:  # Windows: no CPU figure
    resource = None  # type: ignore[assignment]

WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "load/c_####"}},
}
STATUS_ROUTES = ("GET prompt", "GET system_stats")
RECONCILE_ROUTES = ("GET queue", "GET history")


def rss_bytes() -> Optional[int]:
    """Resident memory of this process now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def ncc_threads(exclude: Sequence[threading.Thread] = ()) -> List[str]:
    """Names of the project's threads alive now, leaving out ``exclude`` (there before)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("ncc-") and t not in exclude)


def dispatcher_leftovers(cluster: Cluster) -> Dict[str, int]:
    """Per-frame bookkeeping still held by a dispatcher whose batches are all over."""
    d = cluster.dispatcher
    return {
        "batches": len(d._batches),  # noqa: SLF001 - the benchmark inspects on purpose
        "schedulers": len(d._schedulers),  # noqa: SLF001
        "by_prompt": len(d._by_prompt),  # noqa: SLF001
        "by_token": len(d._by_token),  # noqa: SLF001
        "submitting": len(d._submitting),  # noqa: SLF001
        "busy": len(d._busy),  # noqa: SLF001
        "orphans": len(d._orphans),  # noqa: SLF001
        "watchers": len(cluster.pool._watchers),  # noqa: SLF001
    }


def _cpu_seconds() -> float:
    if resource is None:
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _slope(points: Sequence[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of y over x, or None with too few points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def _history_runs(procs: Sequence[SimProcess], job_ids: set) -> Dict[str, int]:
    runs: Dict[str, int] = {}
    for proc in procs:
        history = requests.get(proc.url + "/history", timeout=30).json()
        for entry in history.values():
            extra = entry["prompt"][3]
            job = extra.get("ncc_job") if isinstance(extra, dict) else None
            if job in job_ids and entry["status"]["status_str"] == "success":
                runs[job] = runs.get(job, 0) + 1
    return runs


def run_load(
    *,
    sims: int = 8,
    clients: int = 4,
    frames: int = 1000,
    seconds: float = 0.1,
    jitter: float = 0.2,
    timeout: float = 900.0,
    sample_every: float = 0.25,
    batch_size: int = 50,
) -> Dict[str, Any]:
    """Run the load and return the figures (see the module docstring). Stops all it started."""
    work = tempfile.mkdtemp(prefix="ncc-load-")
    speeds = [1.0 if i % 2 == 0 else 0.7 for i in range(sims)]
    earlier = [t for t in threading.enumerate() if t.name.startswith("ncc-")]  # not ours to judge
    procs = start_cluster(speeds, seconds=seconds, jitter=jitter)
    clusters: List[Cluster] = []
    samples: List[Tuple[float, int, Optional[int], int]] = []  # (t, frames done, rss, threads)
    stop = threading.Event()
    try:
        gc.collect()
        base_threads = threading.active_count()
        base_rss = rss_bytes()
        configs = [ServerConfig(name=f"sim{i}", ip="127.0.0.1", port=p.port, priority=0) for i, p in enumerate(procs)]
        clusters = [Cluster.from_servers(configs) for _ in range(clients)]
        for cluster in clusters:
            cluster.pool.update_all_server_status(force=True)
        start_rss = rss_bytes()
        start_threads = threading.active_count()
        cpu0 = _cpu_seconds()
        t0 = time.monotonic()

        current: Dict[int, Batch] = {}
        finished = {"frames": 0, "delivered": 0}
        job_ids: set = set()
        lock = threading.Lock()

        def done_now() -> int:
            with lock:
                return finished["frames"] + sum(b.snapshot().done for b in current.values())

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - t0, done_now(), rss_bytes(), threading.active_count()))
                stop.wait(sample_every)

        def client(i: int, cluster: Cluster, frames_of_client: List[int], deadline: float) -> None:
            out = os.path.join(work, f"client{i}")
            for k in range(0, len(frames_of_client), batch_size):
                chunk = frames_of_client[k : k + batch_size]
                batch = cluster.submit_frames(
                    WORKFLOW, chunk, output_dir=out, sequence_name=f"c{i}", name=f"client {i}"
                )
                with lock:
                    current[i] = batch
                snap = batch.wait(max(0.0, deadline - time.monotonic()))
                delivered = 0
                for job in snap.jobs:
                    path = os.path.join(out, f"c{i}.{job.frame:04d}.png")
                    if job.state is JobState.DONE and os.path.isfile(path):
                        delivered += 1
                with lock:
                    del current[i]
                    finished["frames"] += snap.done
                    finished["delivered"] += delivered
                    job_ids.update(j.id for j in snap.jobs)
                if not snap.finished:
                    return

        share = [frames // clients + (1 if i < frames % clients else 0) for i in range(clients)]
        deadline = time.monotonic() + timeout
        runners = []
        first = 1
        for i, (cluster, n) in enumerate(zip(clusters, share)):
            runners.append(
                threading.Thread(
                    target=client, args=(i, cluster, list(range(first, first + n)), deadline), name=f"load-client{i}"
                )
            )
            first += n
        sampler = threading.Thread(target=sample, name="load-sampler", daemon=True)
        sampler.start()
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()) + 5.0)
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join(5)
        cpu1 = _cpu_seconds()
        end_rss = rss_bytes()
        end_threads = threading.active_count()
        time.sleep(1.0)  # the dispatchers forget finished batches on their next turn
        leftovers = [dispatcher_leftovers(c) for c in clusters]

        counts: Dict[str, int] = {}
        for cluster in clusters:
            for server in cluster.pool.servers:
                for route, n in server.connection.request_counts.items():
                    counts[route] = counts.get(route, 0) + n
        delivered = finished["delivered"]
        runs = _history_runs(procs, job_ids)
    finally:
        stop.set()
        for cluster in clusters:
            cluster.close()
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)

    # threads of closed clusters end on their own (idle pool workers within a few seconds)
    deadline = time.monotonic() + 15.0
    while ncc_threads(earlier) and time.monotonic() < deadline:
        time.sleep(0.2)
    gc.collect()
    closed_threads = threading.active_count()

    warm = [s for s in samples if s[1] >= frames / 5 and s[2] is not None]
    rss_after_warmup = warm[0][2] if warm else None
    slope = _slope([(s[1], float(s[2])) for s in warm])  # bytes per frame
    rss_values = [s[2] for s in samples if s[2] is not None]
    mb = 1024.0 * 1024.0

    def as_mb(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value / mb, 1)

    status = sum(counts.get(r, 0) for r in STATUS_ROUTES)
    reconcile = sum(counts.get(r, 0) for r in RECONCILE_ROUTES)
    cpu = cpu1 - cpu0
    return {
        "settings": {"sims": sims, "clients": clients, "frames": frames, "seconds": seconds, "jitter": jitter},
        "elapsed_s": round(elapsed, 1),
        "frames_per_s": round(frames / elapsed, 1) if elapsed else None,
        "delivered": delivered,
        "lost": frames - delivered,
        "run_twice": sum(1 for n in runs.values() if n > 1),
        "never_ran": len(job_ids) - len(runs),
        "batches_per_client": -(-frames // clients // batch_size),
        "rss_mb": {
            "before_clients": as_mb(base_rss),
            "start": as_mb(start_rss),
            "after_warmup": as_mb(rss_after_warmup),
            "peak": as_mb(max(rss_values)) if rss_values else None,
            "end": as_mb(end_rss),
            "growth_per_100_frames_after_warmup": None if slope is None else round(slope * 100 / mb, 3),
        },
        "threads": {
            "before_clients": base_threads,
            "start": start_threads,
            "peak": max((s[3] for s in samples), default=start_threads),
            "end": end_threads,
            "after_close": closed_threads,
            "ncc_left_after_close": len(ncc_threads(earlier)),
            "ncc_names_left": ncc_threads(earlier),
        },
        "dispatcher_leftovers": leftovers,
        "requests": {
            "by_route": dict(sorted(counts.items())),
            "status_per_s": round(status / elapsed, 2) if elapsed else None,
            "status_per_s_per_client_server": round(status / elapsed / clients / sims, 3) if elapsed else None,
            "reconcile_per_s": round(reconcile / elapsed, 2) if elapsed else None,
            "submits": counts.get("POST prompt", 0),
            # first frames the scheduler took back (sent again elsewhere on purpose)
            "taken_back": sum(c.dispatcher.taken_back for c in clusters),
            "downloads": counts.get("GET view", 0),
            "total_per_frame": round(sum(counts.values()) / frames, 2) if frames else None,
        },
        "client_cpu_ms_per_frame": round(cpu * 1000.0 / frames, 2) if frames else None,
        "samples": len(samples),
    }


def report(r: Dict[str, Any]) -> str:
    s, rss, th, rq = r["settings"], r["rss_mb"], r["threads"], r["requests"]
    lines = [
        "{frames} frames over {sims} simulators, {clients} concurrent clients, {seconds:g} s per frame".format(**s),
        "frames: {} delivered, {} lost, {} run twice, in {} s ({} frames/s)".format(
            r["delivered"], r["lost"], r["run_twice"], r["elapsed_s"], r["frames_per_s"]
        ),
        "RSS MB: start {start}, after warm-up {after_warmup}, peak {peak}, end {end}; "
        "growth after warm-up {growth_per_100_frames_after_warmup} MB per 100 frames".format(**rss),
        "threads: before clients {before_clients}, start {start}, peak {peak}, end {end}, "
        "after close {after_close} ({ncc_left_after_close} ncc- threads left)".format(**th),
        "dispatcher bookkeeping left after the batches: {}".format(
            "none" if not any(any(d.values()) for d in r["dispatcher_leftovers"]) else r["dispatcher_leftovers"]
        ),
        "status layer: {} req/s in all ({} per client per server); reconciliation {} req/s; "
        "{} submits, {} downloads; {} requests per frame".format(
            rq["status_per_s"],
            rq["status_per_s_per_client_server"],
            rq["reconcile_per_s"],
            rq["submits"],
            rq["downloads"],
            rq["total_per_frame"],
        ),
        "requests by route: " + ", ".join(f"{k} {v}" for k, v in rq["by_route"].items()),
        "client CPU: {} ms per frame".format(r["client_cpu_ms_per_frame"]),
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--frames", type=int, default=1000, help="frames in all (split over the clients)")
    parser.add_argument("--sims", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.1, help="seconds per frame on a simulator")
    parser.add_argument("--batch-size", type=int, default=50, help="frames per batch (each client runs several)")
    args = parser.parse_args(argv)
    result = run_load(
        sims=args.sims, clients=args.clients, frames=args.frames, seconds=args.seconds, batch_size=args.batch_size
    )
    print(json.dumps(result, indent=2) if args.json else report(result))
    leaks = any(any(d.values()) for d in result["dispatcher_leftovers"])
    return 0 if result["lost"] == 0 and result["run_twice"] == 0 and not leaks else 1


if __name__ == "__main__":
    sys.exit(main())
