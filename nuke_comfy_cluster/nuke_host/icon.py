"""The toolbar icon: three linked servers, drawn as an RGBA PNG with the standard library.

The PNG in ``resources/`` is this function's output; keeping the drawing in code lets
the installer recreate it when the package was installed without the resources folder.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from typing import List, Tuple

ICON_NAME = "comfy_cluster.png"

_BACKGROUND = (38, 50, 64)
_LINK = (150, 170, 190)
_NODES = ((255, 166, 48), (80, 200, 170), (110, 150, 255))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rgba: List[Tuple[int, int, int, int]]) -> bytes:
    """An 8-bit RGBA PNG from ``width * height`` pixels, row by row."""
    if len(rgba) != width * height:
        raise ValueError(f"expected {width * height} pixels, got {len(rgba)}")
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type: none
        for r, g, b, a in rgba[y * width : (y + 1) * width]:
            raw += bytes((r, g, b, a))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def _segment_distance(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def icon_png(size: int = 24) -> bytes:
    """The icon at ``size`` x ``size`` pixels (anti-aliased by coverage)."""
    s = float(size)
    centres = ((s * 0.5, s * 0.27), (s * 0.26, s * 0.72), (s * 0.74, s * 0.72))
    radius = s * 0.15
    corner = s * 0.2
    pixels: List[Tuple[int, int, int, int]] = []
    for y in range(size):
        for x in range(size):
            px, py = x + 0.5, y + 0.5
            # rounded square: distance outside the inner rectangle
            qx = max(abs(px - s / 2) - (s / 2 - corner), 0.0)
            qy = max(abs(py - s / 2) - (s / 2 - corner), 0.0)
            inside = max(0.0, min(1.0, corner - math.hypot(qx, qy) + 0.5))
            colour = _BACKGROUND
            for i, (ax, ay) in enumerate(centres):
                bx, by = centres[(i + 1) % 3]
                if _segment_distance(px, py, ax, ay, bx, by) < s * 0.05:
                    colour = _LINK
            for (cx, cy), node_colour in zip(centres, _NODES):
                cover = max(0.0, min(1.0, radius - math.hypot(px - cx, py - cy) + 0.5))
                if cover > 0:
                    colour = tuple(int(round(c * (1 - cover) + n * cover)) for c, n in zip(colour, node_colour))  # type: ignore[assignment]
            pixels.append((colour[0], colour[1], colour[2], int(round(255 * inside))))
    return encode_png(size, size, pixels)


def resources_dir() -> str:
    """``resources/`` beside the package (a checkout, or the installed plugin folder)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(package), "resources")


def icon_path() -> str:
    """Absolute path of the icon, or "" when it is missing (Nuke then shows no icon)."""
    path = os.path.join(resources_dir(), ICON_NAME)
    return path.replace("\\", "/") if os.path.isfile(path) else ""


def write_icon(path: str, size: int = 24) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(icon_png(size))
    return path
