"""The single-server API of older ComfyUI-for-Nuke code, served by the cluster pool.

``GET(relative_url)`` / ``POST(relative_url, data)`` / ``check_connection()`` keep
their old shapes (GET returns parsed JSON or None, POST returns parsed JSON or None
and never raises) but go to the chosen server: the one named, else the panel's
override, else the least-loaded one. Failures are logged, not raised, as before.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Union

from .errors import ClusterError, user_message
from .pool import ComfyUIServerPool
from .server import ComfyUIServer

log = logging.getLogger(__name__)

_default_pool: Optional[ComfyUIServerPool] = None
_default_lock = threading.Lock()


def default_pool() -> ComfyUIServerPool:
    """The process-wide pool, configured from the environment on first use."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            # the same pool as the panel and the nodes: one set of sockets, one override
            from .api import default_cluster

            _default_pool = default_cluster().pool
        return _default_pool


def set_default_pool(pool: Optional[ComfyUIServerPool]) -> None:
    global _default_pool
    with _default_lock:
        _default_pool = pool


def _server(server: Union[None, str, ComfyUIServer]) -> ComfyUIServer:
    if isinstance(server, ComfyUIServer):
        return server
    pool = default_pool()
    if not any(s.last_status_check for s in pool.servers):
        pool.update_all_server_status()
    return pool.choose_server(server)


def GET(relative_url: str, server: Union[None, str, ComfyUIServer] = None) -> Any:  # noqa: N802 - old name
    try:
        return _server(server).connection.get_json(relative_url)
    except ClusterError as e:
        log.error("%s", user_message(e))
        return None


def POST(relative_url: str, data: Any = None, server: Union[None, str, ComfyUIServer] = None) -> Any:  # noqa: N802
    try:
        return _server(server).connection.post_json(relative_url, data)
    except ClusterError as e:
        log.error("%s", user_message(e))
        return None


def check_connection(server: Union[None, str, ComfyUIServer] = None) -> bool:
    """True when the chosen server (or, with none named, any server) answers."""
    try:
        target = _server(server)
    except ClusterError as e:
        log.error("%s", user_message(e))
        return False
    ok, message = target.test_connection()
    if not ok:
        log.error("%s", message)
    return ok
