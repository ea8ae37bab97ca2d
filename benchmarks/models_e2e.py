"""Model loads end to end: two artists with different models, and one artist cold, on real processes.

    python -m benchmarks.models_e2e [--real] [--json] [--load-seconds L] [--seconds S]
                                    [--frames N] [--solo-frames N] [--baselines]
                                    [--only two-artists|one-artist]

Three servers of speed 1 / 0.5 / 0.25 on 127.0.0.1: simulators started with
``--load-seconds L --seconds S`` (a checkpoint-loader graph), or with ``--real``
real ComfyUI 0.3.39 servers (``benchmarks/real_servers.py``) running the test-only
loader stand-in (sleeps L / speed once per model switch: ComfyUI's own cache
decides) and sampler stand-in (S / speed per frame). Defaults: L = 4 s, S = 1 s,
the case of issue 12.

* Two artists (two :class:`Cluster` objects, two client ids, nothing shared) submit
  at the same moment, N = 12 frames each, each with its own model. Each artist's
  makespan (submit to last frame delivered) is compared with the best static plan:
  who runs where and in which order, one load per switch, found by exhaustive search
  (``benchmarks.static_plan.exhaustive_plan``; local search above 14 frames), once
  for the max over artists and once for the mean. Target: both <= 1.25 x.
* One artist, 24 frames, a model no server has loaded, against the optimum with one
  load per server used (``static_plan.opt_with_setups``). Target: <= 1.05 x.

``--baselines`` adds, in the same run, the two artists sending everything at once,
round robin (what a client that ignores the servers does): every frame then
tends to pay a reload, so it takes minutes. Loads per server are read back from each
server's ``/history`` (a prompt whose loader is not in ``execution_cached`` loaded), with
the idle time between prompts split by cause: the server's own pauses (real ComfyUI's
``gc.collect()`` at most every 10 s) and time with nothing of ours queued.
About 1.5 min on simulators, 2 min with ``--real`` (server starts included; each real
server first runs one throw-away prompt, ComfyUI's lazy imports), on 2 cores.
Learned costs go to a fresh state folder per scenario, so every scenario starts with
nothing learned (a probe frame per server), as a first batch does.
Exit status 0 when every target holds, 1 when one is missed, 2 when ``--real``
cannot run (no ComfyUI source).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Sequence, Tuple

import requests

from benchmarks import static_plan
from benchmarks.real_servers import (
    RealUnavailable,
    fresh_state_dir,
    real_fleet,
    real_fleet_note,
    real_workflow,
    server_configs,
    split_idle,
    unique_model,
)
from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.templating import frame_prompt, seeded_prompt
from nuke_comfy_cluster.sim.process import start_cluster, stop_all

SPEEDS = (1.0, 0.5, 0.25)
ISSUE_LOAD_S, ISSUE_FRAME_S = 4.0, 1.0
TARGET_TWO, TARGET_ONE = 1.25, 1.05
EXHAUSTIVE_MAX_FRAMES = 14  # above this the exhaustive search takes minutes: local search instead
BASE_SEED = 1234
LOADER = "1"  # the loader's node id in both workflows
#: every model label the scenarios use (a simulator accepts only the checkpoints it lists)
LABELS = ("warm-up", "artist-a", "artist-b", "rr-a", "rr-b", "solo")


def sim_workflow(model: str) -> Dict[str, Any]:
    """A text-to-image graph: the checkpoint and prompts are setup, the seeded sampler varies per frame."""
    return {
        LOADER: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 0,
                "steps": 4,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "models_e2e"}},
    }


def _prompt(workflow: Dict[str, Any], frame: int) -> Dict[str, Any]:
    # what Cluster.submit_frames(..., base_seed=BASE_SEED) sends for this frame
    return seeded_prompt(frame_prompt(workflow, frame), BASE_SEED, frame, 0)


def _model_of(prompt: Dict[str, Any]) -> str:
    inputs = prompt.get(LOADER, {}).get("inputs", {})
    return str(inputs.get("ckpt_name", inputs.get("model_name", "")))


def server_runs(
    servers: Sequence[Any], models: Sequence[str], snaps: Sequence[Any]
) -> Tuple[Dict[str, List[List[Any]]], Dict[str, float]]:
    """Per server, the prompts of ``models`` it ran, in order: [model index, start, end, loaded],
    in seconds since the first batch was created (wall clock; the servers' own clocks, from
    ``/history``; a prompt whose loader is not in ``execution_cached`` loaded its model);
    and the servers' idle time between those prompts by cause (:func:`split_idle`), with the
    count of prompts taken back (interrupted: a probe the scheduler asked back) as
    ``taken_back``: they are no frame, but count in the loads and the idle time."""
    t0 = min(snap.created_at for snap in snaps)
    sent = {j.prompt_id: j.queued_at for snap in snaps for j in snap.jobs if j.prompt_id}
    out: Dict[str, List[List[Any]]] = {}
    idle = {"server_pause_s": 0.0, "longest_pause_s": 0.0, "client_idle_s": 0.0, "taken_back": 0}
    for server in servers:
        runs = []
        spans = []
        for prompt_id, entry in requests.get(server.url + "/history", timeout=30).json().items():
            model = _model_of(entry["prompt"][2])
            messages = dict((m[0], m[1]) for m in entry["status"].get("messages", []))
            if model not in models or "execution_start" not in messages:
                continue
            end = messages.get("execution_success", messages.get("execution_error", messages["execution_start"]))
            end = messages.get("execution_interrupted", end)
            loaded = LOADER not in messages.get("execution_cached", {}).get("nodes", [])
            start_s = messages["execution_start"]["timestamp"] / 1000.0 - t0
            end_s = end["timestamp"] / 1000.0 - t0
            if "execution_interrupted" in messages:
                idle["taken_back"] += 1
            else:
                runs.append([models.index(model), round(start_s, 2), round(end_s, 2), loaded])
            queued = sent.get(prompt_id)
            spans.append((start_s, end_s, queued - t0 if queued is not None else None))
        out[server.name] = sorted(runs, key=lambda r: r[1])
        split = split_idle(sorted(spans))
        idle["server_pause_s"] += split["server_pause_s"]
        idle["client_idle_s"] += split["client_idle_s"]
        idle["longest_pause_s"] = max(idle["longest_pause_s"], split["longest_pause_s"])
    return out, {k: round(v, 2) if isinstance(v, float) else v for k, v in idle.items()}


def loads(runs: Dict[str, List[List[Any]]], model: int) -> Dict[str, int]:
    """Server name -> prompts of the ``model``-th model that loaded it there."""
    out = {name: sum(1 for r in rs if r[0] == model and r[3]) for name, rs in runs.items()}
    return {name: n for name, n in out.items() if n}


def blocks(runs: List[List[Any]]) -> str:
    """``A8 B4*2`` for one server: artist A's 8 frames, then B's 4 with 2 loads (more than one: reloads)."""
    parts: List[List[int]] = []
    for model, _start, _end, loaded in runs:
        if parts and parts[-1][0] == model:
            parts[-1][1] += 1
            parts[-1][2] += int(loaded)
        else:
            parts.append([model, 1, int(loaded)])
    text = " ".join("{}{}{}".format("AB"[m] if m < 2 else "?", n, "" if k == 1 else "*%d" % k) for m, n, k in parts)
    return "{} (ends {:.1f} s)".format(text, runs[-1][2]) if runs else "-"


def _artists(servers: Sequence[Any], workflows: Sequence[Dict[str, Any]], frames: int, timeout: float):
    """Each workflow submitted by its own Cluster at the same moment; their batch snapshots."""
    with fresh_state_dir():  # every scenario starts with nothing learned (no probe skipped)
        return _artists_cold(servers, workflows, frames, timeout)


def _artists_cold(servers: Sequence[Any], workflows: Sequence[Dict[str, Any]], frames: int, timeout: float):
    clusters = [Cluster.from_servers(server_configs(servers), ledger=False) for _ in workflows]
    outs = [tempfile.mkdtemp(prefix="ncc-models-e2e-") for _ in workflows]
    try:
        for cluster in clusters:
            cluster.pool.update_all_server_status(force=True)
        time.sleep(0.5)  # websockets connect
        batches = [
            cluster.submit_frames(wf, range(1, frames + 1), output_dir=out, sequence_name=f"a{i}", base_seed=BASE_SEED)
            for i, (cluster, wf, out) in enumerate(zip(clusters, workflows, outs))
        ]
        snaps = [batch.wait(timeout) for batch in batches]
        delivered = [len([f for f in os.listdir(out) if f.startswith(f"a{i}.")]) for i, out in enumerate(outs)]
    finally:
        for cluster in clusters:
            cluster.close()
        for out in outs:
            shutil.rmtree(out, ignore_errors=True)
    for i, (snap, got) in enumerate(zip(snaps, delivered)):
        if not snap.ok or got != frames:
            raise RuntimeError(
                f"artist {'AB'[i]}'s batch ended {snap.state} with {got}/{frames} frames: {snap.message}"
            )
    return snaps


def _round_robin(
    servers: Sequence[Any], workflows: Sequence[Dict[str, Any]], frames: int, timeout: float
) -> List[float]:
    """Baseline: each artist sends every frame at once, in turn to each server; each artist's makespan."""
    spans: List[float] = [0.0] * len(workflows)
    errors: List[BaseException] = []

    def artist(i: int, workflow: Dict[str, Any]) -> None:
        try:
            client, started = uuid.uuid4().hex, time.monotonic()
            sent: List[Tuple[str, str]] = []
            for f in range(1, frames + 1):
                url = servers[f % len(servers)].url
                body = {"prompt": _prompt(workflow, f), "client_id": client}
                sent.append((url, requests.post(url + "/prompt", json=body, timeout=30).json()["prompt_id"]))
            deadline = started + timeout
            for url, prompt_id in sent:
                while not requests.get(f"{url}/history/{prompt_id}", timeout=30).json():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"round robin: {prompt_id} on {url} not done after {timeout:.0f} s")
                    time.sleep(0.1)
            spans[i] = time.monotonic() - started
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=artist, args=(i, wf)) for i, wf in enumerate(workflows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"round robin baseline failed: {errors[0]}")
    return spans


