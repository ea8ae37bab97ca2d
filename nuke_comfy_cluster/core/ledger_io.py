"""Crash-safe file primitives for the batch ledger: atomic replace, complete-line reads, locks."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

from .file_locks import fsync_folder, locked_elsewhere, try_lock, unlock  # noqa: F401 - re-exported
from .ledger_records import LedgerError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not ID_PATTERN.match(batch_id):
        raise LedgerError(f"{batch_id!r} is not a batch id (letters, digits, - and _, at most 64)")
    return batch_id


def cause(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def _replace(src: str, dst: Path) -> None:
    # on Windows a reader holding the file open makes replace fail for a moment
    for attempt in range(20):
        try:
            os.replace(src, str(dst))
            return
        except PermissionError:
            if sys.platform != "win32" or attempt == 19:
                raise
            time.sleep(0.05)


def atomic_write(path: Path, chunks: Iterable[bytes]) -> int:
    """Temp file in the same folder, fsync, replace, fsync the folder; returns the bytes written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)
    return size


def read_lines(path: Path) -> Tuple[List[Any], int]:
    """Parsed complete lines (a line counts once its newline is written) and how many were unreadable."""
    with open(str(path), "rb") as fh:
        data = fh.read()
    end = data.rfind(b"\n")
    # a power cut may leave zeros where a line was
    lines = [line for line in (raw.strip(b"\x00 \r\t") for raw in data[: end + 1].split(b"\n")) if line]
    try:
        # one parse for the whole file is several times faster than one per line (100,000 frames)
        return json.loads(b"[" + b",".join(lines) + b"]"), 0
    except (ValueError, UnicodeDecodeError):
        pass
    out: List[Any] = []
    bad = 0
    for line in lines:
        try:
            out.append(json.loads(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return out, bad


# --------------------------------------------------------------------------- locks


def read_pid(path: Path) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text(encoding="ascii").strip()
        return int(text) if text else None
    return None


def release(fd: Optional[int]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        unlock(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
