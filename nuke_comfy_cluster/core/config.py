"""Server configuration: NUKE_COMFYUI_SERVERS (inline JSON or a file), fallbacks, validation.

The contract (DESIGN.md "Configuration")::

    NUKE_COMFYUI_SERVERS     inline JSON (value starts with "[" or "{") or a path to a JSON
                             file ("~" and $VAR / ${VAR} / %VAR% expanded); the JSON is an
                             array of server objects or {"servers": [...]}
    unset / empty / unusable -> NUKE_COMFYUI_IP, NUKE_COMFYUI_PORT, NUKE_COMFYUI_DIR_LOCAL,
                             NUKE_COMFYUI_DIR_REMOTE (when IP or PORT is set)
                             -> 127.0.0.1:8188

Nothing here prints, logs or raises on bad input: problems come back as
:class:`ConfigIssue` records that name the place (line/column, entry, field),
and :func:`load_config` sums up the source used in one ``notice`` line.
Token and header values never appear in an issue message.

Server objects may carry keys starting with ``_`` (e.g. ``"_comment"``): JSON
has no comments, so such keys are ignored without a warning.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

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

# Names people reach for that difflib would not map to "ip".
_FIELD_ALIASES = {
    "host": "ip",
    "hostname": "ip",
    "address": "ip",
    "addr": "ip",
    "server": "ip",
    "ip_address": "ip",
    "local_dir": "dir_local",
    "remote_dir": "dir_remote",
    "active": "enabled",
    "disabled": "enabled",
    "api_key": "token",
    "apikey": "token",
    "bearer": "token",
}

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
    for ch in text:
        if _is_surrogate(ch):
            return "contains an invalid character (a lone surrogate)"
        if _is_control(ch):
            return f"contains a control character (U+{ord(ch):04X})"
    return None


# --------------------------------------------------------------------------- field checks

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,12}")
_HOST_EXPECTED = "expected an IPv4/IPv6 address or host name"


def _check_host(value: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(host, error, warning) for an ``ip`` value; IPv6 brackets removed."""
    host = value.strip()
    if not host:
        return None, _HOST_EXPECTED + ', got ""', None
    bad = _bad_char(host)
    if bad:
        return None, f"{_HOST_EXPECTED} ({bad})", None
    shown = _show(host)
    if "://" in host:
        return (
            None,
            f'{_HOST_EXPECTED}, got {shown} (give the host only, or write the whole address as "url")',
            None,
        )
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None, f"expected an IPv6 address inside [brackets], got {shown}", None
        return inner, None, None
    try:
        ipaddress.ip_address(host)
        return host, None, None
    except ValueError:
        pass
    if host.count(":") == 1:
        head, _, tail = host.partition(":")
        if tail.isdigit():
            return None, f'{_HOST_EXPECTED}, got {shown} (put the port in "port")', None
    if ":" in host:
        return None, f"expected a valid IPv6 address, got {shown}", None
    if re.fullmatch(r"[0-9.]+", host):
        return None, f"expected a valid IPv4 address, got {shown}", None
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None, f"{_HOST_EXPECTED}, got {shown} (host names use letters, digits, '-' and '.')", None
    warning = None
    if "_" in name:
        warning = f"host name {shown} contains '_', which DNS does not allow; it may only resolve on some machines"
    return host, None, warning


