"""Path mapping between a workstation and a server, and safe joins for server-given names.

The same shared drive is often mounted under different paths: ``Z:\\proj`` or
``\\\\nas\\proj`` on a Windows workstation, ``/mnt/proj`` on the GPU box.
:func:`to_remote` / :func:`to_local` swap one prefix for the other.

Mapping rules:

- ``\\`` and ``/`` are both separators; repeated and trailing separators and
  ``.`` components are ignored; ``..`` is resolved lexically before comparing.
- A prefix with a drive letter (``C:``) or a UNC share (``\\\\server\\share``)
  compares case-insensitively (Windows); any other prefix case-sensitively.
- The result is written with the separator style of the target prefix and
  keeps the spelling of the target prefix and of the part below it.
- A path not under the source prefix (or an empty prefix) comes back unchanged.

:func:`safe_join` is for names that come from a server (``/history`` outputs):
they are untrusted and must never escape the output folder.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import List, NamedTuple, Optional, Tuple

from .errors import ServerRejected

_SEPARATORS = re.compile(r"[\\/]+")
_UNC = re.compile(r"^[\\/]{2}(?![\\/])([^\\/]+)")
_DRIVE = re.compile(r"^([A-Za-z]):")


class _Parsed(NamedTuple):
    kind: str  # "unc" | "drive" | "root" | "relative"
    anchor: Tuple[str, ...]  # ("server",) | ("C:",) | () | ()
    parts: Tuple[str, ...]

    @property
    def windows(self) -> bool:
        return self.kind in ("unc", "drive")


def _parse(path: str) -> _Parsed:
    unc = _UNC.match(path)
    drive = _DRIVE.match(path)
    if unc:
        # the share is kept as the first component so one rule compares everything below the server
        kind: str = "unc"
        anchor: Tuple[str, ...] = (unc.group(1),)
        rest = path[unc.end(1) :]
    elif drive:
        # "Z:" alone means the drive's root here: nobody maps a drive-relative path
        kind, anchor, rest = "drive", (path[:2],), path[2:]
    elif path[:1] in ("\\", "/"):
        kind, anchor, rest = "root", (), path
    else:
        kind, anchor, rest = "relative", (), path
    absolute = kind != "relative"
    parts: List[str] = []
    for part in _SEPARATORS.split(rest):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append(part)
            # ".." above an absolute root stays at the root, as the OS does
            continue
        parts.append(part)
    return _Parsed(kind, anchor, tuple(parts))


def _key(parsed: _Parsed) -> Tuple[str, Tuple[str, ...], Tuple[str, ...]]:
    if parsed.windows:
        return parsed.kind, tuple(a.casefold() for a in parsed.anchor), tuple(p.casefold() for p in parsed.parts)
    return parsed.kind, parsed.anchor, parsed.parts


def _separator_of(path: str) -> str:
    """The separator a path is written with: the first one it uses; ``\\`` for a bare drive."""
    for ch in path:
        if ch in ("\\", "/"):
            return ch
    return "\\" if _DRIVE.match(path) else "/"


def _format(parsed: _Parsed, parts: Tuple[str, ...], sep: str) -> str:
    body = sep.join(parts)
    if parsed.kind == "unc":
        return sep * 2 + parsed.anchor[0] + (sep + body if body else "")
    if parsed.kind == "drive":
        return parsed.anchor[0] + sep + body
    if parsed.kind == "root":
        return sep + body
    return body if body else "."


def normalize(path: str, sep: Optional[str] = None) -> str:
    """``path`` with one separator style (its own first one by default), no ``.``/``..``, no trailing separator."""
    parsed = _parse(path)
    return _format(parsed, parsed.parts, sep or _separator_of(path))


def _relative_parts(path: str, prefix: str) -> Optional[Tuple[str, ...]]:
    """The components of ``path`` below ``prefix`` (original spelling), or None when it is not under it."""
    if not path or not prefix:
        return None
    p, base = _parse(path), _parse(prefix)
    pk, bk = _key(p), _key(base)
    if pk[0] != bk[0] or pk[1] != bk[1]:
        return None
    n = len(bk[2])
    if pk[2][:n] != bk[2]:
        return None
    return p.parts[n:]


def is_under(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` itself or inside it (see the module rules)."""
    return _relative_parts(path, prefix) is not None


