"""Delivering results: each attempt's files are checked, then renamed into the sequence.

A result is identified by the job that made it, never by the file name a server
chose (every server numbers its own files from 1, so two servers both return
``ComfyUI_00001_.png``). Every attempt downloads into its own private staging
folder (:func:`staging_dir`, inside the output folder so that the final move is one
atomic rename on one filesystem), every file is checked (:func:`verify_file`:
not empty, not an HTML error page, magic bytes matching its extension, and for
PNGs the prompt ComfyUI embeds equal to the one this attempt sent), and only then
renamed into the sequence. Nothing is copied twice and nothing is left behind.

One sequence has one writer: :class:`SequenceLock` is a small file beside the
sequence naming the batch that writes it; a second batch into the same folder and
name is refused while the owner lives.

Names of the delivered sequences: the first saving node's first image is
``NAME.####.ext``; every other saving node gets ``NAME_<label>.####.ext`` (the
label from its ``filename_prefix`` or title), and images after the first of a
node (``batch_size`` > 1) get ``_b<k>``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .errors import ConfigError, MalformedResponse, WorkflowError
from .paths import safe_join

#: node classes that save files (beside any class whose name contains "Save")
SAVING_CLASSES = ("VHS_VideoCombine", "Image Save", "ImageSave")
#: name of the hidden folder that holds every batch's private staging folders
STAGING = ".ncc-staging"

_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".webp": (b"RIFF",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".exr": (b"\x76\x2f\x31\x01",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".bmp": (b"BM",),
}


class LocalWriteError(OSError):
    """Writing a result on this machine failed: a local fault, never the server's."""


class SuspectResult(MalformedResponse):
    """A downloaded file is not (provably) the render of the prompt this attempt sent.

    ``collision``: it is a render, of another prompt that wrote the same file name.
    """

    collision = False


# ------------------------------------------------------------------------- saving nodes
def is_saving_class(class_type: str) -> bool:
    return "save" in class_type.lower() or class_type in SAVING_CLASSES


def saving_nodes(workflow: Dict[str, Any]) -> List[str]:
    """Ids of the nodes that save files, in a stable order (numeric ids numerically)."""
    ids = [str(k) for k, v in workflow.items() if isinstance(v, dict) and is_saving_class(str(v.get("class_type", "")))]
    return sorted(ids, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))


def require_saving_node(workflow: Dict[str, Any]) -> None:
    """With an output folder, a workflow must save something, or there is nothing to deliver."""
    if saving_nodes(workflow):
        return
    kinds = sorted({str(v.get("class_type")) for v in workflow.values() if isinstance(v, dict)})
    raise WorkflowError(
        "the workflow saves no image, so nothing can be delivered to the output folder (its nodes: {}). "
        "Add a SaveImage node (PreviewImage results are not kept by ComfyUI).".format(", ".join(kinds))
    )


