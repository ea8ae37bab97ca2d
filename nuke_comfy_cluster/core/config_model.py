"""The configuration's data: ServerConfig, ConfigIssue, ConfigLoad, and how they are shown.

Also the JSON a server list is saved as (:func:`servers_to_json`) and the
masking of secrets for display (:func:`redact`). No parsing and no
environment here: see :mod:`.config_fields`, :mod:`.config_parse` and
:mod:`.config`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

ENV_SERVERS = "NUKE_COMFYUI_SERVERS"
ENV_IP = "NUKE_COMFYUI_IP"
ENV_PORT = "NUKE_COMFYUI_PORT"
ENV_DIR_LOCAL = "NUKE_COMFYUI_DIR_LOCAL"
ENV_DIR_REMOTE = "NUKE_COMFYUI_DIR_REMOTE"

DEFAULT_IP = "127.0.0.1"
DEFAULT_PORT = 8188

#: a server list is a few kilobytes; anything this big is the wrong file
MAX_CONFIG_BYTES = 10 * 1024 * 1024

FIELDS = (
    "name",
    "ip",
    "port",
    "dir_local",
    "dir_remote",
    "priority",
    "enabled",
    "scheme",
    "token",
    "headers",
    "max_in_flight",
    "url",
)

_REDACTED = "***"


@dataclass(frozen=True)
class ServerConfig:
    """One configured server, validated."""

    name: str
    ip: str = "127.0.0.1"
    port: int = 8188
    dir_local: str = ""
    dir_remote: str = ""
    priority: int = 0
    enabled: bool = True
    scheme: str = "http"  # "http" or "https" (then websockets use wss)
    #: bearer token for servers behind a reverse proxy; never logged or shown
    token: Optional[str] = field(default=None, repr=False)
    #: extra headers (e.g. {"X-Api-Key": "..."}); values never logged or shown
    headers: Dict[str, str] = field(default_factory=dict, repr=False, hash=False, compare=False)
    #: prompts of ours one server may hold at once (running + queued); 0 = scheduler default
    max_in_flight: int = 0

    @property
    def host_port(self) -> str:
        """``ip:port`` for display, with IPv6 addresses in brackets."""
        return _host_port(self.ip, self.port)

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` (no trailing slash), IPv6 bracketed, zone id escaped."""
        host = self.ip
        if ":" in host:
            host = "[{}]".format(host.replace("%", "%25"))
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in the configuration.

    ``index`` is the 0-based position of the entry in the array (the message
    counts from 1, as people do); ``line``/``column`` are 1-based.
    """

    message: str
    level: str  # "error" | "warning"
    line: Optional[int] = None
    column: Optional[int] = None
    index: Optional[int] = None
    field: Optional[str] = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ConfigLoad:
    """What :func:`load_config` found: the servers, where they came from, and why."""

    servers: Tuple[ServerConfig, ...]
    source: str  # "file" | "inline" | "single" | "default"
    notice: str
    path: Optional[str] = None  # the JSON file when source == "file"
    issues: Tuple[ConfigIssue, ...] = ()

    @property
    def warnings(self) -> Tuple[str, ...]:
        return tuple(i.message for i in self.issues if i.level == "warning")

    @property
    def errors(self) -> Tuple[str, ...]:
        return tuple(i.message for i in self.issues if i.level == "error")

    @property
    def ok(self) -> bool:
        return not any(i.level == "error" for i in self.issues)


# --------------------------------------------------------------------------- display helpers


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _printable(text: str) -> str:
    """``text`` with control characters and lone surrogates made visible, for messages."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if _is_control(ch) or _is_surrogate(ch):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _show(value: Any, limit: int = 60) -> str:
    """A short JSON-ish rendering of a (non-secret) value for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = _printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    """What a value is, without showing it (for secrets)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def _is_surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


def _bad_char(text: str) -> Optional[str]:
    """Why ``text`` cannot be stored (control character, lone surrogate), or None."""
    if text.isprintable():  # no Cc, no Cs: the common case, checked in C
        return None
    for ch in text:
        if _is_surrogate(ch):
            return "contains an invalid character (a lone surrogate)"
        if _is_control(ch):
            return f"contains a control character (U+{ord(ch):04X})"
    return None


# --------------------------------------------------------------------------- saving and showing


def _redact_url(text: str) -> str:
    return re.sub(r"(//)[^/@\s]*@", r"\1" + _REDACTED + "@", text)


def server_to_dict(s: ServerConfig, include_secrets: bool = True) -> dict:
    """The JSON object for one server, in a stable key order; optional fields only when set.

    Without secrets, ``token`` and ``headers`` are left out entirely (a masked
    value would be read back as a real one).
    """
    d: Dict[str, Any] = {
        "name": s.name,
        "ip": s.ip,
        "port": s.port,
        "dir_local": s.dir_local,
        "dir_remote": s.dir_remote,
        "priority": s.priority,
        "enabled": s.enabled,
    }
    if s.scheme != "http":
        d["scheme"] = s.scheme
    if s.max_in_flight:
        d["max_in_flight"] = s.max_in_flight
    if include_secrets:
        if s.token:
            d["token"] = s.token
        if s.headers:
            d["headers"] = dict(s.headers)
    return d


def servers_to_json(servers: Iterable[ServerConfig], include_secrets: bool = True) -> str:
    """Pretty JSON array of the servers (what the config file holds), ending in a newline."""
    data = [server_to_dict(s, include_secrets) for s in servers]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


_TOKEN_TEXT = re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"')
_HEADERS_TEXT = re.compile(r'("headers"\s*:\s*)\{([^{}]*)\}')
_HEADER_VALUE_TEXT = re.compile(r'(:\s*)"(?:[^"\\]|\\.)*"')
_AUTH_TEXT = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]+")


def redact(text_or_headers: Any) -> Any:
    """Mask secrets for display.

    - a mapping (headers) -> a new dict with every value masked;
    - a ServerConfig -> its dict with token and header values masked;
    - a list/tuple of those -> a list of the results;
    - text (JSON or a log line) -> the text with ``"token"`` values, values
      inside ``"headers"`` objects, ``Bearer xyz`` and ``user:pass@`` masked.
    """
    if isinstance(text_or_headers, ServerConfig):
        d = server_to_dict(text_or_headers, include_secrets=True)
        if "token" in d:
            d["token"] = _REDACTED
        if "headers" in d:
            d["headers"] = redact(d["headers"])
        return d
    if isinstance(text_or_headers, Mapping):
        return {k: (_REDACTED if v else v) for k, v in text_or_headers.items()}
    if isinstance(text_or_headers, (list, tuple)):
        return [redact(item) for item in text_or_headers]
    if isinstance(text_or_headers, str):
        text = _TOKEN_TEXT.sub(r'\1"' + _REDACTED + '"', text_or_headers)
        text = _HEADERS_TEXT.sub(
            lambda m: m.group(1) + "{" + _HEADER_VALUE_TEXT.sub(r'\1"' + _REDACTED + '"', m.group(2)) + "}", text
        )
        text = _AUTH_TEXT.sub(lambda m: m.group(1) + m.group(2) + _REDACTED, text)
        return _redact_url(text)
    return text_or_headers
