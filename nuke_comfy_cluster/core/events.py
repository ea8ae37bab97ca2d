"""Typed websocket events: an enum plus one small immutable record, routed by prompt_id.

ComfyUI sends JSON text frames ``{"type": ..., "data": {...}}`` (and binary preview
frames, which we ignore). :func:`parse_message` never raises: anything it cannot
read becomes ``None`` so a malformed frame cannot kill a socket thread.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


class EventType(str, enum.Enum):
    STATUS = "status"
    EXECUTION_START = "execution_start"
    EXECUTION_CACHED = "execution_cached"
    EXECUTING = "executing"
    PROGRESS = "progress"
    EXECUTED = "executed"
    EXECUTION_SUCCESS = "execution_success"
    EXECUTION_ERROR = "execution_error"
    EXECUTION_INTERRUPTED = "execution_interrupted"
    # emitted by our socket layer, not by ComfyUI
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


_COMFY_TYPES = {t.value: t for t in EventType}


@dataclass(frozen=True)
class ServerEvent:
    """One event from one server. ``data`` is the message's ``data`` object as sent."""

    type: EventType
    server: str
    at: float
    prompt_id: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def queue_remaining(self) -> Optional[int]:
        """For STATUS: running + pending on the server, as it broadcast it."""
        if self.type is not EventType.STATUS:
            return None
        try:
            value = self.data["status"]["exec_info"]["queue_remaining"]
        except (KeyError, TypeError):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return value

    @property
    def node(self) -> Optional[str]:
        value = self.data.get("node") if self.type is not EventType.EXECUTION_ERROR else self.data.get("node_id")
        return None if value is None else str(value)

    @property
    def is_final(self) -> bool:
        """The prompt is over (success, error or interrupted)."""
        return self.type in (EventType.EXECUTION_SUCCESS, EventType.EXECUTION_ERROR, EventType.EXECUTION_INTERRUPTED)


def parse_message(server: str, text: Any, at: float) -> Optional[ServerEvent]:
    """Turn one websocket text frame into an event, or None if it is not one we use."""
    if isinstance(text, (bytes, bytearray)):
        return None  # binary preview frames
    if not isinstance(text, str):
        return None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    raw_type = message.get("type")
    kind = _COMFY_TYPES.get(raw_type) if isinstance(raw_type, str) else None  # a list is unhashable
    if kind is None or kind in (EventType.CONNECTED, EventType.DISCONNECTED):
        return None
    data = message.get("data")
    if not isinstance(data, dict):
        data = {}
    prompt_id = data.get("prompt_id")
    if not isinstance(prompt_id, str):
        prompt_id = None
    return ServerEvent(type=kind, server=server, at=at, prompt_id=prompt_id, data=data)