def _label_of(node_id: str, node: Dict[str, Any]) -> str:
    inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
    prefix = inputs.get("filename_prefix") if isinstance(inputs, dict) else None
    text = ""
    if isinstance(prefix, str) and prefix.strip():
        text = re.split(r"[/\\]", prefix.strip())[-1]
    if not text:
        meta = node.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            text = meta["title"]
    text = re.sub(r"%[^%]*%|#+|\{[^}]*\}|%0?\d*d", "", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    if not text or text == "comfyui":
        text = f"n{node_id}"
    return text


def sequence_labels(workflow: Dict[str, Any]) -> Dict[str, str]:
    """Saving node id -> the suffix its sequence gets ("" for the first saving node)."""
    ids = saving_nodes(workflow)
    labels: Dict[str, str] = {}
    used: Set[str] = set()
    for i, node_id in enumerate(ids):
        if i == 0:
            labels[node_id] = ""
            continue
        label = _label_of(node_id, workflow[node_id])
        if label in used:
            label = f"{label}_n{node_id}"
        used.add(label)
        labels[node_id] = label
    return labels


def stem_for(name: str, label: str, image_index: int, iteration: Optional[int]) -> str:
    stem = name if not label else f"{name}_{label}"
    if image_index:
        stem += f"_b{image_index}"
    if iteration is not None:
        stem += f"_i{iteration:03d}"
    return stem


def frame_file(folder: str, stem: str, frame: int, ext: str) -> str:
    return safe_join(folder, "", f"{stem}.{frame:04d}{ext}")


def pattern_for(folder: str, stem: str, ext: str) -> str:
    return os.path.join(folder, f"{stem}.####{ext}")


# ----------------------------------------------------------------------------- checking
def _png_text(data: bytes) -> Dict[str, str]:
    """tEXt / iTXt / zTXt chunks of a PNG (what ComfyUI's SaveImage writes the prompt into)."""
    out: Dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\x00")
                out[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\x00")
                out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\x00")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\x00")
                _tkey, _, text = rest.partition(b"\x00")
                out[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
            elif kind == b"IDAT" or kind == b"IEND":
                break  # ComfyUI writes its text before the image data
        except (ValueError, zlib.error, IndexError):
            continue
    return out


def prompt_digest(prompt: Dict[str, Any]) -> str:
    """What identifies a prompt's render: each node's class and inputs, canonical JSON, hashed.

    Only ``class_type`` and ``inputs`` count: ComfyUI adds keys of its own (``is_changed``
    for LoadImage) to the prompt it embeds, ``_meta`` titles change nothing rendered, and its
    validation stores converted values (``"7"`` sent to an INT input is embedded as ``7``).
    """
    core = {
        str(k): {"class_type": v.get("class_type"), "inputs": _normal(v.get("inputs"))} if isinstance(v, dict) else v
        for k, v in prompt.items()
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _normal(value: Any) -> Any:
    """Numbers as ComfyUI's validation stores them whatever we sent ("1", 1 and 1.0 alike)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def verify_file(data: bytes, filename: str, content_type: str = "", digest: Optional[str] = None) -> None:
    """Refuse what is not a render of the prompt with ``digest``: raises :class:`SuspectResult`."""
    if not data:
        raise SuspectResult(f"{filename}: the server sent an empty file")
    ctype = content_type.split(";")[0].strip().lower()
    head = data[:512].lstrip().lower()
    if ctype in ("text/html", "text/plain", "application/json") or head.startswith((b"<!doctype", b"<html")):
        raise SuspectResult(f"{filename}: the server sent {ctype or 'an HTML page'} instead of an image")
    ext = os.path.splitext(filename)[1].lower()
    magic = _MAGIC.get(ext)
    if magic is not None and not data.startswith(magic):
        raise SuspectResult(f"{filename}: the content is not a {ext[1:].upper()} file")
    if ext == ".png" and digest is not None:
        text = _png_text(data)
        embedded = text.get("prompt")
        if embedded is not None:
            try:
                theirs = prompt_digest(json.loads(embedded))
            except ValueError:
                theirs = ""
            if theirs != digest:
                raise _collision(
                    f"{filename}: the file holds the render of another prompt (another frame wrote the same "
                    "name); it is not delivered"
                )


def _collision(message: str) -> SuspectResult:
    error = SuspectResult(message)
    error.collision = True
    return error


# ----------------------------------------------------------------------------- staging
def staging_dir(output_dir: str, batch_id: str, job_id: str, token: str) -> str:
    """A private folder for one attempt's files, on the output folder's filesystem."""
    return os.path.join(output_dir, STAGING, batch_id[:12], f"{job_id[:12]}-{token[:8]}")


def write_staged(folder: str, filename: str, data: bytes, index: int = 0) -> str:
    """Write one downloaded file into an attempt's staging folder (the name made safe)."""
    name = "{:02d}_{}".format(index, os.path.basename(filename.replace("\\", "/")) or "output")
    path = safe_join(folder, "", name)
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise LocalWriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    return path


def copy_staged(folder: str, source: str) -> str:
    """A file on a shared drive, copied into the attempt's staging folder (the server owns its file)."""
    path = safe_join(folder, "", os.path.basename(source))
    try:
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(source, path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise LocalWriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    return path


def move_into_sequence(staged: str, target: str) -> None:
    """One atomic rename; a local failure is a :class:`LocalWriteError`."""
    try:
        os.replace(staged, target)
    except OSError as e:
        if e.errno == errno.EXDEV:  # staging on another filesystem (should not happen): copy, then rename
            tmp = target + ".ncc-part"
            try:
                shutil.copyfile(staged, tmp)
                os.replace(tmp, target)
                os.unlink(staged)
                return
            except OSError as e2:
                raise LocalWriteError(e2.errno, f"cannot write {target}: {e2.strerror or e2}") from e2
        raise LocalWriteError(e.errno, f"cannot write {target}: {e.strerror or e}") from e


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_staging(output_dir: str, batch_id: str) -> None:
    """Drop a batch's staging folders (and the shared parent when it is empty)."""
    root = os.path.join(output_dir, STAGING)
    remove_tree(os.path.join(root, batch_id[:12]))
    try:
        os.rmdir(root)
    except OSError:
        pass


# --------------------------------------------------------------------- output folder
def check_output_dir(folder: str) -> None:
    """The output folder exists or can be made, and we can write in it: else a ConfigError now."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"output folder {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ncc-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"cannot write into output folder {folder}: {e.strerror or e}") from e


def free_bytes(folder: str) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


_FRAME_FILE = r"^{stem}(?:_[A-Za-z0-9_]+)?\.(-?\d+)\.[A-Za-z0-9]+$"


def existing_frames(folder: str, name: str, frames: Iterable[int]) -> List[int]:
    """Frames of ``frames`` that already have a file of the sequence ``name`` (any suffix/extension)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    pattern = re.compile(_FRAME_FILE.format(stem=re.escape(name)))
    found: Set[int] = set()
    for n in names:
        m = pattern.match(n)
        if m:
            found.add(int(m.group(1)))
    if not found:
        return []
    return [f for f in frames if f in found]


def describe_frames(frames: List[int], limit: int = 6) -> str:
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


# ------------------------------------------------------------------------ the lock
@dataclass
class SequenceLock:
    """``.NAME.ncc-lock`` beside a sequence: the batch writing it, its host and pid.

    Stale when its process is gone (same host) or, from another host, when it has not
    been touched for :attr:`STALE_S` seconds (the owner touches it while it runs).
    """

    path: str
    batch_id: str
    STALE_S = 600.0

    @classmethod
    def acquire(cls, folder: str, name: str, batch_id: str, batch_name: str = "") -> SequenceLock:
        path = os.path.join(folder, f".{name}.ncc-lock")
        record = {
            "batch": batch_id,
            "name": batch_name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
        }
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = _read_lock(path)
                if other is not None and not _stale(path, other):
                    raise ConfigError(
                        "sequence {} in {} is being written by another batch ({}, pid {} on {}, since {}); "
                        "wait for it or choose another name (if that batch is gone, delete {})".format(
                            name,
                            folder,
                            other.get("name") or str(other.get("batch", "?"))[:8],
                            other.get("pid", "?"),
                            other.get("host", "?"),
                            time.strftime("%H:%M", time.localtime(float(other.get("since", 0) or 0))),
                            path,
                        )
                    ) from None
                try:
                    os.unlink(path)  # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise ConfigError(f"cannot create the lock {path}: {e.strerror or e}") from e
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            return cls(path, batch_id)
        raise ConfigError(f"could not take the lock {path}: another batch keeps taking it")

    def touch(self) -> None:
        try:
            os.utime(self.path)
        except OSError:
            pass

    def release(self) -> None:
        other = _read_lock(self.path)
        if other is not None and other.get("batch") != self.batch_id:
            return  # taken over as stale by someone else: not ours to remove
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _read_lock(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: judged by its age


def _stale(path: str, record: Dict[str, Any]) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return True
    pid = record.get("pid")
    # a pid no process can have (a damaged or hand-edited lock) tells nothing: judged by its age
    valid = isinstance(pid, int) and 0 < pid < 2**31
    if os.name != "nt" and record.get("host") == socket.gethostname() and valid:
        return not _alive(pid)
    return age > SequenceLock.STALE_S


def _alive(pid: int) -> bool:
    # not used on Windows: os.kill(pid, 0) sends Ctrl-C there (the lock's age decides instead)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def sequence_key(node: str, image_index: int) -> Tuple[str, int]:
    return (node, image_index)
