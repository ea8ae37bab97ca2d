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

This module holds the sources (environment, file reading, fallbacks) and
re-exports the rest, so ``from .config import ...`` keeps working::

    config_model    ServerConfig, ConfigIssue, ConfigLoad; servers_to_json, redact
    config_fields   one server entry checked field by field
    config_parse    JSON text -> servers (syntax errors with a caret, entry lines)
    config          NUKE_COMFYUI_SERVERS / single-server variables -> ConfigLoad
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from .config_fields import _check_host, _parse_int
from .config_model import (
    DEFAULT_IP,
    DEFAULT_PORT,
    ENV_DIR_LOCAL,
    ENV_DIR_REMOTE,
    ENV_IP,
    ENV_PORT,
    ENV_SERVERS,
    FIELDS,
    MAX_CONFIG_BYTES,
    ConfigIssue,
    ConfigLoad,
    ServerConfig,
    _bad_char,
    _host_port,
    _printable,
    _show,
    redact,
    server_to_dict,
    servers_to_json,
)
from .config_parse import parse_servers, servers_from_data

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


@dataclass(frozen=True)
class ConfigFileText:
    """What :func:`read_config_file` got: the text (None when unusable) and why not, or what to know."""

    text: Optional[str]
    issues: Tuple[ConfigIssue, ...] = ()
    short: str = ""  # for the notice when the file is unusable: "points to a missing file ..."


def decode_config_bytes(data: bytes) -> Tuple[str, str]:
    """(text, encoding name) of a config file's bytes; UnicodeDecodeError when it is not text.

    UTF-8 with or without BOM, and UTF-16/32 when the file says so with a BOM or its
    NUL bytes give it away: Windows PowerShell 5 writes UTF-16 (``Out-File``, ``>``).
    """
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            text = data.decode(encoding)
            return text, "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
    if len(data) >= 2 and data[0] != 0 and data[1] == 0:
        return data.decode("utf-16-le"), "UTF-16"
    if len(data) >= 2 and data[0] == 0 and data[1] != 0:
        return data.decode("utf-16-be"), "UTF-16"
    return data.decode("utf-8"), "UTF-8"


def read_config_file(path: str, origin: str = ENV_SERVERS) -> ConfigFileText:
    """A server file's text, refusing what cannot be one: folders, FIFOs and devices (a read
    could block forever), files over :data:`MAX_CONFIG_BYTES`, bytes that are not text.
    Never raises; the validate command and ``NUKE_COMFYUI_SERVERS=FILE`` both read through here.
    """

    def fail(cause: str, short: str) -> ConfigFileText:
        message = f"{origin}: cannot read {path}: {cause}" if origin else f"Cannot read {path}: {cause}"
        return ConfigFileText(None, (ConfigIssue(message, "error"),), short)

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
        text, encoding = decode_config_bytes(data)
    except UnicodeDecodeError as exc:
        return fail(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "points to a file that is not UTF-8 text " + path,
        )
    if encoding != "UTF-8":
        note = ConfigIssue(
            f"{path} is {encoding} text (Windows PowerShell 5 writes that); it was read, but other tools "
            "expect UTF-8: save it as UTF-8 (Set-Content -Encoding utf8, or the panel's editor)",
            "warning",
        )
        return ConfigFileText(text, (note,))
    return ConfigFileText(text)


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
        read = read_config_file(path, ENV_SERVERS)
        issues.extend(read.issues)
        if read.text is None:
            return _fallback(env, f"{ENV_SERVERS} {read.short}", issues)
        servers, found = parse_servers(read.text, origin=path)
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
    "read_config_file",
    "decode_config_bytes",
    "redact",
    "server_to_dict",
    "servers_from_data",
    "servers_to_json",
]
