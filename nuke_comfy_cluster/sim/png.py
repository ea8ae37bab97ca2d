"""A minimal PNG writer (zlib + struct) for the simulator's solid-colour images."""

from __future__ import annotations

import struct
import zlib
from typing import Optional, Tuple

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Longest side of a written image; larger requests are scaled down (aspect kept)
#: so a 16k request cannot make the simulator allocate gigabytes.
MAX_SIDE = 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def clamp_size(width: int, height: int, max_side: int = MAX_SIDE) -> Tuple[int, int]:
    width, height = max(1, int(width)), max(1, int(height))
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / float(longest)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def solid_png(width: int, height: int, rgb: Tuple[int, int, int], text: Optional[dict] = None) -> bytes:
    """Encode a solid ``rgb`` image of (clamped) ``width`` x ``height`` as PNG bytes.

    ``text`` entries become tEXt chunks, as ComfyUI stores the prompt in its PNGs.
    """
    width, height = clamp_size(width, height)
    r, g, b = (max(0, min(255, int(c))) for c in rgb)
    row = b"\x00" + bytes((r, g, b)) * width
    compressor = zlib.compressobj(6)
    parts = []
    # Rows are compressed in blocks so memory stays bounded by one block.
    block = row * 64
    full, rest = divmod(height, 64)
    for _ in range(full):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        out.append(_chunk(b"tEXt", key.encode("latin-1", "replace") + b"\x00" + value.encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", b"".join(parts)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def png_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a PNG header, or None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def png_first_pixel(data: bytes) -> Optional[Tuple[int, int, int]]:
    """RGB of the top-left pixel of an 8-bit PNG, or None when not readable.

    The first pixel of the first row is stored unfiltered whatever the row's
    filter type (every predictor is 0 there), so no filter decoding is needed.
    """
    if png_size(data) is None:
        return None
    bit_depth, colour_type = data[24], data[25]
    if bit_depth != 8 or colour_type not in (0, 2, 4, 6):
        return None
    pos, idat = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    try:
        head = zlib.decompressobj().decompress(b"".join(idat), 8)
    except zlib.error:
        return None
    if colour_type in (0, 4):
        if len(head) < 2:
            return None
        return head[1], head[1], head[1]
    if len(head) < 4:
        return None
    return head[1], head[2], head[3]