def _plan(frames: int, seconds: float, load: float, objective: str) -> Tuple[static_plan.Plan, str]:
    jobs = [static_plan.Job(frames, seconds, load), static_plan.Job(frames, seconds, load)]
    if frames <= EXHAUSTIVE_MAX_FRAMES:
        return static_plan.exhaustive_plan(jobs, SPEEDS, objective), "exhaustive search"
    return static_plan.best_static_plan(jobs, SPEEDS, objective), "local search"


def _warm_up(servers: Sequence[Any], tier: _Tier) -> None:
    """One throw-away prompt per server (ComfyUI imports lazily on its first prompt); its model
    is then the one loaded, so every artist's model below is cold everywhere."""
    workflow = tier.workflow(tier.model("warm-up"), 0.0, 0.0)
    ids = []
    for server in servers:
        body = {"prompt": _prompt(workflow, 1), "client_id": uuid.uuid4().hex}
        ids.append((server.url, requests.post(server.url + "/prompt", json=body, timeout=30).json()["prompt_id"]))
    deadline = time.monotonic() + 120
    for url, prompt_id in ids:
        while not requests.get(f"{url}/history/{prompt_id}", timeout=30).json():
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up prompt not done on {url}")
            time.sleep(0.1)


class _Tier:
    """What differs between simulators and real ComfyUI: the workflow and the model names."""

    def __init__(self, real: bool) -> None:
        self.real = real

    def model(self, label: str) -> str:
        # real servers live through the whole run, and ComfyUI's cache with them: never reuse a name
        return unique_model(label) if self.real else f"{label}.safetensors"

    def workflow(self, model: str, seconds: float, load: float) -> Dict[str, Any]:
        return real_workflow(model, seconds, load) if self.real else sim_workflow(model)


