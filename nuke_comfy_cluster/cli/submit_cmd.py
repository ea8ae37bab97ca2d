"""submit: send a workflow (one prompt, a frame range or N iterations) to the cluster."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, List

from ..core.api import Cluster
from ..core.errors import ConfigError, WorkflowError


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="render a workflow on the cluster (exit 0 only if every job is done)")
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Save (API Format))")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--frames", help="frame range A-B (one prompt per frame), e.g. 1001-1024")
    mode.add_argument("--iterations", type=int, help="N variations with deterministic seeds")
    p.add_argument("--seed", type=int, default=None, help="base seed for iterations / frames")
    p.add_argument("--server", help="pin to this server (default: the cluster decides)")
    p.add_argument("--out", help="copy or download every result into this folder as NAME.####.ext")
    p.add_argument("--name", help="sequence name for --out (default: the workflow file name)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON at the end")
    p.set_defaults(func=cmd_submit)


def parse_frames(text: str) -> List[int]:
    """``1001-1024``, ``5``, ``1-10x2``, ``1,3,5-7``."""
    frames: List[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(-?\d+)(?:-(-?\d+)(?:x(\d+))?)?", part)
        if not m:
            raise ConfigError(f"--frames: cannot read {part!r}; expected e.g. 1001-1024 or 1,3,5-7")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3) or 1)
        if last < first or step < 1:
            raise ConfigError(f"--frames: {part!r} is an empty range")
        frames.extend(range(first, last + 1, step))
    if len(set(frames)) != len(frames):
        raise ConfigError(f"--frames: {text!r} names a frame twice")
    return frames


def load_workflow(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read workflow {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise WorkflowError(f"workflow {path} is not valid JSON: {e}") from e


def cmd_submit(args: argparse.Namespace) -> int:
    from .progress import summary_table, wait_with_progress

    if args.iterations is not None and args.iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {args.iterations}")
    workflow = load_workflow(args.workflow)
    name = args.name or os.path.splitext(os.path.basename(args.workflow))[0]
    out = os.path.abspath(args.out) if args.out else None
    common = dict(server=args.server, output_dir=out, sequence_name=name if out else None)
    with Cluster.from_environment() as cluster:
        loaded = cluster.pool.config_load
        if loaded is not None:
            print(loaded.notice, file=sys.stderr)
        if args.frames:
            batch = cluster.submit_frames(workflow, parse_frames(args.frames), base_seed=args.seed, **common)
        elif args.iterations is not None:
            batch = cluster.submit_iterations(workflow, args.iterations, base_seed=args.seed or 0, **common)
        else:
            batch = cluster.submit(workflow, **common)
        try:
            snap = wait_with_progress(batch, args.timeout)
        except KeyboardInterrupt:
            cluster.cancel(batch)
            snap = batch.wait(10)
        if not snap.finished:
            cluster.cancel(batch)
            snap = batch.wait(10)
            print("timed out: cancelled what was left", file=sys.stderr)
        if args.json:
            print(json.dumps({"makespan_s": snap.makespan, "state": snap.state, "jobs": [j.as_dict() for j in snap.jobs]}, indent=2))
        else:
            print(summary_table(snap))
        return 0 if snap.ok else 1
