"""demo: three simulated ComfyUI servers of mixed speed, one animation spread over them.

Needs no ComfyUI, no GPU and no display. Everything it starts listens on 127.0.0.1
and is stopped before it returns.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any, Dict, List

from ..core.api import Cluster
from ..core.config import ServerConfig

#: a tiny API-format workflow: a frame-numbered image, saved per frame
DEMO_WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1193046}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "demo/shot010_####"}},
}
SPEEDS = (1.0, 0.5, 0.25)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="three simulated servers, one animation: the product end to end")
    p.add_argument("--frames", type=int, default=24, help="frames in the animation (default 24)")
    p.add_argument("--seconds", type=float, default=0.5, help="frame time on the fastest server (default 0.5)")
    p.add_argument("--out", help="folder for the delivered sequence (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_demo)


def run_demo(frames: int, seconds: float, out: str) -> Dict[str, Any]:
    from ..sim.process import start_cluster, stop_all
    from .progress import wait_with_progress

    procs = start_cluster(list(SPEEDS), seconds=seconds)
    try:
        servers = [
            ServerConfig(name=f"sim-{speed}x", ip="127.0.0.1", port=p.port, priority=i)
            for i, (speed, p) in enumerate(zip(SPEEDS, procs))
        ]
        with Cluster.from_servers(servers) as cluster:
            cluster.pool.update_all_server_status(force=True)
            batch = cluster.submit_frames(
                DEMO_WORKFLOW, range(1001, 1001 + frames), output_dir=out, sequence_name="shot010_comfy"
            )
            snap = wait_with_progress(batch, timeout=max(120.0, frames * seconds * 8))
            if not snap.finished:
                cluster.cancel(batch)
                snap = batch.wait(10)
            status = cluster.pool.update_all_server_status(force=True)
    finally:
        stop_all(procs)
    times: Dict[str, List[float]] = {}
    for j in snap.jobs:
        if j.server and j.started_at and j.finished_at:
            times.setdefault(j.server, []).append(j.finished_at - j.started_at)
    fastest = min((sum(t) / len(t) for t in times.values()), default=None)
    return {
        "snapshot": snap,
        "status": status,
        "sequential_estimate_s": None if fastest is None else fastest * frames,
        "output": out,
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from .progress import summary_table
    from .status_cmds import format_table

    out = args.out or tempfile.mkdtemp(prefix="ncc-demo-")
    print(
        "Starting 3 simulated ComfyUI servers (speeds {}) on 127.0.0.1 ...".format(" / ".join(str(s) for s in SPEEDS)),
        file=sys.stderr,
    )
    result = run_demo(args.frames, args.seconds, out)
    snap = result["snapshot"]
    if args.json:
        print(
            json.dumps(
                {
                    "state": snap.state,
                    "makespan_s": snap.makespan,
                    "sequential_estimate_s": result["sequential_estimate_s"],
                    "frames_per_server": snap.servers,
                    "output": out,
                    "jobs": [j.as_dict() for j in snap.jobs],
                },
                indent=2,
            )
        )
    else:
        print()
        print(summary_table(snap))
        seq = result["sequential_estimate_s"]
        if snap.makespan:
            print(f"makespan on the cluster: {snap.makespan:.1f} s for {len(snap.jobs)} frames")
        if seq and snap.makespan:
            print(
                f"one server, frame after frame (fastest, measured): ~{seq:.1f} s -> cluster speed-up {seq / snap.makespan:.2f}x"
            )
        print()
        print(format_table(result["status"]))
    return 0 if snap.ok else 1
