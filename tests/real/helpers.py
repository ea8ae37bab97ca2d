"""Workflows and checks shared by the real-tier tests."""

from __future__ import annotations

import hashlib
import os
import struct
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


def assert_sequence(
    out_dir: str,
    name: str,
    frames: Iterable[int],
    colour: Callable[[int], Tuple[int, int, int]],
    float32_rounding: bool = False,
):
    """Exactly one file per frame, named name.####.png, each with the frame's colour.

    ``float32_rounding``: ComfyUI's image nodes compute in float32 and SaveImage truncates,
    so after arithmetic (ImageInvert) a channel may come out 1 lower than the exact value."""
    frames = list(frames)
    files = sorted(f for f in os.listdir(out_dir) if f.startswith(name + "."))
    assert files == [f"{name}.{f:04d}.png" for f in frames], files
    slack = 1 if float32_rounding else 0
    for frame, file in zip(frames, files):
        got, want = first_pixel(os.path.join(out_dir, file)), colour(frame)
        assert all(0 <= w - g <= slack for g, w in zip(got, want)), (file, got, want)


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


def png_text(data: bytes) -> Dict[str, str]:
    """The tEXt chunks of a PNG (where SaveImage writes the prompt and extra_pnginfo)."""
    out: Dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out
