"""Job outputs: read from ``/history`` or ``executed`` events, made local, delivered as sequences.

A server's output lands on a shared drive when its ``--output-directory`` lies under
its ``dir_remote``: then the file is read through ``dir_local``. Otherwise it is
downloaded through ``/view``. Names come from the server and are untrusted: every
local path is built with :func:`paths.safe_join`, which refuses to leave its folder.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from .delivery import SuspectResult, verify_file, write_staged
from .errors import ConfigError, MalformedResponse
from .jobs import OutputFile
from .paths import is_under, safe_join, to_local
from .server import ComfyUIServer


def outputs_from_node_output(node: str, output: Any) -> List[OutputFile]:
    """``{"images": [{filename, subfolder, type}, ...]}`` of one node -> OutputFile records."""
    files: List[OutputFile] = []
    if not isinstance(output, dict):
        return files
    for key in ("images", "gifs", "videos", "files"):
        items = output.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                continue
            kind = item.get("type") if isinstance(item.get("type"), str) else "output"
            if kind != "output":
                continue  # previews and temp files are not results
            sub = item.get("subfolder") if isinstance(item.get("subfolder"), str) else ""
            files.append(OutputFile(node=str(node), filename=item["filename"], subfolder=sub, type=kind))
    return files


def parse_history_entry(body: Any, prompt_id: str) -> Optional[Dict[str, Any]]:
    """``GET /history/{id}`` -> the entry for ``prompt_id``, or None when unknown (``{}``)."""
    if not isinstance(body, dict):
        raise MalformedResponse("history is not an object")
    entry = body.get(prompt_id)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise MalformedResponse("history entry is not an object")
    return entry


def history_outputs(entry: Dict[str, Any]) -> List[OutputFile]:
    outputs = entry.get("outputs")
    files: List[OutputFile] = []
    if isinstance(outputs, dict):
        for node in sorted(outputs, key=str):
            files.extend(outputs_from_node_output(node, outputs[node]))
    return files


def history_status(entry: Dict[str, Any]) -> str:
    """ "success", "error", or "" when the entry has no final status yet."""
    status = entry.get("status")
    if isinstance(status, dict) and isinstance(status.get("status_str"), str):
        return status["status_str"]
    return ""


def history_error(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The ``execution_error`` data recorded in a history entry's messages, if any."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, dict) else None
    if isinstance(messages, list):
        for item in messages:
            if isinstance(item, list) and len(item) == 2 and item[0] == "execution_error" and isinstance(item[1], dict):
                return item[1]
    return {}


def shared_output_dir(server: ComfyUIServer) -> Optional[str]:
    """The server's output folder as this machine sees it, or None (then download)."""
    if not server.dir_local or not server.dir_remote:
        return None
    try:
        remote = server.device_info().output_directory
    except Exception:  # noqa: BLE001 - unknown output dir just means: download
        return None
    if not remote or not is_under(remote, server.dir_remote):
        return None
    local = to_local(remote, server.dir_local, server.dir_remote)
    return local if os.path.isdir(local) else None


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ncc-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fetch_output(server: ComfyUIServer, out: OutputFile, download_dir: str) -> OutputFile:
    """Make one output local: through the shared drive, else by ``/view`` into ``download_dir``."""
    shared = shared_output_dir(server)
    if shared is not None:
        path = safe_join(shared, out.subfolder, out.filename)
        if os.path.isfile(path):
            return OutputFile(out.node, out.filename, out.subfolder, out.type, path)
    target = safe_join(download_dir, out.subfolder, out.filename)
    data = server.connection.get_bytes(
        "view", params={"filename": out.filename, "subfolder": out.subfolder, "type": out.type}
    )
    _write_atomic(target, data)
    return OutputFile(out.node, out.filename, out.subfolder, out.type, target)


def fetch_content(server: ComfyUIServer, out: OutputFile, prefer_shared: bool = True) -> Tuple[bytes, str, str]:
    """One output's bytes, its Content-Type ("" from a shared drive) and where it came from."""
    shared = shared_output_dir(server) if prefer_shared else None
    if shared is not None:
        path = safe_join(shared, out.subfolder, out.filename)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read(), "", path
    safe_join("/", out.subfolder, out.filename)  # refuse hostile names before asking for them
    data, ctype = server.connection.get_content(
        "view", params={"filename": out.filename, "subfolder": out.subfolder, "type": out.type}
    )
    return data, ctype, "/view"


def collect_attempt(
    server: ComfyUIServer, files: List[OutputFile], staging: str, digest: Optional[str], in_place: bool = False
) -> List[OutputFile]:
    """Fetch, check and stage every output of one attempt; returns them with ``local_path`` staged.

    ``in_place``: a checked file on the shared drive is left where the server wrote it
    (no sequence asked for: nothing to copy).

    A file on the shared drive that fails the check (another prompt wrote the same name)
    is fetched again through ``/view``, which reads the same name: still wrong, it raises
    :class:`~.delivery.SuspectResult` and nothing of the attempt is kept.
    """
    staged: List[OutputFile] = []
    for i, out in enumerate(files):
        data, ctype, source = fetch_content(server, out)
        try:
            verify_file(data, out.filename, ctype, digest)
        except SuspectResult:
            if source == "/view":
                raise
            data, ctype, source = fetch_content(server, out, prefer_shared=False)
            verify_file(data, out.filename, ctype, digest)
        if in_place and source != "/view":
            staged.append(OutputFile(out.node, out.filename, out.subfolder, out.type, source))
            continue
        path = write_staged(staging, out.filename, data, i)
        staged.append(OutputFile(out.node, out.filename, out.subfolder, out.type, path))
    return staged


def ensure_safe_name(name: str) -> str:
    """A sequence base name chosen by the user must be a plain file name."""
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise ConfigError(f"sequence name {name!r} must be a plain file name")
    return name
