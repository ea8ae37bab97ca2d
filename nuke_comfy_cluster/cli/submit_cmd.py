"""submit: send a workflow (one prompt, a frame range or N iterations) to the cluster.

Exit codes: 0 every job done; 1 some failed, were cancelled or timed out; 2 refused
(bad arguments, workflow or configuration, or a workflow every server rejects:
nothing rendered); 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP after
cancelling our prompts (never another client's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Dict, List

from ..core.api import Cluster, SubmitOptions
from ..core.dispatch import DEFAULT_WAIT_FOR_SERVERS_S
from ..core.errors import ConfigError, WorkflowError
from ..core.jobs import BatchSnapshot
from ..core.templating import find_inputs, has_frame_token, validate_workflow
from .options import add_common, positive_seconds
from .progress import DEFAULT_INTERVAL
from .signals import Stopped

#: seconds to wait for the servers to drop our prompts after a cancel
CANCEL_WAIT = 10.0


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="render a workflow on the cluster (exit 0 only if every job is done)")
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Save (API Format))")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--frames", help="frame range A-B (one prompt per frame), e.g. 1001-1024, 1-10x2, 1,3,5-7")
    mode.add_argument("--iterations", type=int, help="N variations with deterministic seeds")
    p.add_argument("--seed", type=int, default=None, help="base seed for iterations / frames")
    p.add_argument("--server", help="pin to this server (default: the cluster decides)")
    p.add_argument("--out", help="deliver every result into this folder as NAME.####.ext")
    p.add_argument("--name", help="sequence name for --out (default: the workflow file name)")
    p.add_argument("--overwrite", action="store_true", help="replace frames of the sequence that already exist")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished batch of this workflow into the same --out/--name (a killed run): frames "
        "already delivered are kept, prompts still on servers re-attached; without one, start a new batch",
    )
    p.add_argument("--timeout", type=positive_seconds, default=None, help="give up after this many seconds")
    p.add_argument(
        "--progress-every",
        type=positive_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"when stderr is not a terminal: a progress line at least this often (default {DEFAULT_INTERVAL:g})",
    )
    p.add_argument("--json", action="store_true", help="print the jobs as JSON at the end")
    add_common(p)
    p.set_defaults(func=cmd_submit)


def load_workflow(path: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read workflow {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise WorkflowError(f"workflow {path} is not UTF-8 text (byte offset {e.start})") from e
    except ValueError as e:
        raise WorkflowError(f"workflow {path} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise WorkflowError(f"workflow {path} is nested too deeply to be a workflow") from e


def surprises(workflow: Dict[str, Any], args: argparse.Namespace) -> List[str]:
    """Warnings for results a user would not expect: N identical images, identical frames."""
    warnings = []
    seeds = find_inputs(workflow)["seed"]
    if args.iterations is not None and args.iterations > 1 and not seeds:
        warnings.append(
            f"--iterations {args.iterations}: the workflow has no seed or noise_seed input to vary, "
            f"so the {args.iterations} images will be identical"
        )
    if args.frames is not None and not _has_frame_input(workflow) and not (args.seed is not None and seeds):
        warnings.append(
            "--frames: no input of the workflow holds a frame token (####, %04d, {frame}) and no --seed varies "
            "a seed input, so every frame renders the same image"
        )
    return warnings


def _has_frame_input(workflow: Dict[str, Any]) -> bool:
    for node in workflow.values():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, str) and has_frame_token(value):
                return True
    return False


def sequence_name(args: argparse.Namespace) -> str:
    """``--name`` (or the workflow's file name) as a plain base name; frame tokens in it are dropped with a warning."""
    name = args.name or os.path.splitext(os.path.basename(args.workflow))[0]
    if "#" in name:
        cleaned = re.sub(r"[._-]*#+[._-]*", "_", name).strip("._-")
        if not cleaned:
            raise ConfigError(f"--name {name!r}: give the sequence a name; the frame number is added as NAME.####.ext")
        print(
            f"warning: --name {name!r} holds '#': the frame number is added for you (NAME.####.ext), "
            f"so the sequence is named {cleaned!r}",
            file=sys.stderr,
        )
        name = cleaned
    return name


def cmd_submit(args: argparse.Namespace) -> int:
    from .progress import refused_everywhere, wait_with_progress

    if args.iterations is not None and args.iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {args.iterations}")
    workflow = validate_workflow(load_workflow(args.workflow), origin=args.workflow)
    for warning in surprises(workflow, args):
        print(f"warning: {warning}", file=sys.stderr)
    out = os.path.abspath(args.out) if args.out else None
    name = sequence_name(args) if out else None
    options = SubmitOptions(
        server=args.server, output_dir=out, sequence_name=name, base_seed=args.seed, overwrite=args.overwrite
    )
    dispatch: Dict[str, Any] = {}
    if args.timeout is not None and args.timeout < DEFAULT_WAIT_FOR_SERVERS_S:
        # with every server down, the dispatcher's own wait (and its message) follows --timeout
        dispatch["wait_for_servers"] = args.timeout
    with Cluster.from_environment(**dispatch) as cluster:
        loaded = cluster.pool.config_load
        if loaded is not None:
            print(loaded.notice, file=sys.stderr)
        earlier = cluster.find_unfinished(workflow, out, name) if args.resume else None
        if args.resume and earlier is None:
            print(
                "--resume: no unfinished batch of this workflow into this sequence: starting a new one", file=sys.stderr
            )
        if earlier is not None:
            batch = cluster.resume(earlier, {"server": args.server} if args.server else None)
            print(f"resuming batch {earlier[:8]}: {batch.message}", file=sys.stderr)
        elif args.frames is not None:
            batch = cluster.submit_frames(workflow, args.frames, options)
        elif args.iterations is not None:
            batch = cluster.submit_iterations(workflow, args.iterations, options.but(base_seed=args.seed or 0))
        else:
            batch = cluster.submit(workflow, options)
        stopped_by = ""
        code = 0
        shown: List[str] = []
        try:
            snap = wait_with_progress(batch, args.timeout, interval=args.progress_every, messages=shown)
            if not snap.finished:
                stopped_by = "timeout"
                print(f"timed out after {args.timeout:g} s: cancelling what is left", file=sys.stderr)
                snap = _cancel(cluster, batch)
        except Stopped as stop:
            stopped_by, code = "signal", stop.exit_code
            print(f"\n{stop.name}: cancelling our prompts (another signal exits at once)", file=sys.stderr)
            snap = _cancel(cluster, batch)
        _report(snap, args.json, stopped_by, shown[-1] if shown else "")
        if code:
            return code
        if refused_everywhere(snap):
            return 2
        return 0 if snap.ok else 1


def _cancel(cluster: Cluster, batch: Any) -> BatchSnapshot:
    cluster.cancel(batch)
    snap = batch.wait(CANCEL_WAIT)
    if not snap.finished:
        print(f"some servers did not confirm the cancel within {CANCEL_WAIT:g} s", file=sys.stderr)
    return snap


def _report(snap: BatchSnapshot, as_json: bool, stopped_by: str, last_message: str) -> None:
    from .progress import outcome, refused_everywhere, summary_table

    if as_json:
        counts = outcome(snap, stopped_by, last_message)
        print(
            json.dumps(
                {
                    "state": snap.state,
                    "makespan_s": snap.makespan,
                    "done": counts.done,
                    "failed": counts.failed,
                    "cancelled": counts.cancelled,
                    "not_started": counts.not_started,
                    "refused": refused_everywhere(snap),
                    "sequences": [
                        {"pattern": s.pattern, "label": s.label, "frames": list(s.frames), "existed": list(s.existed)}
                        for s in snap.sequences
                    ],
                    "left_out": dict(snap.left_out),
                    "jobs": [j.as_dict() for j in snap.jobs],
                },
                indent=2,
            )
        )
        return
    if refused_everywhere(snap):
        print("refused: every server rejected the workflow; nothing was rendered", file=sys.stderr)
    print(summary_table(snap, stopped_by, last_message))
