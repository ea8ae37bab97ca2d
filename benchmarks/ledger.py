"""What the batch ledger costs per event, for a 500-frame and a 100,000-frame batch.

``python -m benchmarks.ledger [--json] [--frames 500,100000] [--dir FOLDER]``

Each frame records three events, as the dispatcher does (submitted, running, done
with its delivered file), in dispatcher order (a window of frames in flight). It
prints the time per ``record_job`` call (mean, p99, max: the max is a
compaction), the compactions, the bytes written, and the time to load the batch
again (what a resume pays before it starts). The baseline in the same run is the
simple alternative: rewrite the whole state file atomically (temp + fsync +
replace) on every event; for the big batch it is sampled at the end of the batch,
where every event rewrites all 100,000 frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace as NS
from typing import Any, Dict, List, Optional

from nuke_comfy_cluster.core.ledger import JobUpdate, Ledger, SubmitOptions, record_for
from nuke_comfy_cluster.core.ledger_io import atomic_write

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 1024}},
    "2": {"class_type": "SaveImage", "inputs": {}},
}
WINDOW = 8  # frames in flight at once


def _events(n: int):
    """(index, state, k) in the order a dispatcher with a window of WINDOW frames produces them."""
    k = 0
    for step in range(n + 2 * WINDOW):
        for lag, state in ((0, "submitted"), (WINDOW, "running"), (2 * WINDOW, "done")):
            i = step - lag
            if 0 <= i < n:
                yield i, state, k
                k += 1


def _update(i: int, state: str, k: int) -> JobUpdate:
    files = (f"/mnt/shows/proj/shot010/comfy/shot010_comfy.{1001 + i:04d}.png",) if state == "done" else ()
    return JobUpdate(
        i,
        state,
        server="gpu-box-03",
        prompt_id="3f0e6c1a-5d3b-4a0e-9d5e-%012d" % i,
        attempt="%032x" % (k * 2654435761 % (1 << 128)),
        attempts=1,
        files=files,
        at=time.time(),
    )


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def measure_ledger(n: int, root: str) -> Dict[str, Any]:
    ledger = Ledger(root)
    jobs = [
        NS(id=os.urandom(16).hex(), frame=1001 + i, iteration=None, seed=None, label=f"frame {1001 + i}")
        for i in range(n)
    ]
    batch = NS(id=f"bench{n}", name=f"bench {n}", created_at=time.time(), jobs=jobs)
    t = time.perf_counter()
    writer = ledger.create(
        record_for(batch, workflow=WORKFLOW, options=SubmitOptions(frames=f"1001-{1000 + n}", output_dir="/mnt/out"))
    )
    create_s = time.perf_counter() - t
    times: List[float] = []
    written = 0
    cpu = time.process_time()
    for i, state, k in _events(n):
        update = _update(i, state, k)
        t = time.perf_counter()
        writer.record_job(update)
        times.append(time.perf_counter() - t)
        written += 1
    events_cpu = time.process_time() - cpu
    t = time.perf_counter()
    writer.mark_finished("done")
    finish_s = time.perf_counter() - t
    t, cpu = time.perf_counter(), time.process_time()
    loaded = ledger.load(batch.id)
    load_s, load_cpu = time.perf_counter() - t, time.process_time() - cpu
    assert loaded.counts()["done"] == n
    t = time.perf_counter()
    ledger.list()
    list_s = time.perf_counter() - t
    times.sort()
    return {
        "frames": n,
        "events": written,
        "create_ms": create_s * 1e3,
        "per_event_us_mean": statistics.mean(times) * 1e6,
        "per_event_us_p50": times[len(times) // 2] * 1e6,
        "per_event_us_p99": times[int(len(times) * 0.99)] * 1e6,
        "per_event_ms_max": times[-1] * 1e3,
        "total_s": sum(times),
        "per_event_us_cpu": events_cpu / written * 1e6,
        "compactions": writer.compactions,
        "mark_finished_ms": finish_s * 1e3,
        "load_ms": load_s * 1e3,
        "load_cpu_ms": load_cpu * 1e3,
        "list_ms": list_s * 1e3,
        "bytes_on_disk": _folder_bytes(root),
    }


def measure_baseline(n: int, root: str, samples: Optional[int]) -> Dict[str, Any]:
    """Rewrite the whole state atomically per event; ``samples``: only that many events, at full size."""
    path = os.path.join(root, "state.json")
    from pathlib import Path

    states: Dict[int, Dict[str, Any]] = {}
    events = list(_events(n))
    if samples is not None:
        for i, state, k in events[:-samples]:
            states[i] = _update(i, state, k).to_json()
        events = events[-samples:]
    times: List[float] = []
    for i, state, k in events:
        t = time.perf_counter()
        states[i] = _update(i, state, k).to_json()
        atomic_write(Path(path), [json.dumps(list(states.values())).encode()])
        times.append(time.perf_counter() - t)
    return {
        "frames": n,
        "events_timed": len(times),
        "per_event_ms_mean": statistics.mean(times) * 1e3,
        "whole_batch_s_estimate": statistics.mean(times) * 3 * n,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="500,100000", help="comma-separated batch sizes")
    parser.add_argument(
        "--dir", help="where to write (default: a temp folder; put it on the disk the state folder uses)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.frames.split(",") if x.strip()]
    results = []
    for n in sizes:
        base = tempfile.mkdtemp(prefix="ncc-ledger-bench-", dir=args.dir)
        try:
            ours = measure_ledger(n, os.path.join(base, "ledger"))
            os.makedirs(os.path.join(base, "naive"))
            naive = measure_baseline(n, os.path.join(base, "naive"), None if n <= 2000 else 30)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results.append({"ledger": ours, "baseline_rewrite_every_event": naive})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        o, b = r["ledger"], r["baseline_rewrite_every_event"]
        print(
            f"{o['frames']:>7} frames, {o['events']} events: ledger {o['per_event_us_mean']:.1f} us/event mean "
            f"(p50 {o['per_event_us_p50']:.1f} us, p99 {o['per_event_us_p99']:.1f} us, max {o['per_event_ms_max']:.1f} ms "
            f"= a compaction; {o['compactions']} compactions), {o['total_s']:.2f} s in all, "
            f"{o['per_event_us_cpu']:.1f} us/event of CPU"
        )
        print(
            f"{'':>7}         create {o['create_ms']:.1f} ms, mark_finished {o['mark_finished_ms']:.1f} ms, "
            f"load (resume) {o['load_ms']:.1f} ms ({o['load_cpu_ms']:.0f} ms CPU), list {o['list_ms']:.1f} ms, {o['bytes_on_disk'] / 1e6:.2f} MB on disk"
        )
        print(
            f"{'':>7}         baseline (atomic rewrite per event): {b['per_event_ms_mean']:.2f} ms/event "
            f"over {b['events_timed']} events, ~{b['whole_batch_s_estimate']:.0f} s for the batch"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