def _parse_int(value: Any, lo: Optional[int], hi: Optional[int]) -> Tuple[Optional[int], bool]:
    """(number, came_from_text); number is None when the value is not an acceptable integer."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int):
        number, from_text = value, False
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        number, from_text = int(value.strip()), True
    else:
        return None, False
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        return None, from_text
    return number, from_text


_TRUE_TEXT = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class _Entry:
    """Collects the issues of one server entry, each prefixed with where it is."""

    def __init__(self, origin: str, index: int, line: Optional[int], issues: List[ConfigIssue]) -> None:
        self.origin = origin
        self.index = index
        self.line = line
        self.name: Optional[str] = None
        self.issues = issues
        self.failed = False

    def prefix(self) -> str:
        text = f"{self.origin} entry {self.index + 1}"
        if self.name:
            text += f" ({_show(self.name, 40)})"
        if self.line is not None and self.line > 1:
            text += f" at line {self.line}"
        return text

    def _add(self, level: str, field_name: Optional[str], message: str) -> None:
        where = self.prefix()
        if field_name:
            where += f': field "{field_name}"'
        self.issues.append(
            ConfigIssue(f"{where}: {message}", level, line=self.line, index=self.index, field=field_name)
        )

    def error(self, field_name: Optional[str], message: str) -> None:
        self.failed = True
        self._add("error", field_name, message)

    def warn(self, field_name: Optional[str], message: str) -> None:
        self._add("warning", field_name, message)


def _suggest(key: str) -> Optional[str]:
    low = key.strip().lower()
    if low in FIELDS:
        return low
    if low in _FIELD_ALIASES:
        return _FIELD_ALIASES[low]
    match = difflib.get_close_matches(low, FIELDS, n=1, cutoff=0.6)
    return match[0] if match else None


def _server_from_entry(entry: Any, e: _Entry) -> Optional[ServerConfig]:
    if not isinstance(entry, dict):
        e.error(None, f'expected an object like {{"name": ..., "ip": ..., "port": ...}}, got {_kind(entry)}')
        return None

    raw_name = entry.get("name")
    if isinstance(raw_name, str) and raw_name.strip():
        e.name = raw_name.strip()

    for key in sorted(getattr(entry, "duplicate_keys", ())):
        e.warn(None, f'key "{_printable(key)}" is given more than once; the last one is used')
    for key in entry:
        if key in FIELDS or key.startswith("_"):
            continue
        hint = _suggest(key)
        e.warn(
            None,
            'unknown field "{}" ignored{}'.format(_printable(key), f' (did you mean "{hint}"?)' if hint else ""),
        )

    def given(key: str) -> Any:
        return entry.get(key)  # null counts as not given

    ip: Optional[str] = None
    port: Optional[int] = None
    scheme: Optional[str] = None

    url = given("url")
    if url is not None:
        ip, port, scheme = _split_url(url, e)

    raw_ip = given("ip")
    if raw_ip is not None:
        if not isinstance(raw_ip, str):
            e.error("ip", f"{_HOST_EXPECTED}, got {_show(raw_ip)}")
        else:
            host, err, warning = _check_host(raw_ip)
            if err:
                e.error("ip", err)
            else:
                if warning:
                    e.warn("ip", warning)
                if url is not None and ip is not None and host is not None and host.lower() != ip.lower():
                    e.error("url", f'host {_show(ip)} disagrees with "ip" {_show(host)}')
                ip = host
    elif url is None:
        e.error("ip", f'missing ({_HOST_EXPECTED}; or give a "url")')

    raw_port = given("port")
    if raw_port is not None:
        number, from_text = _parse_int(raw_port, 1, 65535)
        if number is None:
            e.error("port", f"expected an integer 1-65535, got {_show(raw_port)}")
        else:
            if from_text:
                e.warn("port", f"given as text {_show(raw_port)}; write it as a number: {number}")
            if url is not None and port is not None and number != port:
                e.error("url", f'port {port} disagrees with "port" {number}')
            port = number

    raw_scheme = given("scheme")
    if raw_scheme is not None:
        low = raw_scheme.strip().lower() if isinstance(raw_scheme, str) else None
        if low not in ("http", "https"):
            hint = " (websockets follow the scheme: https uses wss)" if low in ("ws", "wss") else ""
            e.error("scheme", f'expected "http" or "https", got {_show(raw_scheme)}{hint}')
        else:
            if url is not None and scheme is not None and low != scheme:
                e.error("url", f'scheme "{scheme}" disagrees with "scheme" "{low}"')
            scheme = low

    dirs = {}
    for key in ("dir_local", "dir_remote"):
        value = given(key)
        if value is None:
            dirs[key] = ""
        elif not isinstance(value, str):
            e.error(key, f"expected a folder path as a string, got {_show(value)}")
        else:
            bad = _bad_char(value)
            if bad:
                e.error(key, f"folder path {bad}")
            dirs[key] = value
    if bool(dirs.get("dir_local")) != bool(dirs.get("dir_remote")) and len(dirs) == 2:
        missing = "dir_remote" if dirs["dir_local"] else "dir_local"
        e.warn(missing, "empty while the other folder is set: paths will not be mapped for this server")

    priority = 0
    raw_priority = given("priority")
    if raw_priority is not None:
        number, from_text = _parse_int(raw_priority, None, None)
        if number is None:
            e.error("priority", f"expected an integer (lower = preferred), got {_show(raw_priority)}")
        else:
            if from_text:
                e.warn("priority", f"given as text {_show(raw_priority)}; write it as a number: {number}")
            priority = number

    enabled = True
    raw_enabled = given("enabled")
    if raw_enabled is not None:
        if isinstance(raw_enabled, bool):
            enabled = raw_enabled
        else:
            guess: Optional[bool] = None
            if isinstance(raw_enabled, str):
                guess = _TRUE_TEXT.get(raw_enabled.strip().lower())
            elif isinstance(raw_enabled, int) and raw_enabled in (0, 1):
                guess = bool(raw_enabled)
            if guess is None:
                e.error("enabled", f"expected true or false, got {_show(raw_enabled)}")
            else:
                e.warn(
                    "enabled",
                    "expected true or false, got {}; read as {}".format(
                        _show(raw_enabled), "true" if guess else "false"
                    ),
                )
                enabled = guess

    token: Optional[str] = None
    raw_token = given("token")
    if raw_token is not None:
        if not isinstance(raw_token, str):
            e.error("token", f"expected a string, got {_kind(raw_token)}")
        else:
            token = raw_token.strip() or None
            if token and token[:7].lower() == "bearer ":
                e.warn("token", 'starts with "Bearer "; the prefix is added when sending, so it was removed')
                token = token[7:].strip() or None
            if token and any(_is_control(ch) or _is_surrogate(ch) for ch in token):
                e.error("token", "contains a control or invalid character (not allowed in an HTTP header)")

    headers: Dict[str, str] = {}
    raw_headers = given("headers")
    if raw_headers is not None:
        if not isinstance(raw_headers, dict):
            e.error("headers", f"expected an object of header names to string values, got {_kind(raw_headers)}")
        else:
            for key, value in raw_headers.items():
                if not _HEADER_NAME.fullmatch(key):
                    e.error("headers", f"{_show(key)} is not a valid HTTP header name")
                elif not isinstance(value, str):
                    e.error("headers", f'value of "{key}": expected a string, got {_kind(value)}')
                elif any((_is_control(ch) and ch != "\t") or _is_surrogate(ch) for ch in value):
                    e.error("headers", f'value of "{key}" contains a control or invalid character')
                else:
                    headers[key] = value

    max_in_flight = 0
    raw_mif = given("max_in_flight")
    if raw_mif is not None:
        number, from_text = _parse_int(raw_mif, 0, None)
        if number is None:
            e.error("max_in_flight", f"expected an integer >= 0 (0 = scheduler default), got {_show(raw_mif)}")
        else:
            if from_text:
                e.warn("max_in_flight", f"given as text {_show(raw_mif)}; write it as a number: {number}")
            max_in_flight = number

    if port is None:
        port = DEFAULT_PORT
    if scheme is None:
        scheme = "http"

    name: Optional[str] = None
    if raw_name is None:
        if ip is not None:
            name = _host_port(ip, port)
            e.warn("name", f'missing; using "{name}"')
    elif not isinstance(raw_name, str) or not raw_name.strip():
        e.error("name", f"expected a non-empty string, got {_show(raw_name)}")
    else:
        bad = _bad_char(raw_name)
        if bad:
            e.error("name", bad)
        name = raw_name.strip()
        if name != raw_name:
            e.warn("name", "leading/trailing spaces removed")

    if e.failed or ip is None or name is None:
        return None
    return ServerConfig(
        name=name,
        ip=ip,
        port=port,
        dir_local=dirs["dir_local"],
        dir_remote=dirs["dir_remote"],
        priority=priority,
        enabled=enabled,
        scheme=scheme,
        token=token,
        headers=headers,
        max_in_flight=max_in_flight,
    )


def _redact_url(text: str) -> str:
    return re.sub(r"(//)[^/@\s]*@", r"\1" + _REDACTED + "@", text)


def _split_url(url: Any, e: _Entry) -> Tuple[Optional[str], Optional[int], Optional[str]]:
    """(host, port, scheme) of a "url" field; reports and returns Nones when it is unusable."""
    expected = 'expected an address like "https://gpu1.studio:443"'
    if not isinstance(url, str):
        e.error("url", f"{expected}, got {_show(url)}")
        return None, None, None
    shown = _show(_redact_url(url.strip()))
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            e.error("url", f'{expected}, got {shown} (the scheme must be "http" or "https")')
            return None, None, None
        if "@" in parts.netloc:
            e.error("url", f'must not hold a user name or password (use "token" or "headers"), got {shown}')
            return None, None, None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            e.error("url", f"{expected}, got {shown} (a path, query or fragment is not supported)")
            return None, None, None
        hostname = parts.hostname
        port = parts.port
    except ValueError as exc:
        e.error("url", f"{expected}, got {shown} ({exc})")
        return None, None, None
    if not hostname:
        e.error("url", f"{expected}, got {shown} (no host)")
        return None, None, None
    host, err, warning = _check_host(hostname)
    if err:
        e.error("url", err)
        return None, None, None
    if warning:
        e.warn("url", warning)
    if port is None:
        port = 443 if scheme == "https" else 80
    elif not 1 <= port <= 65535:
        e.error("url", f"{expected}, got {shown} (port must be 1-65535)")
        return None, None, None
    return host, port, scheme


# --------------------------------------------------------------------------- JSON text


class _JsonObject(dict):
    """A JSON object that remembers keys given more than once (json keeps the last)."""

    duplicate_keys: Tuple[str, ...] = ()


def _object_pairs(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        seen = set()
        dups = []
        for key, _ in pairs:
            if key in seen and key not in dups:
                dups.append(key)
            seen.add(key)
        obj.duplicate_keys = tuple(dups)
    return obj


def _syntax_issue(text: str, exc: json.JSONDecodeError, origin: str) -> ConfigIssue:
    lines = text.split("\n")
    line_text = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
    line_text = line_text.rstrip("\r")
    col = max(exc.colno, 1)
    start = 0
    width = 72
    if len(line_text) > width:
        start = max(0, min(col - 1 - width // 2, len(line_text) - width))
    excerpt = line_text[start : start + width]
    # One character in, one character out, so the caret stays under the culprit.
    excerpt = "".join(" " if (_is_control(ch) or _is_surrogate(ch)) else ch for ch in excerpt)
    lead = "…" if start > 0 else ""
    tail = "…" if start + width < len(line_text) else ""
    caret = " " * (len(lead) + col - 1 - start) + "^"

    hint = ""
    near = text[exc.pos : exc.pos + 1]
    before = text[: exc.pos].rstrip()[-1:]
    if exc.msg.startswith("Invalid \\escape"):
        hint = " (in JSON a backslash must be doubled: write C:\\\\proj, or use forward slashes C:/proj)"
    elif near == "'" or (exc.msg.startswith("Expecting property name") and near == "'"):
        hint = " (JSON strings use double quotes)"
    elif before == "," and (exc.msg.startswith("Expecting value") or exc.msg.startswith("Expecting property name")):
        hint = " (JSON does not allow a comma after the last item)"
    elif exc.msg.startswith("Illegal trailing comma"):
        hint = " (JSON does not allow a comma after the last item)"
    elif exc.msg.startswith("Expecting property name"):
        hint = " (names must be in double quotes)"
    message = f"{origin} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}\n    {lead}{excerpt}{tail}\n    {caret}"
    return ConfigIssue(message, "error", line=exc.lineno, column=exc.colno)


_WS = re.compile(r"[ \t\n\r]*")


def _entry_lines(text: str) -> Optional[List[int]]:
    """Best effort: the line each server entry starts on, or None when it cannot tell."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        return _WS.match(text, i).end()

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def scan_array(i: int) -> Optional[List[int]]:
        found: List[int] = []
        i = skip(i + 1)
        if text[i] == "]":
            return found
        while True:
            found.append(line_at(i))
            _, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
            elif text[i] == "]":
                return found
            else:
                return None

    try:
        i = skip(0)
        if text[i] == "[":
            return scan_array(i)
        if text[i] != "{":
            return None
        start_line = line_at(i)
        result: Optional[List[int]] = None
        i = skip(i + 1)
        while i < len(text) and text[i] == '"':
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i] != ":":
                return None
            i = skip(i + 1)
            if key == "servers" and text[i] == "[":
                result = scan_array(i)
            _, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
            else:
                break
        return result if result is not None else [start_line]
    except (ValueError, IndexError, RecursionError):
        return None


