"""Command line of the simulator: ``python -m nuke_comfy_cluster.sim --port 8188``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from .node_defs import CHECKPOINTS, NODE_DEFS
from .nodes import Dirs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nuke_comfy_cluster.sim",
        description="A ComfyUI 0.3.39 protocol simulator (HTTP + websocket) for tests, demos and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=8188, help="port to listen on; 0 picks a free one (default 8188)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--speed", type=float, default=1.0, help="relative GPU speed: a prompt takes seconds/speed")
    parser.add_argument("--seconds", type=float, default=1.0, help="work of one prompt at speed 1 (default 1.0)")
    parser.add_argument("--jitter", type=float, default=0.0, help="time noise: x uniform(1-J, 1+J) (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="seed for jitter and preview names")
    parser.add_argument("--output-directory", default=None, help="where SaveImage writes (default: a temp dir)")
    parser.add_argument("--input-directory", default=None, help="where uploads go / LoadImage reads (default: temp)")
    parser.add_argument("--temp-directory", default=None, help="where PreviewImage writes (default: temp)")
    parser.add_argument("--name", default="", help="name shown in logs and /sim/info (default sim:<port>)")
    parser.add_argument("--device-name", default="Sim GPU", help="GPU name reported by /system_stats")
    parser.add_argument("--vram-gb", type=float, default=24.0, help="VRAM reported by /system_stats (default 24)")
    parser.add_argument("--cache-none", action="store_true", help="disable the output cache (resubmits rerun)")
    parser.add_argument("--preview-method", choices=("none", "auto"), default="none", help="auto: binary previews")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process goes away")
    parser.add_argument(
        "--require-token",
        default="",
        metavar="TOKEN",
        help='answer 401 unless a request carries "Authorization: Bearer TOKEN" (like a reverse proxy)',
    )
    parser.add_argument("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    cluster = parser.add_argument_group("how this server differs from others (heterogeneous clusters, model loads)")
    cluster.add_argument(
        "--without-nodes",
        default="",
        metavar="CLASS[,CLASS]",
        help="node classes this server lacks: absent from /object_info; a prompt using one answers 400 "
        "invalid_prompt 'Cannot execute because node CLASS does not exist.' (as ComfyUI without the custom node)",
    )
    cluster.add_argument(
        "--models",
        default=None,
        metavar="NAME[,NAME]",
        help="checkpoint names CheckpointLoaderSimple accepts (default: %s); others answer 400 value_not_in_list"
        % ",".join(CHECKPOINTS),
    )
    cluster.add_argument(
        "--fail-class",
        default="",
        metavar="CLASS",
        help="a node of this class fails when it runs, with a CUDA out-of-memory execution_error",
    )
    cluster.add_argument(
        "--load-seconds",
        type=float,
        default=0.0,
        metavar="L",
        help="a loader node (CheckpointLoaderSimple, UpscaleModelLoader) that actually runs, i.e. is not cached, "
        "takes L/speed seconds on top of the prompt's time (default 0)",
    )
    faults = parser.add_argument_group("faults (also settable at run time with POST /sim/fault)")
    faults.add_argument("--fail-next", type=int, default=0, metavar="N", help="next N requests answer 500")
    faults.add_argument("--hang", type=float, default=0.0, metavar="S", help="every request sleeps S s first")
    faults.add_argument("--latency", type=float, default=0.0, metavar="S", help="S s added to every response")
    faults.add_argument("--exit-mid-prompt", action="store_true", help="os._exit(1) when the next prompt starts")
    faults.add_argument("--malformed-json", type=int, default=0, metavar="N", help="next N JSON bodies truncated")
    faults.add_argument("--malformed-ws", type=int, default=0, metavar="N", help="next N ws messages garbled")
    return parser


def _names(parser: argparse.ArgumentParser, flag: str, text: str, known: bool) -> Tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if known and n not in NODE_DEFS]
    if unknown:
        parser.error(f"{flag}: unknown node class {', '.join(unknown)} (the simulator has: {', '.join(NODE_DEFS)})")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    without_nodes = _names(parser, "--without-nodes", args.without_nodes, known=True)
    fail_class = _names(parser, "--fail-class", args.fail_class, known=True)
    if len(fail_class) > 1:
        parser.error("--fail-class takes one node class")
    models = CHECKPOINTS if args.models is None else _names(parser, "--models", args.models, known=False)
    if args.load_seconds < 0:
        parser.error("--load-seconds must be >= 0")
    try:
        # Imported after parsing so --help works without aiohttp installed.
        from .server import SimSettings, serve
    except ImportError as ex:
        sys.stderr.write(f"the simulator needs aiohttp (pip install 'nuke_comfy_cluster[sim]'): {ex}\n")
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s [comfy-sim " + (args.name or str(os.getpid())) + "] %(levelname)s %(message)s",
    )
    owned: List[str] = []

    def folder(given: Optional[str], kind: str) -> str:
        if given:
            os.makedirs(given, exist_ok=True)
            return os.path.abspath(given)
        path = tempfile.mkdtemp(prefix=f"comfy-sim-{kind}-")
        owned.append(path)
        return path

    faults: Dict[str, Any] = {
        "fail_next": args.fail_next,
        "hang": args.hang,
        "latency": args.latency,
        "exit_mid_prompt": args.exit_mid_prompt,
        "malformed_json": args.malformed_json,
        "malformed_ws": args.malformed_ws,
    }
    try:
        dirs = Dirs(
            output=folder(args.output_directory, "output"),
            input=folder(args.input_directory, "input"),
            temp=folder(args.temp_directory, "temp"),
        )
        settings = SimSettings(
            dirs=dirs,
            host=args.host,
            port=args.port,
            speed=args.speed,
            seconds=args.seconds,
            jitter=args.jitter,
            seed=args.seed,
            name=args.name,
            device_name=args.device_name,
            vram_gb=args.vram_gb,
            cache=not args.cache_none,
            previews=args.preview_method == "auto",
            faults=faults,
            require_token=args.require_token,
            without_nodes=without_nodes,
            models=tuple(models),
            fail_class=fail_class[0] if fail_class else "",
            load_seconds=args.load_seconds,
        )
        asyncio.run(serve(settings, exit_with_parent=args.exit_with_parent))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as ex:
        logging.getLogger("nuke_comfy_cluster.sim").error("cannot start: %s", ex)
        return 1
    finally:
        # Folders we invented die with us; folders the caller named are theirs.
        for path in owned:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
