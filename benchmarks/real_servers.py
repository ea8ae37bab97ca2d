"""Real ComfyUI 0.3.39 servers for the benchmarks' ``--real`` modes.

A thin layer over the test tier's harness (``tests/real/servers.py``: build once into
``.real-comfyui/``, start N servers on loopback ports, stop them by PID) so that a
benchmark runs the same scenario on real servers as on simulators. GPU work is the
test-only nodes' sleep (``tests/real/custom_nodes/ncc_test_nodes.py``): a loader that
sleeps ``load / speed`` once per distinct model (ComfyUI's own cache decides when)
and a sampler that sleeps ``seconds / speed`` per frame.

::

    with real_fleet([1.0, 0.5, 0.25]) as servers:
        cluster = Cluster.from_servers(server_configs(servers), ledger=False)
        cluster.submit_frames(real_workflow("model-a", seconds=1.0, load=4.0), range(1, 25))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from nuke_comfy_cluster.core.config import ServerConfig

#: Memory one real server holds once started (torch + ComfyUI's nodes), for the sizing note.
SERVER_MB = 850


class RealUnavailable(RuntimeError):
    """No ComfyUI source to build from, or the build failed: the message says which and what to do."""


def _harness():  # type: ignore[no-untyped-def]
    # imported late: the benchmarks must run (simulator mode) where tests/ is not shipped
    try:
        from tests.real import servers
    except ImportError as exc:
        raise RealUnavailable(
            f"--real needs the repository's tests/real harness ({exc}); run from the repo root"
        ) from exc
    return servers


def real_fleet_note() -> str:
    return "real ComfyUI 0.3.39 (CPU, GPU work emulated by tests/real/custom_nodes sleeping)"


@contextlib.contextmanager
def real_fleet(speeds: Sequence[float], prefix: str = "real") -> Iterator[List[Any]]:
    """Build (once) and start one real ComfyUI per speed; always stopped (by PID) on the way out."""
    harness = _harness()
    source = harness.source_available()
    given = os.environ.get("COMFYUI_SRC", "").strip()
    if source is None and given:
        raise RealUnavailable(f"COMFYUI_SRC={given} does not exist: give a ComfyUI 0.3.39 source folder or tarball")
    if source is None:
        raise RealUnavailable(
            "--real needs the ComfyUI 0.3.39 source: set COMFYUI_SRC to a source folder or tarball, "
            "or put ../shared/comfyui/ComfyUI-0.3.39.tar.gz beside the repository"
        )
    try:
        build = harness.build_comfyui()
    except RuntimeError as exc:
        raise RealUnavailable(f"building ComfyUI from {source} failed: {exc}") from exc
    started = time.monotonic()
    specs = [dict(name=f"{prefix}{i}", speed=float(s), checkpoints=["a.safetensors"]) for i, s in enumerate(speeds)]
    try:
        servers = harness.start_servers(build, specs)
    except RuntimeError as exc:
        raise RealUnavailable(f"starting {len(specs)} ComfyUI servers failed: {exc}") from exc
    print(
        f"[real] {len(servers)} ComfyUI servers up in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
    )
    try:
        yield servers
    finally:
        harness.stop_servers(servers)


@contextlib.contextmanager
def fresh_state_dir() -> Iterator[str]:
    """A temporary state folder (``NCC_STATE_DIR``) for the block: learned costs and ledgers of
    one measurement neither come from an earlier run nor end up in the user's own folder."""
    saved = os.environ.get("NCC_STATE_DIR")
    folder = tempfile.mkdtemp(prefix="ncc-bench-state-")
    os.environ["NCC_STATE_DIR"] = folder
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop("NCC_STATE_DIR", None)
        else:
            os.environ["NCC_STATE_DIR"] = saved
        shutil.rmtree(folder, ignore_errors=True)


def server_configs(servers: Sequence[Any]) -> List[ServerConfig]:
    """Cluster configs for real servers (or simulators), priority in list order as benchmarks.e2e has it."""
    return [
        ServerConfig(name=getattr(s, "name", None) or f"s{i}", ip="127.0.0.1", port=s.port, priority=i)
        for i, s in enumerate(servers)
    ]


def unique_model(prefix: str) -> str:
    """A model name no server has loaded yet (ComfyUI's cache outlives one scenario)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def real_workflow(model: str, seconds: float, load: float, prefix: str = "ncc_bench/f") -> Dict[str, Any]:
    """Loader stand-in (``load`` s per model switch) -> sampler stand-in (``seconds`` per frame,
    the frame token in its tag, so every frame is a distinct prompt) -> SaveImage."""
    return {
        "1": {"class_type": "NccTestLoader", "inputs": {"model_name": model, "seconds": float(load)}},
        "2": {
            "class_type": "NccTestSampler",
            "inputs": {
                "model": ["1", 0],
                "tag": "%04d",
                "seconds": float(seconds),
                "steps": 3,
                "width": 8,
                "height": 8,
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def split_idle(spans: Sequence[Tuple[float, float, Optional[float]]]) -> Dict[str, float]:
    """Where one server stood idle between two of our prompts, by cause.

    ``spans``: (execution start, end, when the client sent it) per prompt, in order, wall
    clock. Idle time after a prompt ends while the next one was already sent is the
    server's own pause (real ComfyUI runs ``gc.collect()`` at most every 10 s after a
    prompt: ~1 s on a loaded 2-core machine; the simulator pauses for nothing); idle time
    before the client sent the next one is the client's.
    """
    server = longest = client = 0.0
    for (_s0, end, _q0), (start, _e1, sent) in zip(spans, spans[1:]):
        idle = start - end
        if idle <= 0:
            continue
        ours = min(idle, max(0.0, (sent if sent is not None else end) - end))
        client += ours
        server += idle - ours
        longest = max(longest, idle - ours)
    return {"server_pause_s": round(server, 3), "longest_pause_s": round(longest, 3), "client_idle_s": round(client, 3)}
