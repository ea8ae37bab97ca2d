"""Workflows and checks shared by the real-tier tests."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.sim.png import png_first_pixel

from .servers import RealServer


def tag_colour(tag: str) -> Tuple[int, int, int]:
    """What NccTestSampler paints for ``tag`` (same formula as custom_nodes/ncc_test_nodes.py)."""
    digest = hashlib.sha1(str(tag).encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


def unique(prefix: str) -> str:
    """A fresh model name: ComfyUI's cache persists between tests on the shared servers."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sampler_workflow(
    model: str, seconds: float = 0.6, load: float = 1.0, tag: str = "%04d", prefix: str = "ncc/f"
) -> Dict[str, Any]:
    """Loader stand-in -> sampler stand-in (colour from ``tag``, a frame token by default) -> SaveImage."""
    return {
        "1": {"class_type": "NccTestLoader", "inputs": {"model_name": model, "seconds": load}},
        "2": {
            "class_type": "NccTestSampler",
            "inputs": {"model": ["1", 0], "tag": tag, "seconds": seconds, "steps": 3, "width": 8, "height": 8},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def configs(servers: Sequence[RealServer], **kw: Any) -> List[ServerConfig]:
    return [ServerConfig(name=s.name, ip="127.0.0.1", port=s.port, priority=i, **kw) for i, s in enumerate(servers)]


def first_pixel(path: str) -> Tuple[int, int, int]:
    with open(path, "rb") as handle:
        pixel = png_first_pixel(handle.read())
    assert pixel is not None, f"{path} is not a PNG we can read"
    return pixel


def assert_sequence(out_dir: str, name: str, frames: Iterable[int], colour: Callable[[int], Tuple[int, int, int]]):
    """Exactly one file per frame, named name.####.png, each with the frame's colour."""
    frames = list(frames)
    files = sorted(f for f in os.listdir(out_dir) if f.startswith(name + "."))
    assert files == [f"{name}.{f:04d}.png" for f in frames], files
    for frame, file in zip(frames, files):
        assert first_pixel(os.path.join(out_dir, file)) == colour(frame), (file, colour(frame))


def executions(servers: Iterable[RealServer]) -> Dict[str, int]:
    """Our job id -> how many times a live server's /history shows it ran to success."""
    counts: Dict[str, int] = {}
    for server in servers:
        if not server.alive:
            continue
        for entry in server.get_json("/history").values():
            extra = entry["prompt"][3]
            if entry["status"]["status_str"] == "success" and "ncc_job" in extra:
                counts[extra["ncc_job"]] = counts.get(extra["ncc_job"], 0) + 1
    return counts


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def opt_makespan(frames: int, speeds: Sequence[float], frame_s: float, load_s: float) -> float:
    """The clairvoyant plan: each frame to the server finishing it first; a server's first frame
    pays the model load (the same formula as the design's OPT, with setups)."""
    finish = [0.0] * len(speeds)
    for _ in range(frames):
        ends = [
            finish[i] + frame_s / speed + (load_s / speed if finish[i] == 0.0 else 0.0)
            for i, speed in enumerate(speeds)
        ]
        best = min(range(len(speeds)), key=ends.__getitem__)
        finish[best] = ends[best]
    return max(finish)
