"""The node's inputs as files a ComfyUI server can load.

On the main thread, :func:`render_inputs` writes each connected input to PNG frames
with a temporary Write node (at full resolution, one view), into a run folder on the shared drive
(``<dir_local>/input/nuke_comfy_cluster/...``) when one is configured, else into the
temp folder. The workflow's LoadImage inputs then hold those local paths with a
``####`` frame token, which the core replaces per frame.

At dispatch time, on a dispatcher worker, :class:`InputMapper` (the batch's
``prepare``) points each LoadImage at what the chosen server can read: the same
file through ``dir_remote`` when the server shares the drive, a copy under its own
share when it mounts another one, or an upload through ``/upload/image``.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.paths import is_under, to_remote
from ..core.templating import has_frame_token
from .node import parent_group

log = logging.getLogger(__name__)

INPUT_SUBFOLDER = "nuke_comfy_cluster"
FILE_TYPE = "png"


def _shares_drive(server: Any) -> bool:
    return bool(server.dir_local and server.dir_remote and os.path.isdir(server.dir_local))


def stage_root(servers: Sequence[Any], pinned: Optional[str]) -> str:
    """Where inputs are rendered: the shared input folder of the pinned (or preferred) server, else temp."""
    candidates = (
        [s for s in servers if s.name == pinned]
        if pinned
        else sorted((s for s in servers if s.enabled), key=lambda s: s.priority)
    )
    for server in candidates:
        if _shares_drive(server):
            root = os.path.join(server.dir_local, "input", INPUT_SUBFOLDER)
            if not has_frame_token(root):  # a '#' in the share would be read as a frame number
                return root
    return os.path.join(tempfile.gettempdir(), INPUT_SUBFOLDER, "inputs")


def new_run_dir(root: str, tag: str) -> str:
    """A fresh folder for one run's inputs (unique even for two runs in the same second)."""
    name = "{}_{}_{}".format(tag, time.strftime("%Y%m%d-%H%M%S"), uuid.uuid4().hex[:6])
    return os.path.join(root, name)


def input_pattern(run_dir: str, input_name: str) -> str:
    """``<run_dir>/<input>.####.png`` with forward slashes, as Nuke's Write wants on every OS."""
    return "{}/{}.####.{}".format(run_dir.replace("\\", "/").rstrip("/"), input_name, FILE_TYPE)


def render_inputs(
    group: Any, pairs: Sequence[Tuple[int, str]], input_names: Sequence[str], first: int, last: int, run_dir: str
) -> Dict[str, str]:
    """Render the group's inputs for ``first``..``last`` on the main thread.

    Returns ``{LoadImage node id: local pattern with ####}``. Each input is
    rendered once even when it feeds several LoadImage nodes. The Write lives
    beside ``group`` (its inputs' node graph, whichever Group that is); it renders
    at full resolution even in proxy mode (a Write renders at the script's current
    scale) and only the script's first view (it would render every view into
    the same files otherwise).
    """
    import nuke

    os.makedirs(run_dir, exist_ok=True)
    rendered: Dict[int, str] = {}
    result: Dict[str, str] = {}
    where = parent_group(group)
    view = nuke.views()[0]
    proxy = nuke.root()["proxy"]
    was_proxy = bool(proxy.value())
    if was_proxy:
        proxy.setValue(False)
    try:
        for index, node_id in pairs:
            if index not in rendered:
                rendered[index] = _render_one(
                    nuke, where, group.input(index), input_names[index], run_dir, view, first, last
                )
            result[node_id] = rendered[index]
    finally:
        if was_proxy:
            proxy.setValue(True)
    return result


def _render_one(
    nuke: Any, where: Any, upstream: Any, input_name: str, run_dir: str, view: str, first: int, last: int
) -> str:
    pattern = input_pattern(run_dir, input_name)
    with where:
        write = nuke.nodes.Write(file=pattern, file_type=FILE_TYPE, datatype="8 bit")
    try:
        write["channels"].setValue("rgba" if "rgba.alpha" in upstream.channels() else "rgb")
        if not write.setInput(0, upstream):
            raise RuntimeError(f"cannot connect {upstream.name()} to the Write that renders input {input_name}")
        nuke.execute(write, first, last, 1, [view])
    finally:
        nuke.delete(write)
    return pattern


def apply_inputs(workflow: Dict[str, Any], images: Dict[str, str]) -> Dict[str, Any]:
    """A copy of the workflow whose mapped LoadImage nodes read the rendered frames."""
    out = copy.deepcopy(workflow)
    for node_id, pattern in images.items():
        out[node_id]["inputs"]["image"] = pattern
    return out


class InputMapper:
    """The batch's ``prepare(prompt, server)``: makes rendered inputs readable by that server.

    Called on dispatcher workers, possibly several at once and again for a job
    that fails over: uploads and copies are cached per server and file.
    """

    def __init__(self, node_ids: Sequence[str], tag: str) -> None:
        self.node_ids = list(node_ids)
        self.tag = tag
        self._lock = threading.Lock()
        self._done: Dict[Tuple[str, str], str] = {}
        self.uploads: List[Tuple[str, str]] = []  # (server, name on the server)
        self.copies: List[str] = []  # files we wrote under another server's share

    def __call__(self, prompt: Dict[str, Any], server: Any) -> Dict[str, Any]:
        out = dict(prompt)  # the job keeps its local paths for a later failover
        for node_id in self.node_ids:
            node = dict(out[node_id])
            inputs = dict(node.get("inputs", {}))
            inputs["image"] = self.for_server(str(inputs["image"]), server)
            node["inputs"] = inputs
            out[node_id] = node
        return out

    def for_server(self, local: str, server: Any) -> str:
        key = (server.name, local)
        with self._lock:
            known = self._done.get(key)
        if known is not None:
            return known
        if _shares_drive(server):
            path = local if is_under(local, server.dir_local) else self._copy_into_share(local, server)
            value = to_remote(path, server.dir_local, server.dir_remote)
        else:
            value = self._upload(local, server)
        with self._lock:
            self._done[key] = value
        return value

    def _copy_into_share(self, local: str, server: Any) -> str:
        target = os.path.join(server.dir_local, "input", INPUT_SUBFOLDER, self.tag, os.path.basename(local))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".ncc-part"
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        with self._lock:
            self.copies.append(target)
        return target

    def _upload(self, local: str, server: Any) -> str:
        with open(local, "rb") as f:
            data = f.read()
        subfolder = f"{INPUT_SUBFOLDER}/{self.tag}"
        answer = server.connection.upload_image(os.path.basename(local), data, subfolder=subfolder, image_type="input")
        name = str(answer["name"])
        sub = str(answer.get("subfolder") or "")
        value = "{}/{}".format(sub.replace("\\", "/").rstrip("/"), name) if sub else name
        with self._lock:
            self.uploads.append((server.name, value))
        return value


def remove_run_files(run_dir: Optional[str], copies: Sequence[str] = ()) -> None:
    """Remove a run's rendered inputs and our copies (uploads stay: ComfyUI has no delete route)."""
    paths = ([run_dir] if run_dir else []) + sorted({os.path.dirname(p) for p in copies})
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
