"""One websocket per server with a stable client id, reconnecting with backoff.

The socket thread only parses and hands events to a sink (which must only
enqueue). ComfyUI drops BOTH sockets if a second one opens with the same clientId
before the first is closed, so the old socket is always closed before a new one
opens. Missed messages are not replayed by the server: the CONNECTED event after a
reconnect tells the dispatcher to reconcile through ``/history`` and ``/queue``.

Only JSON text frames are a sign of life. Binary frames are previews, and ComfyUI
sends each right after a ``progress`` text frame; binary frames arriving while no
text frame came for :data:`BINARY_ONLY_LIMIT_S` mean the events are not reaching
us (a broken server or proxy), so the socket reports DISCONNECTED (``stalled``)
although it stays open: the server stops showing "live", the pool polls it at the
status TTL and the dispatcher reconciles its jobs instead of waiting out the silence
limit of a live server. The next text frame reports CONNECTED (``reconnect``, so
the missed events are reconciled) and the server is live again.
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

#: binary frames with no text frame for this long: the event stream is not live
BINARY_ONLY_LIMIT_S = 5.0


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
        binary_only_limit: Optional[float] = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self._sink = sink
        self._connect_timeout = connect_timeout
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._binary_only_limit = BINARY_ONLY_LIMIT_S if binary_only_limit is None else binary_only_limit
        self._last_text_at = 0.0  # time.monotonic() of the last text frame
        self.stalled = False  # open, but only binary frames for longer than the limit
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
            self._last_text_at = time.monotonic()
            self.stalled = False
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
                if opcode == wsclient.ABNF.OPCODE_BINARY:
                    self._binary_frame()
                continue
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                continue
            self._text_frame()
            event = parse_message(self.config.name, text, time.time())
            if event is not None:
                self._sink(event)
        return "stopped"

    def _binary_frame(self) -> None:
        quiet = time.monotonic() - self._last_text_at
        if not self.stalled and quiet > self._binary_only_limit:
            self.stalled = True
            log.warning("%s: websocket sends only binary frames (no event for %.0f s)", self.config.name, quiet)
            self._emit(
                EventType.DISCONNECTED,
                reason=f"only binary frames for {quiet:.0f} s (no event)",
                stalled=True,
            )

    def _text_frame(self) -> None:
        self._last_text_at = time.monotonic()
        if self.stalled:
            self.stalled = False
            self._emit(EventType.CONNECTED, reconnect=True, resumed=True)

    @property
    def live(self) -> bool:
        """Open and carrying events."""
        return self.connected and not self.stalled

    def _wait(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()