def _timeout(frames: int, args: argparse.Namespace) -> float:
    # generous: a policy blind to the cache interleaves and reloads on almost every frame
    return 60.0 + 3.0 * frames * (args.seconds + args.load_seconds) / min(SPEEDS)


def _two_artists(servers: Sequence[Any], tier: _Tier, args: argparse.Namespace) -> Dict[str, Any]:
    seconds, load, frames = args.seconds, args.load_seconds, args.frames
    timeout = _timeout(2 * frames, args)
    models = [tier.model("artist-a"), tier.model("artist-b")]
    snaps = _artists(servers, [tier.workflow(m, seconds, load) for m in models], frames, timeout)
    spans = [s.makespan or 0.0 for s in snaps]
    runs, idle = server_runs(servers, models, snaps)
    plan_max, how = _plan(frames, seconds, load, "max")
    plan_mean, _ = _plan(frames, seconds, load, "mean")
    ours_max, ours_mean = max(spans), sum(spans) / len(spans)
    two: Dict[str, Any] = {
        "frames_each": frames,
        "artists": [
            {"makespan_s": round(span, 3), "frames_per_server": snap.servers, "loads_per_server": loads(runs, i)}
            for i, (span, snap) in enumerate(zip(spans, snaps))
        ],
        "timeline": runs,
        "idle_between_prompts": idle,
        "ours_max_s": round(ours_max, 3),
        "ours_mean_s": round(ours_mean, 3),
        "plan_max_s": plan_max.max,
        "plan_mean_s": plan_mean.mean,
        "plan_search": how,
        "plan_blocks": [[list(b) for b in seq] for seq in plan_max.blocks],
        "ratio_plan_max": round(ours_max / plan_max.max, 3),
        "ratio_plan_mean": round(ours_mean / plan_mean.mean, 3),
        "target": TARGET_TWO,
    }
    two["pass"] = two["ratio_plan_max"] <= TARGET_TWO and two["ratio_plan_mean"] <= TARGET_TWO
    if args.baselines:
        models_rr = [tier.model("rr-a"), tier.model("rr-b")]
        rr = _round_robin(servers, [tier.workflow(m, seconds, load) for m in models_rr], frames, timeout)
        two["baseline_round_robin"] = {
            "makespans_s": [round(x, 3) for x in rr],
            "ratio_plan_max": round(max(rr) / plan_max.max, 3),
            "ratio_plan_mean": round(sum(rr) / len(rr) / plan_mean.mean, 3),
        }
    return two


