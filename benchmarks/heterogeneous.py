"""Heterogeneous clusters: what a server that cannot run the workflow costs.

    python -m benchmarks.heterogeneous [--frames 24] [--seconds 0.5] [--json]

Three simulators, the fastest one started without a node the workflow needs
(``--without-nodes ImageInvert``), against the same batch on the two capable servers
alone (the baseline: what an artist would get by disabling the box by hand), and the
time until a batch that no server can run fails (nothing rendered). Exit status 0
when the targets of issue 11 hold: makespan <= 1.05 x the baseline, failure < 5 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any, Dict, List

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.sim.process import SimProcess

WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": "%d"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "h_####"}},
}


def _configs(procs: List[SimProcess]) -> List[ServerConfig]:
    return [ServerConfig(f"s{i}", "127.0.0.1", p.port) for i, p in enumerate(procs)]


def _makespan(procs: List[SimProcess], frames: int) -> float:
    with Cluster.from_servers(_configs(procs), ledger=False) as cluster, tempfile.TemporaryDirectory() as out:
        t0 = time.monotonic()
        snap = cluster.submit_frames(WORKFLOW, range(1, frames + 1), output_dir=out, sequence_name="h").wait(600)
        took = time.monotonic() - t0
    if snap.state != "done":
        raise SystemExit(f"batch ended {snap.state}: {snap.message}")
    return took


def run(frames: int, seconds: float) -> Dict[str, Any]:
    bare = SimProcess(speed=2.0, seconds=seconds, extra_args=["--without-nodes", "ImageInvert"])
    capable = [SimProcess(speed=1.0, seconds=seconds), SimProcess(speed=1.0, seconds=seconds)]
    none = [SimProcess(speed=1.0, seconds=seconds, extra_args=["--without-nodes", "ImageInvert"]) for _ in range(2)]
    procs = [bare] + capable + none
    for p in procs:
        p.start()
    try:
        with_bare = _makespan([bare] + capable, frames)
        alone = _makespan(capable, frames)
        with Cluster.from_servers(_configs(none), ledger=False) as cluster, tempfile.TemporaryDirectory() as out:
            t0 = time.monotonic()
            snap = cluster.submit_frames(WORKFLOW, range(1, frames + 1), output_dir=out, sequence_name="h").wait(60)
            fail_s = time.monotonic() - t0
        rendered = snap.done
    finally:
        for p in procs:
            p.stop()
    return {
        "frames": frames,
        "seconds": seconds,
        "makespan_with_incompatible_s": round(with_bare, 3),
        "makespan_capable_only_s": round(alone, 3),
        "ratio": round(with_bare / alone, 3),
        "time_to_fail_s": round(fail_s, 3),
        "rendered_when_none_can": rendered,
        "pass": with_bare / alone <= 1.05 and fail_s < 5.0 and rendered == 0,
    }


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heterogeneous", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = run(args.frames, args.seconds)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            "{frames} frames: with the incompatible fastest server {makespan_with_incompatible_s} s, "
            "capable servers only {makespan_capable_only_s} s (baseline): {ratio} x (target <= 1.05)".format(**r)
        )
        print("no server can run it: failed after {time_to_fail_s} s, {rendered_when_none_can} rendered".format(**r))
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