def _map(path: str, source: str, target: str) -> str:
    if not target:
        return path
    rest = _relative_parts(path, source)
    if rest is None:
        return path
    dest = _parse(target)
    return _format(dest, dest.parts + rest, _separator_of(target))


def to_remote(local_path: str, dir_local: str, dir_remote: str) -> str:
    """Map a workstation path to the server's view of it; unchanged when not under ``dir_local``."""
    return _map(local_path, dir_local, dir_remote)


def to_local(remote_path: str, dir_local: str, dir_remote: str) -> str:
    """Map a server path to the workstation's view of it; unchanged when not under ``dir_remote``."""
    return _map(remote_path, dir_remote, dir_local)


# --------------------------------------------------------------------------- untrusted names

# Opening any of these (with any extension) on Windows reaches a device, not a file.
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)]
    + [f"LPT{i}" for i in range(10)]
    + ["COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"]
)
_MAX_NAME = 255


def _unsafe(what: str, value: object, why: str) -> ServerRejected:
    return ServerRejected(f"The server sent an unsafe {what} {value!r}: {why}", body=value)


def _check_name(part: str, what: str, value: object) -> None:
    if not part:
        raise _unsafe(what, value, "empty name")
    for ch in part:
        if unicodedata.category(ch) == "Cc":
            raise _unsafe(what, value, "control character")
        if "\ud800" <= ch <= "\udfff":
            raise _unsafe(what, value, "not valid Unicode")
    if ":" in part:
        # drive letters ("C:x") and NTFS streams ("a.png:x")
        raise _unsafe(what, value, "':' is not allowed")
    if part.strip(" .") == "":
        # ".", ".." and, because Windows drops trailing dots and spaces, "..." or ". ."
        raise _unsafe(what, value, "'.' or '..' is not allowed")
    if len(part) > _MAX_NAME:
        raise _unsafe(what, value, f"name longer than {_MAX_NAME} characters")
    if part.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        raise _unsafe(what, value, "reserved device name on Windows")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normcase(path), os.path.normcase(folder)
    if path == folder:
        return False
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def safe_join(folder: str, subfolder: Optional[str], filename: str) -> str:
    """Join a server-given ``subfolder`` (may be empty or nested ``a/b``) and ``filename`` under ``folder``.

    Raises :class:`~nuke_comfy_cluster.core.errors.ServerRejected` for anything
    that could land outside ``folder``: ``..``, absolute paths, drive letters,
    UNC, NUL or control characters, empty names, Windows device names, or a
    symlink inside ``folder`` that leads out of it. Other Unicode is allowed.
    """
    if not isinstance(filename, str):
        raise _unsafe("file name", filename, "not text")
    if subfolder is None:
        subfolder = ""
    if not isinstance(subfolder, str):
        raise _unsafe("subfolder", subfolder, "not text")
    parts: List[str] = []
    if subfolder:
        if subfolder[0] in ("\\", "/"):
            raise _unsafe("subfolder", subfolder, "absolute path")
        for part in _SEPARATORS.split(subfolder):
            if part == "":
                continue  # "a/" or "a//b"
            _check_name(part, "subfolder", subfolder)
            parts.append(part)
    if _SEPARATORS.search(filename):
        raise _unsafe("file name", filename, "contains a path separator")
    _check_name(filename, "file name", filename)

    path = os.path.join(folder, *parts, filename)
    if not _inside(os.path.realpath(path), os.path.realpath(folder)):
        raise _unsafe(
            "file name", os.path.join(subfolder, filename) if subfolder else filename, "leads outside the output folder"
        )
    return path


def frame_sequence_path(folder: str, name: str, ext: str, padding: int = 4) -> str:
    """``folder/name.####.ext`` as Nuke writes a frame sequence, always with forward slashes.

    Nuke accepts forward slashes on every platform (``\\\\server\\share`` becomes
    ``//server/share``). ``ext`` may be given with or without its dot.
    """
    if padding < 1:
        raise ValueError(f"padding must be at least 1, got {padding}")
    ext = ext.lstrip(".")
    base = "{}.{}".format(name, "#" * padding) + (f".{ext}" if ext else "")
    if not folder:
        return base
    forward = folder.replace("\\", "/")
    stripped = forward.rstrip("/")
    if not stripped:
        return "/" + base
    return stripped + "/" + base


__all__ = ["frame_sequence_path", "is_under", "normalize", "safe_join", "to_local", "to_remote"]
