"""The accessors of the old single-server ComfyUI-for-Nuke ``env.py``, cluster-aware.

Code written for the old plugin calls ``NUKE_COMFYUI_IP()`` and friends; these
keep working. Every function reads the environment when called (``environ``
may be passed for tests; it defaults to ``os.environ`` at call time).

Which value wins, for IP, PORT, DIR_LOCAL and DIR_REMOTE:

1. the single variable itself, when it is set to a non-empty, valid value
   (an explicit setting is the user's intent, and old tools that read it
   keep seeing what the user typed);
2. otherwise, when ``NUKE_COMFYUI_SERVERS`` is set and yields at least one
   server, the preferred server: enabled, lowest ``priority`` number, first
   in the list on a tie (with no enabled server, the defaults below);
3. otherwise the old defaults: ``127.0.0.1``, ``8188``, ``""``, ``""``.

Each variable is resolved on its own, so setting only ``NUKE_COMFYUI_DIR_LOCAL``
pairs it with the preferred server's ``dir_remote``.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from .config import (
    DEFAULT_IP,
    DEFAULT_PORT,
    ENV_DIR_LOCAL,
    ENV_DIR_REMOTE,
    ENV_IP,
    ENV_PORT,
    ENV_SERVERS,
    ServerConfig,
    load_config,
    preferred_server,
)
from .config_fields import _check_host, _parse_int


def _env(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _explicit(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    return "" if value is None else str(value)


def _preferred(environ: Mapping[str, str]) -> Optional[ServerConfig]:
    if not _explicit(environ, ENV_SERVERS).strip():
        return None
    load = load_config(environ)
    if load.source not in ("file", "inline"):
        return None
    return preferred_server(load.servers)


def NUKE_COMFYUI_SERVERS(environ: Optional[Mapping[str, str]] = None) -> str:  # noqa: N802 - the old name
    """The raw value of ``NUKE_COMFYUI_SERVERS`` (inline JSON or a file path), or ``""``."""
    return _explicit(_env(environ), ENV_SERVERS)


def NUKE_COMFYUI_IP(environ: Optional[Mapping[str, str]] = None) -> str:  # noqa: N802
    """The server address: the variable, else the preferred server's, else ``127.0.0.1``.

    IPv6 comes without brackets. An invalid ``NUKE_COMFYUI_IP`` counts as unset.
    """
    env = _env(environ)
    raw = _explicit(env, ENV_IP).strip()
    if raw:
        host, err, _ = _check_host(raw)
        if host is not None and not err:
            return host
    server = _preferred(env)
    return server.ip if server is not None else DEFAULT_IP


def NUKE_COMFYUI_PORT(environ: Optional[Mapping[str, str]] = None) -> int:  # noqa: N802
    """The port: the variable, else the preferred server's, else ``8188``.

    A value that is not an integer 1-65535 counts as unset (never raises).
    """
    env = _env(environ)
    raw = _explicit(env, ENV_PORT).strip()
    if raw:
        number, _ = _parse_int(raw, 1, 65535)
        if number is not None:
            return number
    server = _preferred(env)
    return server.port if server is not None else DEFAULT_PORT


def NUKE_COMFYUI_DIR_LOCAL(environ: Optional[Mapping[str, str]] = None) -> str:  # noqa: N802
    """The local side of the shared folder: the variable, else the preferred server's, else ``""``."""
    env = _env(environ)
    raw = _explicit(env, ENV_DIR_LOCAL)
    if raw:
        return raw
    server = _preferred(env)
    return server.dir_local if server is not None else ""


def NUKE_COMFYUI_DIR_REMOTE(environ: Optional[Mapping[str, str]] = None) -> str:  # noqa: N802
    """The server side of the shared folder: the variable, else the preferred server's, else ``""``."""
    env = _env(environ)
    raw = _explicit(env, ENV_DIR_REMOTE)
    if raw:
        return raw
    server = _preferred(env)
    return server.dir_remote if server is not None else ""


def NUKE_COMFYUI_NUKE_USER(environ: Optional[Mapping[str, str]] = None) -> str:  # noqa: N802
    """The Nuke user folder: ``NUKE_COMFYUI_NUKE_USER``, else ``~/.nuke`` (the old plugin had this too)."""
    env = _env(environ)
    raw = _explicit(env, "NUKE_COMFYUI_NUKE_USER")
    if raw:
        return raw
    home = env.get("HOME") or env.get("USERPROFILE") or os.path.expanduser("~")
    return os.path.join(str(home), ".nuke")


__all__ = [
    "NUKE_COMFYUI_DIR_LOCAL",
    "NUKE_COMFYUI_DIR_REMOTE",
    "NUKE_COMFYUI_IP",
    "NUKE_COMFYUI_NUKE_USER",
    "NUKE_COMFYUI_PORT",
    "NUKE_COMFYUI_SERVERS",
]
