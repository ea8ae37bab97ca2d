"""One websocket per server with a stable client id, reconnecting with backoff.

The socket thread only parses and hands events to a sink (which must only
enqueue). ComfyUI drops BOTH sockets if a second one opens with the same clientId
before the first is closed, so the old socket is always closed before a new one
opens. Missed messages are not replayed by the server: the CONNECTED event after a
reconnect tells the dispatcher to reconcile through ``/history`` and ``/queue``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

import websocket as wsclient  # websocket-client

from .config import ServerConfig
from .events import EventType, ServerEvent, parse_message
from .http import auth_headers, ws_url

log = logging.getLogger(__name__)

EventSink = Callable[[ServerEvent], None]


class ServerSocket:
    """Owns one thread and one websocket to one server."""

    def __init__(
        self,
        config: ServerConfig,
        client_id: str,
        sink: EventSink,
        *,
        connect_timeout: float = 3.0,
        backoff_min: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self._sink = sink
        self._connect_timeout = connect_timeout
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._lock = threading.Lock()
        self._ws: Optional[wsclient.WebSocket] = None
        self._thread: Optional[threading.Thread] = None
        self.connected = False
        self.reconnects = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=f"ncc-ws-{self.config.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        self._close_socket()
        thread, self._thread = self._thread, None
        # started by another thread a moment ago, it sees the stop flag and ends at once
        if thread is not None and thread.ident is not None:
            thread.join(timeout)

    def reconnect_now(self) -> None:
        """Drop the current socket (e.g. the server was seen hung) and reconnect at once."""
        self._kick.set()
        self._close_socket()

    def _close_socket(self) -> None:
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail in many ways
                pass

    def _emit(self, kind: EventType, **data: object) -> None:
        self._sink(ServerEvent(type=kind, server=self.config.name, at=time.time(), data=dict(data)))

    def _run(self) -> None:
        delay = self._backoff_min
        while not self._stop.is_set():
            url = ws_url(self.config, self.client_id)
            try:
                ws = wsclient.create_connection(
                    url,
                    timeout=self._connect_timeout,
                    header=[f"{k}: {v}" for k, v in auth_headers(self.config).items()],
                    enable_multithread=True,
                    # like the HTTP session (trust_env=False): no proxy from the environment
                    http_no_proxy=["*"],
                )
            except Exception as e:  # noqa: BLE001 - any failure to connect means: retry later
                log.debug("%s: websocket connect failed: %s", self.config.name, type(e).__name__)
                self._wait(delay)
                delay = min(self._backoff_max, delay * 2)
                continue
            with self._lock:
                if self._stop.is_set():
                    ws.close()
                    return
                self._ws = ws
            ws.settimeout(1.0)
            self.connected = True
            self._emit(EventType.CONNECTED, reconnect=self.reconnects > 0)
            delay = self._backoff_min
            reason = self._receive(ws)
            self.connected = False
            self._close_socket()
            if self._stop.is_set():
                break
            self.reconnects += 1
            self._emit(EventType.DISCONNECTED, reason=reason)
            self._wait(delay * random.uniform(0.5, 1.0))

    def _receive(self, ws: wsclient.WebSocket) -> str:
        while not self._stop.is_set():
            try:
                opcode, payload = ws.recv_data()
            except wsclient.WebSocketTimeoutException:
                if self._kick.is_set():
                    self._kick.clear()
                    return "reconnect requested"
                continue
            except Exception as e:  # noqa: BLE001 - closed, reset, protocol error: all mean reconnect
                return f"{type(e).__name__}"
            if opcode == wsclient.ABNF.OPCODE_CLOSE:
                return "closed by server"
            if opcode != wsclient.ABNF.OPCODE_TEXT:
                continue
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                continue
            event = parse_message(self.config.name, text, time.time())
            if event is not None:
                self._sink(event)
        return "stopped"

    def _wait(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()