def parse_servers(text: str, origin: str = ENV_SERVERS) -> Tuple[List[ServerConfig], List[ConfigIssue]]:
    """Parse JSON text into servers; never raises on bad input.

    ``origin`` names the place in messages (the variable or the file path).
    A syntax error gives one issue with line, column and an excerpt with a caret.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [], [ConfigIssue(f"{origin} is not UTF-8 text ({exc.reason})", "error")]
    if not isinstance(text, str):
        return [], [ConfigIssue(f"{origin}: expected JSON text, got {_kind(text)}", "error")]
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        return [], [ConfigIssue(f"{origin} is empty", "error")]
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        return [], [_syntax_issue(text, exc, origin)]
    except RecursionError:
        return [], [ConfigIssue(f"{origin} is not usable JSON: nested too deeply", "error")]
    except ValueError as exc:  # e.g. an integer with thousands of digits
        return [], [ConfigIssue(f"{origin} is not usable JSON: {exc}", "error")]
    return _servers_from_data(data, origin, _entry_lines(text))


def servers_from_data(data: Any, origin: str) -> Tuple[List[ServerConfig], List[ConfigIssue]]:
    """Validate already-decoded JSON: an array of servers, ``{"servers": [...]}`` or one server object."""
    return _servers_from_data(data, origin, None)


def _servers_from_data(
    data: Any, origin: str, lines: Optional[List[int]]
) -> Tuple[List[ServerConfig], List[ConfigIssue]]:
    issues: List[ConfigIssue] = []
    if isinstance(data, dict):
        if "servers" in data:
            for key in data:
                if key != "servers" and not key.startswith("_") and key not in ("version", "$schema"):
                    issues.append(
                        ConfigIssue(f'{origin}: unknown top-level key "{_printable(key)}" ignored', "warning")
                    )
            entries = data["servers"]
            if not isinstance(entries, list):
                issues.append(
                    ConfigIssue(
                        f'{origin}: "servers" must be an array of server objects, got {_kind(entries)}',
                        "error",
                        field="servers",
                    )
                )
                return [], issues
        elif any(key in data for key in ("name", "ip", "url", "port")):
            issues.append(
                ConfigIssue(
                    f"{origin} holds one server object, not an array; using it as a list of one (write [{{...}}])",
                    "warning",
                )
            )
            entries = [data]
        else:
            keys = ", ".join(f'"{_printable(k)}"' for k in list(data)[:5])
            issues.append(
                ConfigIssue(
                    '{}: expected an array of server objects or {{"servers": [...]}}, got an object{}'.format(
                        origin, " with keys " + keys if keys else ""
                    ),
                    "error",
                )
            )
            return [], issues
    elif isinstance(data, list):
        entries = data
    else:
        issues.append(ConfigIssue(f"{origin}: expected an array of server objects, got {_kind(data)}", "error"))
        return [], issues

    if not entries:
        issues.append(ConfigIssue(f"{origin} holds no servers", "warning"))
        return [], issues
    if lines is not None and len(lines) != len(entries):
        lines = None

    servers: List[ServerConfig] = []
    taken: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        e = _Entry(origin, index, lines[index] if lines else None, issues)
        server = _server_from_entry(entry, e)
        if server is None:
            continue
        key = server.name.casefold()
        if key in taken:
            e.error(
                "name",
                f"duplicate name {_show(server.name)} (entry {taken[key] + 1} has it; names are compared ignoring case); entry ignored",
            )
            continue
        taken[key] = index
        servers.append(server)
    return servers, issues


# --------------------------------------------------------------------------- environment


def _expand(value: str, environ: Mapping[str, str]) -> str:
    """Expand $VAR, ${VAR}, %VAR% from ``environ`` (unknown ones stay) and a leading ``~``."""

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        got = environ.get(name)
        return match.group(0) if got is None else str(got)

    value = re.sub(r"\$(\w+)|\$\{([^}]+)\}|%(\w+)%", var, value)
    if value.startswith("~"):
        match = re.match(r"~([^/\\]*)(.*)$", value, re.S)
        if match and not match.group(1):
            home = environ.get("HOME") or environ.get("USERPROFILE") or os.path.expanduser("~")
            value = str(home) + match.group(2)
        else:
            value = os.path.expanduser(value)
    return value


def _read_config_file(path: str, origin: str) -> Tuple[Optional[str], Optional[ConfigIssue], str]:
    """(text, issue, short reason) for the file NUKE_COMFYUI_SERVERS points to."""

    def fail(cause: str, short: str) -> Tuple[None, ConfigIssue, str]:
        return None, ConfigIssue(f"{origin}: cannot read {path}: {cause}", "error"), short

    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return fail("it is a folder, not a JSON file", "points to a folder " + path)
        if not stat.S_ISREG(mode):
            # a FIFO or a device could block or never end
            return fail("not a regular file", "points to something that is not a file " + path)
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except ValueError:  # an embedded NUL byte
        return fail("not a usable file name", "is not a usable file name")
    except FileNotFoundError:
        return fail("file not found", "points to a missing file " + path)
    except PermissionError:
        return fail("permission denied", "points to an unreadable file " + path)
    except OSError as exc:
        return fail(exc.strerror or str(exc), "points to an unreadable file " + path)
    if len(data) > MAX_CONFIG_BYTES:
        return fail(
            f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB, not a server list",
            "points to a file too large " + path,
        )
    try:
        return data.decode("utf-8-sig"), None, ""
    except UnicodeDecodeError as exc:
        return fail(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "points to a file that is not UTF-8 text " + path,
        )


def _why_unusable(issues: Sequence[ConfigIssue], what: str) -> str:
    errors = [i for i in issues if i.level == "error"]
    for issue in errors:
        if issue.line is not None and issue.column is not None:
            return f"{what} is invalid at line {issue.line}, column {issue.column}"
    bad_entries = len({i.index for i in errors if i.index is not None})
    if bad_entries:
        return "{} has no usable entry ({} entr{} with errors)".format(
            what, bad_entries, "y" if bad_entries == 1 else "ies"
        )
    if errors:
        return "{} is invalid ({})".format(what, errors[0].message.split("\n")[0].replace(what + ": ", "", 1))
    return f"{what} holds no servers"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def load_config(environ: Optional[Mapping[str, str]] = None) -> ConfigLoad:
    """Read the server list from the environment (``os.environ`` at call time by default).

    Never raises on bad input: problems are in ``issues``, the source used and
    why is the one-line ``notice``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    issues: List[ConfigIssue] = []
    raw = env.get(ENV_SERVERS)
    if raw is None or not str(raw).strip():
        if raw is None:
            reason = f"{ENV_SERVERS} is not set"
        else:
            reason = f"{ENV_SERVERS} is empty"
        return _fallback(env, reason, issues, unset=True)

    value = str(raw).strip()
    unquoted = _unquote(value)
    if unquoted != value:
        issues.append(
            ConfigIssue(
                f"{ENV_SERVERS} is wrapped in quotes; they were removed (on Windows, write set {ENV_SERVERS}=value without quotes)",
                "warning",
            )
        )
        value = unquoted
        if not value:
            return _fallback(env, f"{ENV_SERVERS} is empty", issues, unset=True)

    if value[0] in "[{":
        servers, found = parse_servers(value, ENV_SERVERS)
        issues.extend(found)
        source, path, where, what = "inline", None, f"{ENV_SERVERS} (inline JSON)", ENV_SERVERS
    else:
        path = os.path.abspath(_expand(value, env))
        what = f"{ENV_SERVERS} file {path}"
        text, problem, short = _read_config_file(path, ENV_SERVERS)
        if problem is not None or text is None:
            if problem is not None:
                issues.append(problem)
            return _fallback(env, f"{ENV_SERVERS} {short}", issues)
        servers, found = parse_servers(text, origin=path)
        issues.extend(found)
        source, where = "file", f"{path} ({ENV_SERVERS})"

    if not servers:
        return _fallback(env, _why_unusable(found, what), issues)

    count = len(servers)
    notice = "Using {} server{} from {}".format(count, "" if count == 1 else "s", where)
    skipped = len({i.index for i in found if i.level == "error" and i.index is not None})
    if skipped:
        notice += "; {} entr{} skipped because of errors".format(skipped, "y" if skipped == 1 else "ies")
    if not any(s.enabled for s in servers):
        notice += "; none is enabled"
    return ConfigLoad(tuple(servers), source, _one_line(notice), path if source == "file" else None, tuple(issues))


