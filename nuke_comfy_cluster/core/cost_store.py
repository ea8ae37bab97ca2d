"""Learned server costs kept between sessions, per workflow signature and server identity.

A batch learns what a frame and a setup (model loads) cost on each server
(:class:`~.scheduler.ServerCosts`). Kept here, the next batch of the same
workflow, in this Nuke session or the next, starts from them instead of sending
a probe frame to every server. One JSON file in the user's state folder
(:func:`.state_dir.state_dir`)::

    {"version": 1,
     "workflows": {"<hash of the signature>": {
         "used": <time.time() of the last save>,
         "servers": {"<server name>": {"identity": "<url|device|vram|version>",
                                       "frame_s": 4.2, "frame_dev": 0.3, "samples": 12,
                                       "setup_s": 17.0, "setup_samples": 1, "updated": <time>}}}}}

* An entry counts only for the server it was measured on: a server whose
  identity (address, GPU, VRAM, ComfyUI version; :func:`server_identity`)
  differs from the stored one starts from nothing again.
* Entries older than ``max_age_days`` are ignored, and only the
  ``max_workflows`` most recently used workflows are kept.
* Writes are atomic (a temporary file in the same folder, flushed to disk, then
  renamed over the old one): a crash or a kill mid-write leaves the previous
  file whole. A file that cannot be read is set aside (``.bad``) and ignored.
* Failures to read or write are logged, never raised: the costs are a head start,
  the batch works without them.

Not thread-safe; the dispatch thread owns one store. Two sessions saving at the
same instant may lose one of their updates (the other one is kept whole).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .file_locks import fsync_folder
from .scheduler import ServerCosts
from .state_dir import state_dir

__all__ = ["CostStore", "server_identity", "FILE_NAME"]

log = logging.getLogger(__name__)

FILE_NAME = "scheduler_costs.json"
VERSION = 1
# Temporary files of a write that was killed are removed after this long.
_STALE_TMP_S = 3600.0


def server_identity(url: str, device_name: str = "", vram_total: int = 0, comfyui_version: str = "") -> str:
    """What must stay the same for a server's learned costs to still hold.

    From the server's URL and its ``/system_stats`` (first device's name and VRAM,
    ComfyUI version): another GPU, another box behind the same name, or an upgrade
    starts learning again. "" while the device is not known yet (``/system_stats``
    not answered): such a server is neither loaded nor saved.
    """
    if not device_name.strip() and not vram_total:
        return ""
    return "|".join((url.rstrip("/"), device_name.strip(), str(int(vram_total or 0)), comfyui_version.strip()))


def _key(signature: str) -> str:
    # The signature may be a whole workflow shape: keep the file small and free of it.
    return hashlib.sha256(signature.encode("utf-8")).hexdigest()[:24]


def _number(value: Any, minimum: float = 0.0) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= minimum else None


def _costs(entry: Any) -> Optional[ServerCosts]:
    """One stored server entry, or None when it is malformed."""
    if not isinstance(entry, dict):
        return None
    frame = _number(entry.get("frame_s"))
    if frame is None or frame <= 0.0:
        return None
    setup = entry.get("setup_s")
    setup_s = None if setup is None else _number(setup)
    if setup is not None and setup_s is None:
        return None
    samples = _number(entry.get("samples", 1), 1.0)
    setup_samples = _number(entry.get("setup_samples", 0))
    return ServerCosts(
        frame_s=frame,
        frame_dev=_number(entry.get("frame_dev", 0.0)) or 0.0,
        samples=int(samples or 1),
        setup_s=setup_s,
        setup_samples=int(setup_samples or 0),
    )


class CostStore:
    """Load and save :class:`~.scheduler.ServerCosts` per workflow and server (see the module docstring).

    ``path``: the file; default ``<state folder>/scheduler_costs.json``, resolved
    at first use (no work when the store is made). ``clock``: wall-clock time,
    for the age of entries.
    """

    def __init__(
        self,
        path: Optional[os.PathLike] = None,
        *,
        max_workflows: int = 64,
        max_age_days: float = 90.0,
        clock=time.time,
    ) -> None:
        if max_workflows < 1:
            raise ValueError("max_workflows must be >= 1")
        self._path = Path(path) if path is not None else None
        self._max_workflows = max_workflows
        self._max_age = max_age_days * 86400.0
        self._clock = clock

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = state_dir() / FILE_NAME
        return self._path

    # -- public -----------------------------------------------------------------------
    def load(self, signature: str, identities: Mapping[str, str]) -> Dict[str, ServerCosts]:
        """Costs stored for this workflow, for the servers given (name -> identity) that still match."""
        doc = self._read()
        flow = doc["workflows"].get(_key(signature))
        if not isinstance(flow, dict) or not isinstance(flow.get("servers"), dict):
            return {}
        now = self._clock()
        out: Dict[str, ServerCosts] = {}
        for name, identity in identities.items():
            if not identity:
                continue  # the device is not known yet: no way to tell it is the same server
            entry = flow["servers"].get(name)
            if not isinstance(entry, dict) or entry.get("identity") != identity:
                continue  # never measured there, or the server changed since
            updated = _number(entry.get("updated", now))
            if updated is None or now - updated > self._max_age:
                continue
            costs = _costs(entry)
            if costs is not None:
                out[name] = costs
        return out

    def save(self, signature: str, costs: Mapping[str, ServerCosts], identities: Mapping[str, str]) -> bool:
        """Merge these servers' costs into the file. Servers without an identity ("" or none) are skipped.

        Returns False (and logs why) when the file could not be written.
        """
        now = self._clock()
        doc = self._read()
        flows = doc["workflows"]
        flow = flows.get(_key(signature))
        if not isinstance(flow, dict) or not isinstance(flow.get("servers"), dict):
            flow = {"servers": {}}
        for name, c in costs.items():
            identity = identities.get(name)
            if not identity or _costs(_entry(c, identity, now)) is None:
                continue
            flow["servers"][name] = _entry(c, identity, now)
        flow["used"] = now
        flows[_key(signature)] = flow
        # Keep the most recently used workflows only.
        ranked = sorted(flows, key=lambda k: _used(flows[k]))
        for stale in ranked[: max(0, len(ranked) - self._max_workflows)]:
            del flows[stale]
        try:
            self._write(doc)
        except OSError as e:
            log.warning("could not save learned server costs to %s: %s", self.path, e)
            return False
        return True

    # -- file -------------------------------------------------------------------------
    def _read(self) -> Dict[str, Any]:
        empty: Dict[str, Any] = {"version": VERSION, "workflows": {}}
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return empty
        except OSError as e:
            log.warning("could not read learned server costs from %s: %s", self.path, e)
            return empty
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("workflows"), dict):
                raise ValueError("not a cost file")
        except ValueError as e:  # includes JSON and Unicode errors
            bad = self.path.with_name(self.path.name + ".bad")
            log.warning("ignoring unreadable learned server costs %s (%s); kept as %s", self.path, e, bad.name)
            with contextlib.suppress(OSError):
                os.replace(str(self.path), str(bad))
            return empty
        if doc.get("version") != VERSION:
            # Written by another release: start afresh (the next save replaces it).
            log.info(
                "learned server costs %s have version %r, not %d: not used", self.path, doc.get("version"), VERSION
            )
            return empty
        return doc

    def _write(self, doc: Dict[str, Any]) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep(folder)
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix="." + self.path.name + ".", suffix=".tmp", dir=str(folder))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, str(self.path))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_folder(folder)

    def _sweep(self, folder: Path) -> None:
        """Remove temporary files left by writes that were killed."""
        prefix = "." + self.path.name + "."
        now = time.time()
        with contextlib.suppress(OSError):
            for item in folder.iterdir():
                if item.name.startswith(prefix) and item.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - item.stat().st_mtime > _STALE_TMP_S:
                            item.unlink()


def _used(flow: Any) -> float:
    return (_number(flow.get("used", 0.0)) or 0.0) if isinstance(flow, dict) else 0.0


def _entry(c: ServerCosts, identity: str, now: float) -> Dict[str, Any]:
    return {
        "identity": identity,
        "frame_s": c.frame_s,
        "frame_dev": c.frame_dev,
        "samples": c.samples,
        "setup_s": c.setup_s,
        "setup_samples": c.setup_samples,
        "updated": now,
    }
