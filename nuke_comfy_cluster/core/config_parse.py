"""JSON text to servers: syntax errors with line, column and a caret; the line of each entry.

:func:`parse_servers` (text) and :func:`servers_from_data` (decoded JSON) never
raise on bad input: problems come back as :class:`~.config_model.ConfigIssue` records.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from .config_fields import _Entry, _server_from_entry
from .config_model import ENV_SERVERS, ConfigIssue, ServerConfig, _is_control, _is_surrogate, _kind, _printable, _show


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

    # Entries come in order: count newlines from the previous one, not from the start,
    # so a file with many entries costs one pass (an 11 MB list once took minutes).
    counted = {"pos": 0, "line": 1}

    def line_at(i: int) -> int:
        if i < counted["pos"]:
            return text.count("\n", 0, i) + 1
        counted["line"] += text.count("\n", counted["pos"], i)
        counted["pos"] = i
        return counted["line"]

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
