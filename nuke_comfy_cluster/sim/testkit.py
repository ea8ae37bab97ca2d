"""Helpers for tests that talk to a simulator (or a real ComfyUI): captures, workflows, websockets.

``protocol_dir()`` finds ``shared/comfyui-protocol`` (env ``COMFYUI_PROTOCOL_DIR``
first, then beside the repository); :class:`WsRecorder` keeps every message a
websocket receives so a test can wait for one and then look at the order.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import websocket

_colours = itertools.count(0x101010, 7919)


def protocol_dir() -> Optional[Path]:
    """The ComfyUI protocol captures folder, or None when it is not available."""
    env = os.environ.get("COMFYUI_PROTOCOL_DIR")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "comfyui-protocol", repo / "shared" / "comfyui-protocol"]
    for path in candidates:
        if (path / "captures").is_dir():
            return path
    return None


def _require_dir(base: Optional[Path] = None) -> Path:
    path = base or protocol_dir()
    if path is None:
        raise FileNotFoundError("shared/comfyui-protocol not found (set COMFYUI_PROTOCOL_DIR)")
    return path


def load_capture(name: str, base: Optional[Path] = None) -> Any:
    """A capture file: ``.json`` parsed, ``.jsonl`` as a list of parsed lines."""
    path = _require_dir(base) / "captures" / name
    text = path.read_text(encoding="utf-8")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def capture_messages(name: str, base: Optional[Path] = None) -> List[Dict[str, Any]]:
    """The websocket messages (``{"type", "data"}``) of a ``ws_*.jsonl`` transcript, in order."""
    return [line["msg"] for line in load_capture(name, base) if "msg" in line]


def load_workflow(name: str, colour: Optional[int] = None, base: Optional[Path] = None) -> Dict[str, Any]:
    """A workflow from ``workflows/``; ``colour`` (default: a fresh one) defeats ComfyUI's cache."""
    path = _require_dir(base) / "workflows" / (name if name.endswith(".json") else name + ".json")
    prompt = json.loads(path.read_text(encoding="utf-8"))
    return uncached(prompt, colour)


def uncached(prompt: Dict[str, Any], colour: Optional[int] = None) -> Dict[str, Any]:
    """A copy of ``prompt`` whose EmptyImage colours are new, so it cannot hit the cache."""
    prompt = copy.deepcopy(prompt)
    value = next(_colours) % 0xFFFFFF if colour is None else colour
    for node in prompt.values():
        if node.get("class_type") == "EmptyImage" and isinstance(node.get("inputs", {}).get("color"), int):
            node["inputs"]["color"] = value
    return prompt


def shape_of(value: Any) -> Any:
    """The structure of a JSON value: dict keys and value kinds, lists by their first item."""
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "str"


def key_shape(value: Any) -> Any:
    """Like :func:`shape_of` but only the dict key sets, recursively (values' kinds ignored)."""
    if isinstance(value, dict):
        return {key: key_shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        return [key_shape(value[0])]
    return "*"


class WsRecorder:
    """A websocket-client connection read by a background thread into ``messages``.

    Binary frames are kept as ``{"type": "<binary>", "data": bytes}``; a message
    that is not JSON as ``{"type": "<garbage>", "data": text}``.
    """

    def __init__(self, url: str, client_id: Optional[str] = None, timeout: float = 5.0) -> None:
        self.client_id = client_id
        full = url if client_id is None else f"{url}?clientId={client_id}"
        self.conn = websocket.create_connection(full, timeout=timeout)
        self.messages: List[Dict[str, Any]] = []
        self.closed = False
        self.error: Optional[BaseException] = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="WsRecorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.conn.settimeout(0.2)
        while True:
            try:
                opcode, data = self.conn.recv_data()
            except websocket.WebSocketTimeoutException:
                if self.closed:
                    return
                continue
            except BaseException as ex:  # noqa: BLE001 - the connection is gone: record why
                with self._cond:
                    self.error = ex
                    self.closed = True
                    self._cond.notify_all()
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                with self._cond:
                    self.closed = True
                    self._cond.notify_all()
                return
            if opcode == websocket.ABNF.OPCODE_BINARY:
                message: Dict[str, Any] = {"type": "<binary>", "data": data}
            else:
                text = data.decode("utf-8", "replace")
                try:
                    message = json.loads(text)
                except ValueError:
                    message = {"type": "<garbage>", "data": text}
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float = 10.0) -> Dict[str, Any]:
        """The first message (already received or coming) matching ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = 0
            while True:
                while index < len(self.messages):
                    if predicate(self.messages[index]):
                        return self.messages[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.closed and index >= len(self.messages)):
                    raise AssertionError(
                        f"no matching websocket message in {timeout}s (closed={self.closed}); got {self.types()}"
                    )
                self._cond.wait(remaining)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self.closed

    def wait_done(self, prompt_id: str, timeout: float = 10.0) -> Dict[str, Any]:
        """Wait for the final ``executing {node: null}`` of ``prompt_id``."""
        return self.wait_for(
            lambda m: (
                m.get("type") == "executing"
                and m["data"].get("node") is None
                and m["data"].get("prompt_id") == prompt_id
            ),
            timeout,
        )

    def types(self) -> List[str]:
        with self._cond:
            return [m.get("type", "?") for m in self.messages]

    def snapshot(self) -> List[Dict[str, Any]]:
        with self._cond:
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close(timeout=1)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._thread.join(timeout=2)

    def __enter__(self) -> WsRecorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_idle(url: str, timeout: float = 10.0) -> None:
    """Poll ``GET /prompt`` until the server's queue is empty."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url + "/prompt", timeout=2) as response:
            remaining = json.loads(response.read())["exec_info"]["queue_remaining"]
        if remaining == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still has {remaining} prompt(s) after {timeout}s")
        time.sleep(0.05)
