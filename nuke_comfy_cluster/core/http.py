"""HTTP to one ComfyUI server: one requests Session per server, explicit timeouts, one error tree.

Every failure leaves this module as a :mod:`core.errors` exception, translated in
exactly one place (:meth:`ServerConnection._request`). Idempotent GETs are retried
by urllib3 with exponential backoff and jitter; POSTs never are, because a POST
that timed out may still have reached the server (a resent ``POST /prompt`` would
render the frame twice): the dispatcher fails over instead.

Every request also has a TOTAL deadline (by default connect + read timeout). A read
timeout bounds each wait for a byte, so a server that trickles its answer (a
"slow loris": one byte every few seconds) would hold a request for minutes; a
watchdog thread shuts the request's socket down when its deadline passes, so the
blocked read returns at once and the request fails as :class:`ServerTimeout`.
Downloads extend their deadline by the total for every 64 KiB received: a big file
on a slow link finishes, a trickle does not. :meth:`ServerConnection.close` aborts
the requests still under way the same way, so closing never waits for a hung server.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import socket
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from .config import ServerConfig
from .errors import ServerError, ServerRejected, ServerTimeout, ServerUnavailable

log = logging.getLogger(__name__)

#: (connect, read) seconds. A hung (SIGSTOPped) server accepts TCP and then says
#: nothing, so the read timeout is what bounds a status poll.
DEFAULT_TIMEOUT: Tuple[float, float] = (3.05, 10.0)
STATUS_TIMEOUT: Tuple[float, float] = (2.0, 3.0)
#: a download's deadline moves on by its total every time this many bytes arrive
DOWNLOAD_PROGRESS_BYTES = 64 * 1024
#: uploads get extra time for their size at this rate (a slow VPN still finishes)
UPLOAD_MIN_RATE = 256 * 1024


def total_for(timeout: Tuple[float, float]) -> float:
    """The default total deadline of a request: what a server answering normally can take."""
    return float(timeout[0]) + float(timeout[1])


class _Watch:
    """One request's total deadline and the pooled connections it holds."""

    __slots__ = ("at", "conns", "fired", "done", "lock", "why")

    def __init__(self, at: float) -> None:
        self.at = at
        self.conns: List[Any] = []
        self.fired = False
        self.done = False
        self.why = ""
        self.lock = threading.Lock()

    def add(self, conn: Any) -> None:
        with self.lock:
            if not self.done:
                self.conns.append(conn)

    def remove(self, conn: Any) -> None:
        with self.lock:
            self.conns = [c for c in self.conns if c is not conn]

    def finish(self) -> None:
        with self.lock:
            self.done = True
            self.conns = []

    def fire(self, why: str) -> None:
        """Shut the request's sockets down: its blocked read returns at once."""
        with self.lock:
            if self.done or self.fired:
                return
            self.fired = True
            self.why = why
            for conn in self.conns:
                sock = getattr(conn, "sock", None)
                if sock is None:
                    continue  # still connecting: the connect timeout bounds that
                try:
                    # the plain socket's shutdown, also for TLS: SSLSocket.shutdown would
                    # unwrap the TLS object under the reading thread's feet
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except (OSError, TypeError, ValueError):
                    pass