def _one_line(text: str) -> str:
    return " ".join(_printable(text).split())


def _fallback(env: Mapping[str, str], reason: str, issues: List[ConfigIssue], unset: bool = False) -> ConfigLoad:
    def get(name: str) -> str:
        value = env.get(name)
        return "" if value is None else str(value)

    ip_raw, port_raw = get(ENV_IP).strip(), get(ENV_PORT).strip()
    dir_local, dir_remote = get(ENV_DIR_LOCAL), get(ENV_DIR_REMOTE)
    for var, value in ((ENV_DIR_LOCAL, dir_local), (ENV_DIR_REMOTE, dir_remote)):
        bad = _bad_char(value)
        if bad:
            issues.append(ConfigIssue(f"{var}: folder path {bad}; ignored", "error", field=var))
    if _bad_char(dir_local) or _bad_char(dir_remote):
        dir_local = dir_remote = ""
    elif bool(dir_local) != bool(dir_remote):
        missing = ENV_DIR_REMOTE if dir_local else ENV_DIR_LOCAL
        issues.append(ConfigIssue(f"{missing} is not set: paths will not be mapped", "warning", field=missing))

    if not ip_raw and not port_raw:
        server = ServerConfig(name=_host_port(DEFAULT_IP, DEFAULT_PORT), dir_local=dir_local, dir_remote=dir_remote)
        if unset and reason.endswith("is not set"):
            lead = f"{ENV_SERVERS}, {ENV_IP} and {ENV_PORT} are not set"
        else:
            lead = f"{reason}; {ENV_IP}/PORT are not set either"
        notice = f"{lead} — using the default server {server.host_port}"
        return ConfigLoad((server,), "default", _one_line(notice), None, tuple(issues))

    ip = DEFAULT_IP
    if ip_raw:
        host, err, warning = _check_host(ip_raw)
        if err or host is None:
            issues.append(ConfigIssue(f"{ENV_IP}: {err}; using {DEFAULT_IP}", "error", field=ENV_IP))
        else:
            if warning:
                issues.append(ConfigIssue(f"{ENV_IP}: {warning}", "warning", field=ENV_IP))
            ip = host
    port = DEFAULT_PORT
    if port_raw:
        number, _ = _parse_int(port_raw, 1, 65535)
        if number is None:
            issues.append(
                ConfigIssue(
                    f"{ENV_PORT}: expected an integer 1-65535, got {_show(port_raw)}; using {DEFAULT_PORT}",
                    "error",
                    field=ENV_PORT,
                )
            )
        else:
            port = number
    server = ServerConfig(name=_host_port(ip, port), ip=ip, port=port, dir_local=dir_local, dir_remote=dir_remote)
    used = f"{ENV_IP}/PORT" if ip_raw and port_raw else (ENV_IP if ip_raw else ENV_PORT)
    notice = f"{reason} — using single server {server.host_port} from {used}"
    return ConfigLoad((server,), "single", _one_line(notice), None, tuple(issues))


# --------------------------------------------------------------------------- helpers for callers


def preferred_server(servers: Iterable[ServerConfig]) -> Optional[ServerConfig]:
    """The enabled server with the lowest priority number (first in the list on a tie), or None."""
    best: Optional[ServerConfig] = None
    for server in servers:
        if server.enabled and (best is None or server.priority < best.priority):
            best = server
    return best


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


__all__ = [
    "ConfigIssue",
    "ConfigLoad",
    "DEFAULT_IP",
    "DEFAULT_PORT",
    "ENV_DIR_LOCAL",
    "ENV_DIR_REMOTE",
    "ENV_IP",
    "ENV_PORT",
    "ENV_SERVERS",
    "FIELDS",
    "ServerConfig",
    "load_config",
    "parse_servers",
    "preferred_server",
    "redact",
    "server_to_dict",
    "servers_from_data",
    "servers_to_json",
]
