"""End-to-end scheduling on real simulator processes: our dispatcher against the baselines.

``python -m benchmarks.e2e [--json] [--quick] [--seconds S]``

Three simulator processes at speeds 1 / 0.5 / 0.25 on 127.0.0.1, 24 and 96 frames.
Printed side by side, in the same run:
- ours: the real Cluster (websocket push, pull scheduling);
- one server, frame after frame (the fastest; how single-server Nuke integrations submit);
- round robin, everything at once;
- least queue length (GET /prompt before each submit), everything at once.
OPT is the clairvoyant makespan (each frame to the earliest-finishing server, frame
times known), LB the fluid bound (total work / total speed). Also reported for ours:
client CPU time per dispatched job and status-layer requests per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any, Dict, List, Sequence

import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.templating import frame_prompt
from nuke_comfy_cluster.sim.process import SimProcess, start_cluster, stop_all

SPEEDS = (1.0, 0.5, 0.25)
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "e2e_####"}},
}
STATUS_ROUTES = ("GET prompt", "GET queue", "GET system_stats", "GET history")


def opt_makespan(frames: int, frame_times: Sequence[float]) -> float:
    """Equal frames: giving each to the earliest-finishing server is optimal."""
    free = [0.0] * len(frame_times)
    for _ in range(frames):
        i = min(range(len(free)), key=lambda k: free[k] + frame_times[k])
        free[i] += frame_times[i]
    return max(free)


def _post(url: str, client: str, frame: int) -> str:
    # one distinct prompt per frame, as ours sends: identical prompts would be served from cache
    body = {"prompt": frame_prompt(WORKFLOW, frame), "client_id": client, "extra_data": {"frame": frame}}
    r = requests.post(url + "/prompt", json=body, timeout=10)
    r.raise_for_status()
    return r.json()["prompt_id"]


def _wait_history(url: str, ids: List[str], timeout: float) -> None:
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        history = requests.get(url + "/history", timeout=10).json()
        pending -= set(history)
        if pending:
            time.sleep(0.05)
    if pending:
        raise RuntimeError(f"{len(pending)} prompts did not finish on {url}")


def baseline_sequential(proc: SimProcess, frames: int) -> float:
    client = uuid.uuid4().hex
    started = time.monotonic()
    for f in range(1, frames + 1):
        _wait_history(proc.url, [_post(proc.url, client, f)], 120)
    return time.monotonic() - started


def _all_at_once(procs: Sequence[SimProcess], frames: int, pick) -> float:  # type: ignore[no-untyped-def]
    client = uuid.uuid4().hex
    started = time.monotonic()
    sent: Dict[str, List[str]] = {p.url: [] for p in procs}
    for f in range(1, frames + 1):
        url = pick(f)
        sent[url].append(_post(url, client, f))
    for url, ids in sent.items():
        _wait_history(url, ids, 600)
    return time.monotonic() - started


def baseline_round_robin(procs: Sequence[SimProcess], frames: int) -> float:
    return _all_at_once(procs, frames, lambda f: procs[f % len(procs)].url)


def baseline_least_queue(procs: Sequence[SimProcess], frames: int) -> float:
    def pick(_f: int) -> str:
        loads = []
        for i, p in enumerate(procs):
            remaining = requests.get(p.url + "/prompt", timeout=10).json()["exec_info"]["queue_remaining"]
            loads.append((remaining, i))
        return procs[min(loads)[1]].url

    return _all_at_once(procs, frames, pick)


def ours(procs: Sequence[SimProcess], frames: int) -> Dict[str, Any]:
    servers = [ServerConfig(name=f"sim{i}", ip="127.0.0.1", port=p.port, priority=i) for i, p in enumerate(procs)]
    with Cluster.from_servers(servers) as cluster:
        cluster.pool.update_all_server_status(force=True)
        time.sleep(0.5)  # websockets connect
        for s in cluster.pool.servers:
            s.connection.request_counts.clear()
        cpu0 = time.process_time()
        batch = cluster.submit_frames(WORKFLOW, range(1, frames + 1))
        snap = batch.wait(600)
        cpu = time.process_time() - cpu0
        counts: Dict[str, int] = {}
        for s in cluster.pool.servers:
            for route, n in s.connection.request_counts.items():
                counts[route] = counts.get(route, 0) + n
    if not snap.ok:
        raise RuntimeError(f"our batch did not finish: {snap.state}")
    makespan = snap.makespan or 0.0
    status_requests = sum(n for r, n in counts.items() if r in STATUS_ROUTES)
    return {
        "makespan_s": makespan,
        "frames_per_server": snap.servers,
        "cpu_ms_per_job": cpu * 1000.0 / frames,
        "status_requests_per_s": status_requests / makespan if makespan else None,
        "requests": counts,
        "get_queue_in_dispatch": counts.get("GET queue", 0),
    }


def run(frame_counts: Sequence[int], seconds: float) -> Dict[str, Any]:
    frame_times = [seconds / s for s in SPEEDS]
    scenarios = []
    for frames in frame_counts:
        procs = start_cluster(list(SPEEDS), seconds=seconds)
        try:
            mine = ours(procs, frames)
            seq = baseline_sequential(procs[0], frames)
            rr = baseline_round_robin(procs, frames)
            lq = baseline_least_queue(procs, frames)
        finally:
            stop_all(procs)
        opt = opt_makespan(frames, frame_times)
        lb = frames / sum(1.0 / t for t in frame_times)
        scenarios.append(
            {
                "frames": frames,
                "speeds": list(SPEEDS),
                "frame_time_fastest_s": seconds,
                "opt_s": opt,
                "lb_s": lb,
                "ours": dict(mine, ratio_opt=mine["makespan_s"] / opt),
                "baselines": {
                    "fastest_server_sequential": {"makespan_s": seq, "ratio_opt": seq / opt},
                    "round_robin_all_at_once": {"makespan_s": rr, "ratio_opt": rr / opt},
                    "least_queue_all_at_once": {"makespan_s": lq, "ratio_opt": lq / opt},
                },
                "target_ratio_opt": 1.10,
                "pass": mine["makespan_s"] / opt <= 1.10,
            }
        )
    return {"scenarios": scenarios, "all_pass": all(s["pass"] for s in scenarios)}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="24 frames only")
    parser.add_argument("--seconds", type=float, default=0.4, help="frame time on the fastest server")
    args = parser.parse_args(list(argv) or None)
    result = run([24] if args.quick else [24, 96], args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for s in result["scenarios"]:
            print("{} frames on speeds {} (OPT {:.2f} s, LB {:.2f} s)".format(s["frames"], s["speeds"], s["opt_s"], s["lb_s"]))
            print("  {:<32} {:>8.2f} s  {:.2f} x OPT  {}".format("ours (pull, websocket push)", s["ours"]["makespan_s"], s["ours"]["ratio_opt"], s["ours"]["frames_per_server"]))
            for name, b in s["baselines"].items():
                print("  {:<32} {:>8.2f} s  {:.2f} x OPT".format(name, b["makespan_s"], b["ratio_opt"]))
            print("  client CPU {:.1f} ms/job, status-layer {:.2f} req/s, GET /queue during dispatch: {}".format(
                s["ours"]["cpu_ms_per_job"], s["ours"]["status_requests_per_s"] or 0, s["ours"]["get_queue_in_dispatch"]))
        print("all targets met" if result["all_pass"] else "TARGET MISSED")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