class _Watchdog:
    """One lazily started thread firing the watches whose deadline passed (ends when idle)."""

    IDLE_EXIT_S = 5.0  # restarting it costs nothing; a closed cluster leaves no thread for long

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, seconds: float) -> _Watch:
        watch = _Watch(time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (watch.at, next(self._seq), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ncc-http-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def extend(self, watch: _Watch, seconds: float) -> None:
        # the old heap entry stays; _run re-queues a watch whose deadline moved on
        watch.at = max(watch.at, time.monotonic() + seconds)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(self.IDLE_EXIT_S)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                at, _, watch = self._heap[0]
                if watch.at > at:  # extended
                    heapq.heapreplace(self._heap, (watch.at, next(self._seq), watch))
                    continue
                delay = at - time.monotonic()
                if delay > 0:
                    # wake at least every second: finished requests leave the heap, and the
                    # thread ends soon after the last one (a closed cluster leaves no thread)
                    self._cond.wait(min(delay, 1.0))
                    continue
                heapq.heappop(self._heap)
            watch.fire("deadline")


_WATCHDOG = _Watchdog()
_current = threading.local()  # the watch of the request this thread is making


class _DeadlinePoolMixin:
    """Registers every connection a request takes from the pool with that request's watch."""

    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.add(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        # back in the pool, another request may take it: it is no longer ours to shut down
        watch = getattr(_current, "watch", None)
        if watch is not None and conn is not None:
            watch.remove(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _DeadlineHTTPPool(_DeadlinePoolMixin, HTTPConnectionPool):
    pass


class _DeadlineHTTPSPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    pass


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


def _dns_failure(exc: BaseException) -> bool:
    """True when the host name did not resolve (urllib3 wraps socket.gaierror a few levels down)."""
    seen, stack = set(), [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return True
        stack += [getattr(e, "reason", None), e.__cause__, e.__context__]
        stack += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    return False


def host_for_url(ip: str) -> str:
    """IPv6 literals need brackets inside a URL."""
    ip = ip.strip()
    if ":" in ip and not ip.startswith("["):
        return f"[{ip}]"
    return ip


def base_url(config: ServerConfig) -> str:
    return "{}://{}:{}".format(config.scheme or "http", host_for_url(config.ip), config.port)


def ws_url(config: ServerConfig, client_id: str) -> str:
    scheme = "wss" if (config.scheme or "http") == "https" else "ws"
    return f"{scheme}://{host_for_url(config.ip)}:{config.port}/ws?clientId={client_id}"


def auth_headers(config: ServerConfig) -> Dict[str, str]:
    """Headers a reverse proxy may require. Values are secrets: never log them."""
    headers = dict(config.headers or {})
    if config.token:
        headers.setdefault("Authorization", f"Bearer {config.token}")
    return headers


def _make_retry(retries: int, backoff: float) -> Retry:
    kw: Dict[str, Any] = dict(
        total=retries,
        connect=retries,
        read=0,  # a hung server must cost one read timeout, not several
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
    )
    try:
        return Retry(backoff_jitter=backoff, **kw)  # urllib3 >= 2
    except TypeError:  # urllib3 1.x, as some Nuke installs carry
        return Retry(**kw)


class ServerConnection:
    """HTTP access to one server. Thread-safe enough for our use: requests Sessions
    may be shared between threads for independent requests."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        timeout: Tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.config = config
        self.name = config.name
        self.base_url = base_url(config)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # a studio proxy must not swallow LAN traffic
        adapter = _DeadlineAdapter(max_retries=_make_retry(retries, backoff), pool_maxsize=8)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(auth_headers(config))
        #: requests sent, by "METHOD route" (for the status-layer request-rate figures)
        self.request_counts: Dict[str, int] = {}
        self._active: Set[_Watch] = set()
        self._active_lock = threading.Lock()

    def url(self, path: str) -> str:
        return "{}/{}".format(self.base_url, path.lstrip("/"))

    def ws_url(self, client_id: str) -> str:
        return ws_url(self.config, client_id)

    def close(self) -> None:
        """Close the session and abort the requests still under way (they fail at once).

        A later request opens a new connection, as with a plain requests Session."""
        with self._active_lock:
            active = list(self._active)
        for watch in active:
            watch.fire("closed")
        self.session.close()

    # -- requests --------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
        total: Optional[float] = None,
        stream_body: bool = False,
        **kw: Any,
    ) -> requests.Response:
        """One request, every failure translated here. ``total`` bounds the whole request
        (default connect + read); ``stream_body`` reads the body in chunks, each 64 KiB
        moving the deadline on (downloads)."""
        url = self.url(path)
        where = dict(server=self.name, url=url, job_id=job_id)
        route = "{} {}".format(method, path.split("?")[0].split("/")[0])
        self.request_counts[route] = self.request_counts.get(route, 0) + 1
        timeout = timeout or self.timeout
        total = total if total is not None else total_for(timeout)
        # a connect may not outlast the whole request
        timeout = (min(timeout[0], total), min(timeout[1], total))
        watch = _WATCHDOG.watch(total)
        with self._active_lock:
            self._active.add(watch)
        _current.watch = watch
        try:
            try:
                response = self.session.request(method, url, timeout=timeout, stream=stream_body, **kw)
                if stream_body:
                    self._read_body(response, watch, total)
            except Exception as e:
                if watch.fired:
                    raise self._abandoned(watch, total, where) from e
                raise self._translate(e, timeout, where) from e
            if watch.fired:  # a body cut short may still look complete (no Content-Length)
                raise self._abandoned(watch, total, where)
        finally:
            _current.watch = None
            watch.finish()
            with self._active_lock:
                self._active.discard(watch)
        if response.status_code >= 400:
            body: Any
            try:
                body = response.json()
            except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                body = response.text[:2000]
            hint = ""
            if response.status_code in (401, 403, 407):
                hint = " (refused our credentials: check the token / headers configured for this server)"
            raise ServerRejected(
                f"{self.name}: {method} {path} answered HTTP {response.status_code}{hint}",
                status=response.status_code,
                body=body,
                **where,
            )
        return response

    @staticmethod
    def _read_body(response: requests.Response, watch: _Watch, total: float) -> None:
        chunks = []
        for chunk in response.iter_content(DOWNLOAD_PROGRESS_BYTES):
            chunks.append(chunk)
            _WATCHDOG.extend(watch, total)
        # what requests itself does after reading a body, so .content / .json() work
        response._content = b"".join(chunks)
        response._content_consumed = True

    def _abandoned(self, watch: _Watch, total: float, where: Dict[str, Any]) -> ServerError:
        if watch.why == "closed":
            return ServerUnavailable(f"{self.name}: request abandoned: the connection was closed", **where)
        return ServerTimeout(
            f"{self.name}: no complete answer from {self.base_url} within {total:.0f} s "
            "(the server is trickling its answer, hung or overloaded)",
            **where,
        )

    def _translate(self, e: Exception, timeout: Tuple[float, float], where: Dict[str, Any]) -> Exception:
        """A requests/urllib3 exception -> our error tree (anything else is re-raised as is)."""
        if isinstance(e, requests.exceptions.ConnectTimeout):
            return ServerUnavailable(
                f"{self.name}: no connection to {self.base_url} within {timeout[0]:.0f} s (is the server up and reachable?)",
                **where,
            )
        if isinstance(e, (requests.exceptions.ReadTimeout, requests.exceptions.Timeout)):
            return self._timeout(timeout, where)
        if isinstance(e, requests.exceptions.SSLError):
            return ServerUnavailable(f"{self.name}: TLS error with {self.base_url}: {e}", **where)
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            # with Retry(read=0) urllib3 reports a read timeout as MaxRetryError -> ConnectionError
            if isinstance(getattr(e.args[0] if e.args else None, "reason", None), ReadTimeoutError):
                return self._timeout(timeout, where)
            if _dns_failure(e):
                return ServerUnavailable(f"{self.name}: DNS: no such host for {self.base_url}", **where)
            return ServerUnavailable(
                f"{self.name}: cannot connect to {self.base_url} (connection refused or dropped)", **where
            )
        if isinstance(e, requests.exceptions.RequestException):
            return ServerUnavailable(f"{self.name}: request to {where['url']} failed: {e}", **where)
        return e

    def _timeout(self, timeout: Optional[Tuple[float, float]], where: Dict[str, Any]) -> ServerTimeout:
        return ServerTimeout(
            f"{self.name}: no answer from {self.base_url} within {(timeout or self.timeout)[1]:.0f} s (server hung or overloaded)",
            **where,
        )

    def _json(self, response: requests.Response, path: str, job_id: Optional[str]) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
            raise ServerRejected(
                f"{self.name}: {path} answered a body that is not JSON",
                status=response.status_code,
                body=response.text[:2000],
                server=self.name,
                url=self.url(path),
                job_id=job_id,
            ) from e

    def get_json(
        self,
        path: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
        total: Optional[float] = None,
    ) -> Any:
        response = self._request("GET", path, params=params, timeout=timeout, job_id=job_id, total=total)
        return self._json(response, path, job_id)

    def post_json(
        self,
        path: str,
        data: Any = None,
        *,
        timeout: Optional[Tuple[float, float]] = None,
        job_id: Optional[str] = None,
        total: Optional[float] = None,
    ) -> Any:
        body = json.dumps(data if data is not None else {}).encode("utf-8")
        response = self._request(
            "POST",
            path,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            job_id=job_id,
            total=total,
        )
        return self._json(response, path, job_id)

    def get_bytes(
        self, path: str, params: Optional[Mapping[str, Any]] = None, *, timeout: Optional[Tuple[float, float]] = None
    ) -> bytes:
        return self._request("GET", path, params=params, timeout=timeout, stream_body=True).content

    def get_content(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Tuple[bytes, str]:
        """A file's bytes and the Content-Type the server gave (an HTML error page is no image)."""
        response = self._request("GET", path, params=params, stream_body=True)
        return response.content, response.headers.get("Content-Type", "")

    def upload_image(
        self, filename: str, data: bytes, *, subfolder: str = "", image_type: str = "input", overwrite: bool = True
    ) -> Dict[str, Any]:
        """``POST /upload/image``; returns ``{name, subfolder, type}`` (the server may rename)."""
        files = {"image": (filename, data, "application/octet-stream")}
        form = {"subfolder": subfolder, "type": image_type, "overwrite": "true" if overwrite else "false"}
        total = total_for(self.timeout) + len(data) / UPLOAD_MIN_RATE
        response = self._request("POST", "upload/image", files=files, data=form, total=total)
        result = self._json(response, "upload/image", None)
        if not isinstance(result, dict) or "name" not in result:
            raise ServerRejected(
                f"{self.name}: upload/image answered an unexpected body", body=result, server=self.name
            )
        return result
