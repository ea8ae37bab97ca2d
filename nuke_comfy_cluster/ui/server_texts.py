"""What the server table says about a server: state, why it is not used, ages, sizes, GPU names.

Plain text from :class:`~nuke_comfy_cluster.core.state.ServerSnapshot` objects (no Qt
here), so the panel, its tooltips and tests share one wording.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Pattern, Tuple

from ..core.state import ServerSnapshot, ServerStatus

#: colours by status; COOLING is for a reachable server skipped after failures
STATUS_COLOURS: Dict[str, str] = {
    ServerStatus.ONLINE.value: "#3aa655",
    ServerStatus.BUSY.value: "#e0a100",
    ServerStatus.OFFLINE.value: "#d64541",
    ServerStatus.ERROR.value: "#c2185b",
    ServerStatus.DISABLED.value: "#8c8c8c",
    ServerStatus.UNKNOWN.value: "#a0a0a0",
    "cooling": "#e67e22",
}


def status_word(server: ServerSnapshot, now: float) -> str:
    """The word shown in the status column."""
    if server.enabled and server.cooling_down(now):
        return "cooling down"
    return server.status.value


#: what the status cell says for the messages core puts in ``last_error`` (first match wins)
_ERROR_SHORT: Tuple[Tuple[Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), text)
    for pattern, text in (
        (r"\bDNS\b|no such host|name or service not known|nodename nor servname", "DNS: no such host"),
        (r"no connection to .* within (\d+) s", r"offline: no connection in \1 s"),
        (r"no complete answer", "offline: answer cut short"),
        (r"no answer from .* within (\d+) s", r"offline: no answer in \1 s"),
        (r"\bTLS\b|\bSSL\b|certificate", "offline: TLS error"),
        (r"answered HTTP (40[137])", r"error: HTTP \1, credentials refused"),
        (r"answered HTTP (\d+)", r"error: HTTP \1"),
        (r"refused", "offline: connection refused"),
        (r"the same server as (\S+?):", r"not used: same server as \1"),
    )
)


def short_reason(server: ServerSnapshot) -> str:
    """``offline: connection refused``, ``DNS: no such host``...: the state and its cause, short."""
    text = server.last_error or ""
    for pattern, short in _ERROR_SHORT:
        match = pattern.search(text)
        if match:
            return match.expand(short)
    state = server.status.value
    if not text:
        return state
    # core messages start with the server's name and name the URL: the row shows both already
    text = text[len(server.name) + 2 :] if text.startswith(server.name + ": ") else text
    text = re.sub(r"\s*\(?\bhttps?://\S+", "", text).strip(" :;,.")
    return f"{state}: {_clip(text, 48)}" if text else state


def status_text(server: ServerSnapshot, now: float, left_out: Optional[str] = None) -> str:
    """What the status cell says: the state, and why the server is not used when it is not.

    ``offline: connection refused``, ``DNS: no such host``, ``disabled``, ``cooling down 20 s
    after 3 failures``; ``left_out`` is why a running batch left the server out.
    """
    if not server.enabled:
        return "disabled"
    if server.cooling_down(now):
        left = max(1, int(round((server.cooldown_until or now) - now)))
        failures = server.counters.failures
        after = f" after {failures} failure{'' if failures == 1 else 's'}" if failures else ""
        return f"cooling down {left} s{after}"
    if left_out and left_out.startswith(server.name + ": "):
        left_out = left_out[len(server.name) + 2 :]  # the row names the server already
    if server.status is ServerStatus.UNKNOWN:
        return f"left out: {left_out}" if left_out else "not checked yet"
    if not server.status.reachable or server.status is ServerStatus.DISABLED:
        return short_reason(server)
    if left_out:
        return f"{server.status.value} · left out: {left_out}"
    return server.status.value


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_colour_name(server: ServerSnapshot, now: float) -> str:
    if server.enabled and server.cooling_down(now):
        return STATUS_COLOURS["cooling"]
    return STATUS_COLOURS.get(server.status.value, STATUS_COLOURS[ServerStatus.UNKNOWN.value])


def status_tooltip(server: ServerSnapshot, now: float, left_out: Optional[str] = None) -> str:
    """Why the server is skipped (offline, error, cooling down, disabled), else how it is reached."""
    lines = []
    reason = server.unavailable_reason(now)
    if reason is not None and server.status is not ServerStatus.UNKNOWN:
        lines.append(f"Not used: {reason}")
    elif server.status is ServerStatus.UNKNOWN and server.enabled:
        lines.append("Not checked yet")
    else:
        lines.append("Available")
    if left_out and reason is None:
        lines.append(f"Left out of a running batch: {left_out}")
    if server.last_error and server.last_error not in (reason or ""):
        lines.append(f"Last error: {server.last_error}")
    lines.append("Status by {}".format("websocket push (live)" if server.live else "polling"))
    counters = server.counters
    if counters.dispatches or counters.failures:
        lines.append(f"Sent {counters.dispatches} · completed {counters.completed} · failed {counters.failures}")
    return "\n".join(lines)


def format_age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 2:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def format_bytes(n: int) -> str:
    gib = n / float(1024**3)
    return f"{gib:.1f} GB" if gib >= 1 else f"{n / float(1024**2):.0f} MB"


def short_gpu_name(name: str) -> str:
    """``cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync`` -> ``NVIDIA GeForce RTX 4090``."""
    text = name.split(" : ")[0].strip()
    head, _, rest = text.partition(" ")
    if rest and ":" in head and head.split(":")[-1].isdigit():
        text = rest
    return text