def _one_artist(servers: Sequence[Any], tier: _Tier, args: argparse.Namespace) -> Dict[str, Any]:
    seconds, load, solo_frames = args.seconds, args.load_seconds, args.solo_frames
    model = tier.model("solo")
    (snap,) = _artists(servers, [tier.workflow(model, seconds, load)], solo_frames, _timeout(solo_frames, args))
    opt = static_plan.opt_with_setups([seconds] * solo_frames, SPEEDS, load)
    span = snap.makespan or 0.0
    runs, idle = server_runs(servers, [model], [snap])
    return {
        "frames": solo_frames,
        "makespan_s": round(span, 3),
        "frames_per_server": snap.servers,
        "loads_per_server": loads(runs, 0),
        "timeline": runs,
        "idle_between_prompts": idle,
        "opt_s": opt,
        "ratio_opt": round(span / opt, 3),
        "target": TARGET_ONE,
        "pass": span / opt <= TARGET_ONE,
    }


def _scenarios(servers: Sequence[Any], tier: _Tier, args: argparse.Namespace) -> Dict[str, Any]:
    if tier.real:
        _warm_up(servers, tier)
    result: Dict[str, Any] = {}
    if args.only in ("", "two-artists"):
        result["two_artists"] = _two_artists(servers, tier, args)
    if args.only in ("", "one-artist"):
        result["one_artist"] = _one_artist(servers, tier, args)
    return result


def run(args: argparse.Namespace) -> Dict[str, Any]:
    tier = _Tier(args.real)
    if args.real:
        with real_fleet(SPEEDS) as servers:
            scenarios = _scenarios(servers, tier, args)
    else:
        extra = ["--load-seconds", repr(args.load_seconds), "--models", ",".join(tier.model(x) for x in LABELS)]
        procs = start_cluster(list(SPEEDS), seconds=args.seconds, extra_args=extra)
        for i, proc in enumerate(procs):
            proc.name = f"sim{i}"  # what server_runs and the configs call it
        try:
            scenarios = _scenarios(procs, tier, args)
        finally:
            stop_all(procs)
    shrunk = (args.load_seconds, args.seconds) != (ISSUE_LOAD_S, ISSUE_FRAME_S)
    return {
        "servers": real_fleet_note() if args.real else "simulator (nuke_comfy_cluster.sim --load-seconds)",
        "speeds": list(SPEEDS),
        "load_s": args.load_seconds,
        "frame_s": args.seconds,
        "times_as_in_issue": not shrunk,
        **scenarios,
        "all_pass": all(scenario["pass"] for scenario in scenarios.values()),
    }


