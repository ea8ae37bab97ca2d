"""Scale of the batch plan in virtual time: 100 to 100,000 frames (``python -m benchmarks.scheduler --scale``).

One client on servers of speed 1 / 0.5 / 0.25 runs the real scheduler; printed per
batch size: the client's CPU time per frame deciding (building the server records and
planning), plan() calls per frame, and the most of our prompts one server held, against
the same policy without the hard window cap. Also with a lagging client that reads its
messages only every two frame times (too busy to keep up: it hears of a frame's start
together with its end, and the learned frame time collapses), the case where an uncapped
plan queues hundreds of our prompts on one server.
"""

from __future__ import annotations

import random
import time
from typing import List, Tuple

from nuke_comfy_cluster.sim.virtual import ServerSpec, World, frame_works, opt_makespan
from nuke_comfy_cluster.sim.virtual_clients import PolicyClient

BASE_FRAME = 10.0  # seconds of work per frame at speed 1 (as benchmarks.scheduler)
NOISE = 0.2

SCALE_FRAMES = (100, 1000, 10000, 100000)


SCALE_SPEEDS = (1.0, 0.5, 0.25)


def scale_row(frames: int, capped: bool, lag: bool, seed: int = 1) -> dict:
    """One client, ``frames`` frames on 1/0.5/0.25: what deciding costs and how deep we queue."""
    specs = [ServerSpec("gpu%d" % i, s) for i, s in enumerate(SCALE_SPEEDS)]
    world = World(specs, seed, inbox_every=2.0 * BASE_FRAME if lag else 0.0)
    works = frame_works(frames, random.Random(seed), BASE_FRAME, NOISE)
    kw = {} if capped else {"max_window": 10**9}
    client = world.add(PolicyClient(world, "c", works, measure_cpu=True, **kw))
    t0 = time.perf_counter()
    world.run()
    wall = time.perf_counter() - t0
    if not client.done:
        raise RuntimeError("scale %d: frames left unfinished" % frames)
    return {
        "frames": frames,
        "policy": "ours" if capped else "no window cap",
        "client": "lagging" if lag else "push",
        "cpu_ms_per_frame": round(client.cpu_s * 1000.0 / frames, 4),
        "plans_per_frame": round(client.plans / frames, 2),
        "max_ours_per_server": client.max_ours,
        "window": client.scheduler.max_window if capped else None,
        "ratio_opt": round(client.result.makespan / opt_makespan(works, SCALE_SPEEDS), 4),
        "wall_s": round(wall, 1),
    }


def _scale_table(rows: List[dict]) -> str:
    fmt = "%-8s %-14s %-8s | %-12s | %-6s | %-16s | %-6s | %-6s"
    head = fmt % ("frames", "policy", "client", "CPU ms/frame", "plans", "max ours/server", "window", "xOPT")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            fmt
            % (
                r["frames"],
                r["policy"],
                r["client"],
                "%.4f" % r["cpu_ms_per_frame"],
                "%.2f" % r["plans_per_frame"],
                r["max_ours_per_server"],
                "-" if r["window"] is None else r["window"],
                "%.3f" % r["ratio_opt"],
            )
        )
    lines.append("")
    lines.append("CPU ms/frame: client process time deciding (server records + plan) per frame; plans: plan() calls")
    lines.append("per frame; lagging: the client reads its messages every 2 frame times (of the fastest GPU).")
    return "\n".join(lines)


def run_scale(max_frames: int) -> Tuple[List[dict], bool]:
    rows = []
    for lag in (False, True):
        for frames in (f for f in SCALE_FRAMES if f <= max_frames):
            for capped in (True, False):
                rows.append(scale_row(frames, capped, lag))
    ours = [r for r in rows if r["policy"] == "ours"]
    base = [r for r in ours if r["frames"] == min(r2["frames"] for r2 in ours)]
    # Flat: no batch size costs more than twice the smallest one per frame (CPU timing is noisy).
    flat = all(r["cpu_ms_per_frame"] <= 2.0 * max(b["cpu_ms_per_frame"] for b in base) for r in ours)
    capped = all(r["max_ours_per_server"] <= r["window"] for r in ours)
    return rows, flat and capped
