"""One ComfyUI server: its configuration, connection and observed state.

State changes happen under one lock; readers on other threads get immutable
:class:`~.state.ServerSnapshot` objects from :meth:`ComfyUIServer.get_status`.

Failures are counted per request kind (:data:`SUBMIT`, :data:`RESULTS`,
:data:`STATUS`, :data:`GENERAL`): a success of one kind proves nothing about
another, and a websocket ``status`` push proves only the socket. So a server that
answers ``POST /prompt`` with a wrong-shaped body goes into cooldown although its
websocket keeps pushing, and a push never makes a server that failed its last HTTP
poll look reachable again (the pool polls it at once instead).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from .compatibility import ObjectInfoCache
from .config import ServerConfig
from .errors import ClusterError, MalformedResponse, ServerError, ServerRejected, ServerTimeout
from .http import STATUS_TIMEOUT, ServerConnection
from .state import DeviceInfo, ServerCounters, ServerSnapshot, ServerStatus

#: consecutive failures before a server is put in cooldown, and the cooldown bounds
COOLDOWN_AFTER = 2
COOLDOWN_MIN_S = 5.0
COOLDOWN_MAX_S = 120.0
#: device/VRAM/version are refreshed this often, queue length every status TTL
SYSTEM_STATS_EVERY_S = 30.0

#: request kinds whose failures are counted apart
SUBMIT = "submit"  # POST /prompt
RESULTS = "results"  # /history, /queue reconciliation, /view downloads
STATUS = "status"  # the status poll (GET /prompt): only a missed total deadline counts
GENERAL = "request"  # anything else; reset only by a completed frame


def _parse_device(stats: Any) -> DeviceInfo:
    if not isinstance(stats, dict):
        raise MalformedResponse("system_stats is not an object")
    system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
    devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
    dev = devices[0] if devices and isinstance(devices[0], dict) else {}

    def _int(v: Any) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    argv = system.get("argv") if isinstance(system.get("argv"), list) else []
    output_directory = ""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--output-directory" and isinstance(argv[i + 1], str):
            output_directory = argv[i + 1]
    return DeviceInfo(
        name=str(dev.get("name", "")),
        type=str(dev.get("type", "")),
        vram_total=_int(dev.get("vram_total")),
        vram_free=_int(dev.get("vram_free")),
        comfyui_version=str(system.get("comfyui_version", "")),
        python_version=str(system.get("python_version", "")).split(" ")[0],
        output_directory=output_directory,
    )


def _identity(device: DeviceInfo) -> Tuple[str, ...]:
    """What changes only when another ComfyUI answers at an address (free memory aside)."""
    return (device.name, device.type, str(device.vram_total), device.comfyui_version, device.python_version)


def parse_queue_remaining(body: Any) -> int:
    """``GET /prompt`` -> ``exec_info.queue_remaining`` (running + pending)."""
    try:
        value = body["exec_info"]["queue_remaining"]
    except (KeyError, TypeError) as e:
        raise MalformedResponse("no exec_info.queue_remaining") from e
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedResponse("queue_remaining is not a count")
    return value


def parse_queue(body: Any) -> Tuple[list, list]:
    """``GET /queue`` -> (running items, pending items); each item ``[number, prompt_id, ...]``."""
    if not isinstance(body, dict):
        raise MalformedResponse("queue is not an object")
    running = body.get("queue_running")
    pending = body.get("queue_pending")
    if not isinstance(running, list) or not isinstance(pending, list):
        raise MalformedResponse("queue_running/queue_pending are not lists")
    for item in running + pending:
        if not isinstance(item, list) or len(item) < 2 or not isinstance(item[1], str):
            raise MalformedResponse("queue item is not [number, prompt_id, ...]")
    return running, pending


class ComfyUIServer:
    """A configured server plus what we observed of it."""

    def __init__(self, config: ServerConfig, connection: Optional[ServerConnection] = None) -> None:
        self.config = config
        self.connection = connection or ServerConnection(config)
        self._lock = threading.RLock()
        self._enabled = config.enabled
        self._priority = config.priority
        self._status = ServerStatus.UNKNOWN if config.enabled else ServerStatus.DISABLED
        self._queue_remaining = 0
        self._queue_running = 0
        self._queue_pending = 0
        self._observed_at: Optional[float] = None  # time.time() of the last queue observation
        self._last_check: Optional[float] = None  # time.time() of the last answer of any kind
        self._latency_ms: Optional[float] = None
        self._last_error: Optional[str] = None
        self._device = DeviceInfo()
        self._device_at: float = 0.0
        self._failures_by_kind: Dict[str, int] = {}
        self._cooldown_until: Optional[float] = None
        self._cooldown_kind: Optional[str] = None  # the kind of request whose failures began it
        self._polled_at: Optional[float] = None  # time.time() of the last poll attempt
        self._duplicate_of: Optional[str] = None
        #: answers to /object_info/{class}, dropped when the server may have restarted
        self.object_info = ObjectInfoCache()
        self._dispatches = 0
        self._failures = 0
        self._completed = 0
        self._latency_mean: Optional[float] = None
        self._in_flight: Deque[float] = deque()  # response times of our submits not yet seen
        self.live = False  # websocket push connected

    # -- identity ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def ip(self) -> str:
        return self.config.ip

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def dir_local(self) -> str:
        return self.config.dir_local

    @property
    def dir_remote(self) -> str:
        return self.config.dir_remote

    @property
    def url(self) -> str:
        return self.connection.base_url

    @property
    def priority(self) -> int:
        return self._priority

    @priority.setter
    def priority(self, value: int) -> None:
        with self._lock:
            self._priority = int(value)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        with self._lock:
            self._enabled = bool(value)
            if not value or self._duplicate_of is not None:
                self._status = ServerStatus.DISABLED
            elif self._status is ServerStatus.DISABLED:
                self._status = ServerStatus.UNKNOWN

    @property
    def duplicate_of(self) -> Optional[str]:
        """The name of the entry this one is the same server as (it is then not used)."""
        return self._duplicate_of

    def mark_duplicate(self, of: Optional[str], why: str = "") -> None:
        """Leave this entry unused because it is the same server as ``of`` (None: use it again)."""
        with self._lock:
            self._duplicate_of = of
            if of is not None:
                self._status = ServerStatus.DISABLED
                self._last_error = why or f"the same server as {of}: used once, through {of}"
            elif self._status is ServerStatus.DISABLED and self._enabled:
                self._status = ServerStatus.UNKNOWN
                self._last_error = None

    @property
    def consecutive_failures(self) -> int:
        """The longest run of failures of one request kind (what the cooldown follows)."""
        with self._lock:
            return max(self._failures_by_kind.values(), default=0)

    def failures_of(self, kind: str) -> int:
        with self._lock:
            return self._failures_by_kind.get(kind, 0)

    @property
    def status(self) -> ServerStatus:
        return self._status

    @property
    def queue_length(self) -> int:
        return self._queue_remaining

    @property
    def last_status_check(self) -> Optional[float]:
        return self._last_check

    def status_age(self, now: Optional[float] = None) -> float:
        """Seconds since the queue was last observed (inf if never)."""
        if self._observed_at is None:
            return float("inf")
        return (now if now is not None else time.time()) - self._observed_at

    # -- observations ----------------------------------------------------------------
    def _set_queue(
        self, remaining: int, observed_at: float, running: Optional[int] = None, *, proves_api: bool = True
    ) -> None:
        self._queue_remaining = remaining
        if running is None:
            running = 1 if remaining > 0 else 0
        self._queue_running = running
        self._queue_pending = max(0, remaining - running)
        self._observed_at = observed_at
        while self._in_flight and self._in_flight[0] <= observed_at:
            self._in_flight.popleft()
        if not self._enabled or self._duplicate_of is not None:
            return
        if not proves_api and self._status in (ServerStatus.OFFLINE, ServerStatus.ERROR):
            return  # the socket lives, but the API failed last time: only HTTP can clear that
        self._status = ServerStatus.BUSY if remaining > 0 else ServerStatus.ONLINE

    def apply_push(self, queue_remaining: int, at: Optional[float] = None) -> None:
        """A websocket ``status`` broadcast: the live load signal.

        It proves the socket, not the API: failure counts, the last error and an
        offline/error status stay until an HTTP request succeeds."""
        now = at if at is not None else time.time()
        with self._lock:
            self._set_queue(queue_remaining, now, proves_api=False)
            self._last_check = now

    @property
    def api_failed(self) -> bool:
        """The last HTTP status poll failed (a push does not clear this)."""
        return self._status in (ServerStatus.OFFLINE, ServerStatus.ERROR)

    def poll_age(self, now: Optional[float] = None) -> float:
        """Seconds since the last status poll was started (inf if never)."""
        if self._polled_at is None:
            return float("inf")
        return (now if now is not None else time.time()) - self._polled_at

    def _record_error(self, exc: BaseException, now: float) -> None:
        self._last_error = str(exc)
        if self._enabled:
            if isinstance(exc, ServerRejected) and exc.status is not None:
                self._status = ServerStatus.ERROR
            elif isinstance(exc, ServerError):
                self._status = ServerStatus.OFFLINE
            else:
                self._status = ServerStatus.ERROR

    def update_status(self, *, with_system_stats: Optional[bool] = None) -> ServerSnapshot:
        """Poll the server now (``GET /prompt``, plus ``/system_stats`` when due).

        Never raises for server trouble: the snapshot says what happened.
        """
        if not self._enabled or self._duplicate_of is not None:
            return self.get_status()
        started = time.monotonic()
        now = time.time()
        self._polled_at = now
        try:
            body = self.connection.get_json("prompt", timeout=STATUS_TIMEOUT)
            try:
                remaining = parse_queue_remaining(body)
            except ValueError as e:
                raise ServerRejected(
                    f"{self.name}: GET /prompt answered an unexpected body ({e})",
                    server=self.name,
                    url=self.connection.url("prompt"),
                ) from e
            latency = (time.monotonic() - started) * 1000.0
            due = with_system_stats if with_system_stats is not None else now - self._device_at > SYSTEM_STATS_EVERY_S
            device = None
            if due:
                try:
                    device = _parse_device(self.connection.get_json("system_stats", timeout=STATUS_TIMEOUT))
                except (ClusterError, ValueError):
                    device = None  # queue is what matters; device info is a nicety
        except ClusterError as e:
            with self._lock:
                self._record_error(e, now)
            if isinstance(e, ServerTimeout):
                # a hung or trickling API: counted, so a live websocket cannot hide it
                self.record_failure(str(e), kind=STATUS)
            return self.get_status()
        with self._lock:
            came_back = self._status not in (ServerStatus.ONLINE, ServerStatus.BUSY)
            self._set_queue(remaining, now)
            self._last_check = now
            self._last_error = None
            self._latency_ms = latency
            self._end_run(STATUS)
            if device is not None:
                if self._device_at and _identity(device) != _identity(self._device):
                    came_back = True  # another ComfyUI (upgraded, moved) answers there now
                self._device = device
                self._device_at = now
        if came_back:
            # first answer, or answering again after a failure: it may have restarted with
            # other nodes and models, so the compatibility cache must be asked again
            self.object_info.invalidate()
        return self.get_status()

    def update_queue_detail(self) -> Tuple[list, list]:
        """``GET /queue``: running and pending items (heavy; for reconciliation and cancel only)."""
        now = time.time()
        body = self.connection.get_json("queue", timeout=STATUS_TIMEOUT)
        try:
            running, pending = parse_queue(body)
        except ValueError as e:
            raise ServerRejected(f"{self.name}: GET /queue answered an unexpected body ({e})", server=self.name) from e
        with self._lock:
            self._set_queue(len(running) + len(pending), now, running=len(running))
            self._last_check = now
        return running, pending

    def device_info(self, refresh: bool = False) -> DeviceInfo:
        """Device, versions and output directory; fetched once (network: never on a UI thread)."""
        if refresh or not self._device_at:
            device = _parse_device(self.connection.get_json("system_stats", timeout=STATUS_TIMEOUT))
            with self._lock:
                self._device = device
                self._device_at = time.time()
        return self._device

    def test_connection(self) -> Tuple[bool, str]:
        """A fresh round trip with ``/system_stats``: (ok, a sentence for the user)."""
        started = time.monotonic()
        try:
            stats = self.connection.get_json("system_stats", timeout=STATUS_TIMEOUT)
            device = _parse_device(stats)
        except ClusterError as e:
            return False, str(e)
        except ValueError as e:
            return False, f"{self.name}: /system_stats answered an unexpected body ({e})"
        ms = (time.monotonic() - started) * 1000.0
        with self._lock:
            self._device = device
            self._device_at = time.time()
            self._latency_ms = ms
        version = f" ComfyUI {device.comfyui_version}" if device.comfyui_version else ""
        return True, "{}: reachable in {:.0f} ms,{} on {}".format(
            self.name, ms, version, device.name or "unknown device"
        )

    # -- balancing inputs ---------------------------------------------------------
    def note_submitted(self, at: Optional[float] = None) -> None:
        """We just had a prompt accepted: count it until the server reports its queue again."""
        with self._lock:
            self._in_flight.append(at if at is not None else time.time())
            self._dispatches += 1
            self._end_run(SUBMIT)

    def record_ok(self, kind: str) -> None:
        """A request of ``kind`` succeeded: that kind's failure run (and a cooldown it began) is over."""
        with self._lock:
            self._end_run(kind)

    def _end_run(self, kind: str) -> None:
        self._failures_by_kind.pop(kind, None)
        if self._cooldown_kind == kind:
            self._cooldown_until = None
            self._cooldown_kind = None

    def record_success(self, latency_s: Optional[float] = None) -> None:
        """A frame rendered and came back: every kind of request worked."""
        with self._lock:
            self._failures_by_kind.clear()
            self._cooldown_until = self._cooldown_kind = None
            self._completed += 1
            if latency_s is not None:
                ms = latency_s * 1000.0
                self._latency_mean = ms if self._latency_mean is None else 0.8 * self._latency_mean + 0.2 * ms

    def record_failure(self, reason: str, now: Optional[float] = None, *, kind: str = GENERAL) -> None:
        """An infrastructure failure of a ``kind`` of request; a run of them starts a cooldown.

        Only a success of the same kind (or a completed frame) ends the run."""
        now = now if now is not None else time.time()
        with self._lock:
            self._failures += 1
            self._last_error = reason
            if self._cooldown_until is not None and now < self._cooldown_until:
                # requests sent before the cooldown began, failing together (a server that
                # dies fails every prompt we had there): one failure, not a longer cooldown
                return
            run = self._failures_by_kind.get(kind, 0) + 1
            self._failures_by_kind[kind] = run
            if run >= COOLDOWN_AFTER:
                extra = run - COOLDOWN_AFTER
                self._cooldown_until = now + min(COOLDOWN_MAX_S, COOLDOWN_MIN_S * (2**extra))
                self._cooldown_kind = kind

    def mark_unreachable(self, reason: str) -> None:
        with self._lock:
            self._last_error = reason
            if self._enabled and self._duplicate_of is None:
                self._status = ServerStatus.OFFLINE

    def clear_cooldown(self) -> None:
        with self._lock:
            self._cooldown_until = self._cooldown_kind = None
            self._failures_by_kind.clear()

    def is_available(self, now: Optional[float] = None) -> bool:
        return self.get_status().is_available(now if now is not None else time.time())

    def get_status(self) -> ServerSnapshot:
        """An immutable snapshot, safe to hand to any thread."""
        with self._lock:
            return ServerSnapshot(
                name=self.config.name,
                host=self.config.ip,
                port=self.config.port,
                url=self.connection.base_url,
                priority=self._priority,
                enabled=self._enabled,
                status=self._status,
                queue_running=self._queue_running,
                queue_pending=self._queue_pending,
                in_flight=len(self._in_flight),
                latency_ms=self._latency_ms,
                last_status_check=self._last_check,
                last_error=self._last_error,
                cooldown_until=self._cooldown_until,
                device=self._device,
                counters=ServerCounters(
                    dispatches=self._dispatches,
                    failures=self._failures,
                    completed=self._completed,
                    mean_latency_ms=self._latency_mean,
                ),
                dir_local=self.config.dir_local,
                dir_remote=self.config.dir_remote,
                live=self.live,
            )

    def reconfigure(self, config: ServerConfig) -> ComfyUIServer:
        """A server for a changed config entry, keeping counters when the address is the same."""
        same_address = (config.ip, config.port, config.scheme, config.token, config.headers) == (
            self.config.ip,
            self.config.port,
            self.config.scheme,
            self.config.token,
            self.config.headers,
        )
        if not same_address:
            return ComfyUIServer(config)
        self.config = config
        self.connection.config = config
        with self._lock:
            self._priority = config.priority
        self.enabled = config.enabled
        return self

    def close(self) -> None:
        self.connection.close()

    def __repr__(self) -> str:  # no secrets
        return f"ComfyUIServer({self.name!r}, {self.url}, {self._status.value})"
