"""One server entry checked field by field: the messages name the entry and the field.

:func:`server_from_entry` turns one decoded JSON object into a
:class:`~.config_model.ServerConfig` or None, adding :class:`~.config_model.ConfigIssue`
records to the list it is given; it never raises on bad input.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .config_model import (
    DEFAULT_PORT,
    FIELDS,
    ConfigIssue,
    ServerConfig,
    _bad_char,
    _host_port,
    _is_control,
    _is_surrogate,
    _kind,
    _printable,
    _redact_url,
    _show,
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
    if "://" in host:
        return (
            None,
            f'{_HOST_EXPECTED}, got {_show(host)} (give the host only, or write the whole address as "url")',
            None,
        )
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None, f"expected an IPv6 address inside [brackets], got {_show(host)}", None
        return inner, None, None
    try:
        ipaddress.ip_address(host)
        return host, None, None
    except ValueError:
        pass
    if host.count(":") == 1:
        head, _, tail = host.partition(":")
        if tail.isdigit():
            return None, f'{_HOST_EXPECTED}, got {_show(host)} (put the port in "port")', None
    if ":" in host:
        return None, f"expected a valid IPv6 address, got {_show(host)}", None
    if re.fullmatch(r"[0-9.]+", host):
        return None, f"expected a valid IPv4 address, got {_show(host)}", None
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None, f"{_HOST_EXPECTED}, got {_show(host)} (host names use letters, digits, '-' and '.')", None
    warning = None
    if "_" in name:
        warning = (
            f"host name {_show(host)} contains '_', which DNS does not allow; it may only resolve on some machines"
        )
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


# What example files and templates put where a secret goes; the value itself is never shown.
_PLACEHOLDER = re.compile(
    r"(?i)^\s*(?:<[^<>]*>|\{\{[^{}]*\}\}|\.{3}|…|x{3,}|\*{3,}|changeme|change[-_ ]?me|todo|tbd|none|null|"
    r"placeholder|secret|token|password|api[-_ ]?key|"
    r".*\b(?:replace|insert|paste|put)[-_ ](?:with|your|here|me)\b.*|.*\byour[-_ ](?:own[-_ ])?(?:token|key|secret|"
    r"api[-_ ]?key|password)\b.*)\s*$"
)
_PLACEHOLDER_ADVICE = "looks like a placeholder from an example, not a real secret: the server will refuse requests"


def is_placeholder_secret(value: str) -> bool:
    """True for ``REPLACE-WITH-YOUR-TOKEN``, ``<token>``, ``changeme``, ``***`` and the like."""
    return bool(_PLACEHOLDER.match(value))


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
            elif token and is_placeholder_secret(token):
                e.warn("token", _PLACEHOLDER_ADVICE)

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
                    if is_placeholder_secret(value):
                        e.warn("headers", f'value of "{key}" {_PLACEHOLDER_ADVICE}')

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