def _print_idle(idle: Dict[str, Any]) -> None:
    print(
        "  servers idle between prompts: {server_pause_s:.1f} s paused with the next prompt waiting (longest "
        "{longest_pause_s:.1f} s: the server's own), {client_idle_s:.1f} s with nothing of ours queued; "
        "{taken_back:d} first frames taken back".format(**idle)
    )


def _print(r: Dict[str, Any]) -> None:
    times = "load {:g} s + frame {:g} s at speed 1, both divided by the server's speed".format(
        r["load_s"], r["frame_s"]
    )
    if not r["times_as_in_issue"]:
        times += " (the issue's case is 4 s + 1 s: times changed with --load-seconds/--seconds)"
    print("models end to end on {}, speeds {}".format(r["servers"], "/".join("%g" % s for s in r["speeds"])))
    print("  " + times)
    if "two_artists" in r:
        t = r["two_artists"]
        print("two artists at once, {} frames each, different models:".format(t["frames_each"]))
        for name, a in zip("AB", t["artists"]):
            print(
                "  artist {}: {:7.2f} s  frames {}  loads {}".format(
                    name, a["makespan_s"], a["frames_per_server"], a["loads_per_server"]
                )
            )
        for server, runs in t["timeline"].items():
            print("    {}: {}".format(server, blocks(runs)))
        _print_idle(t["idle_between_prompts"])
        print(
            "  best static plan ({}): max {:.2f} s, mean {:.2f} s; blocks per server (artist, frames): {}".format(
                t["plan_search"], t["plan_max_s"], t["plan_mean_s"], t["plan_blocks"]
            )
        )
        print(
            "  ours: max {:.2f} s = {:.2f} x plan, mean {:.2f} s = {:.2f} x plan (target <= {:g})  {}".format(
                t["ours_max_s"],
                t["ratio_plan_max"],
                t["ours_mean_s"],
                t["ratio_plan_mean"],
                t["target"],
                "ok" if t["pass"] else "MISSED",
            )
        )
        if "baseline_round_robin" in t:
            b = t["baseline_round_robin"]
            print(
                "  baseline round robin, everything at once: {} s = {:.2f} x plan max, {:.2f} x plan mean".format(
                    b["makespans_s"], b["ratio_plan_max"], b["ratio_plan_mean"]
                )
            )
    if "one_artist" in r:
        o = r["one_artist"]
        print("one artist, {} frames, a model no server has loaded:".format(o["frames"]))
        print(
            "  ours {:.2f} s, optimum with one load per server used {:.2f} s: {:.3f} x (target <= {:g})  {}".format(
                o["makespan_s"], o["opt_s"], o["ratio_opt"], o["target"], "ok" if o["pass"] else "MISSED"
            )
        )
        print("  frames {}  loads {}".format(o["frames_per_server"], o["loads_per_server"]))
        for server, runs in o["timeline"].items():
            print("    {}: {}, first frame starts {:.1f} s".format(server, blocks(runs), runs[0][1] if runs else 0.0))
        _print_idle(o["idle_between_prompts"])
    print("all targets met" if r["all_pass"] else "TARGET MISSED")


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models_e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="on real ComfyUI 0.3.39 servers instead of simulators")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--load-seconds", type=float, default=ISSUE_LOAD_S, help="model load at speed 1 (default 4)")
    parser.add_argument("--seconds", type=float, default=ISSUE_FRAME_S, help="frame time at speed 1 (default 1)")
    parser.add_argument("--frames", type=int, default=12, help="frames per artist, two artists (default 12)")
    parser.add_argument("--solo-frames", type=int, default=24, help="frames of the one-artist case (default 24)")
    parser.add_argument("--baselines", action="store_true", help="also round robin, everything at once (slow)")
    parser.add_argument("--only", choices=("two-artists", "one-artist"), default="", help="run one scenario")
    args = parser.parse_args(list(argv) or None)
    if args.seconds <= 0 or args.load_seconds < 0:
        parser.error("--seconds must be > 0 and --load-seconds >= 0")
    if args.frames < 1 or args.solo_frames < 1:
        parser.error("--frames and --solo-frames must be >= 1")
    try:
        result = run(args)
    except RealUnavailable as exc:
        print(f"benchmarks.models_e2e --real: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
