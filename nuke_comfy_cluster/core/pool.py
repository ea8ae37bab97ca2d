"""The server pool: configured servers, live status, balancing and change notifications.

Threads the pool owns once :meth:`ComfyUIServerPool.start` is called:

- one websocket thread per server (``websocket.ServerSocket``), whose callbacks only
  put events on a queue;
- one event thread that applies those events (``status`` pushes) and forwards them
  to listeners and prompt watchers;
- one status thread that polls, in parallel through a small executor, only the
  servers whose status is older than the TTL (push lost or never connected), so a
  hung server costs one timeout and never delays the others.

Readers on other threads (the UI, the CLI) get immutable :class:`PoolSnapshot`
objects, through :meth:`snapshot` or a listener.

The same server listed twice (``127.0.0.1`` and ``localhost``) is used once: the
later entry is marked a duplicate when the servers are set (address literals, no
DNS, so safe on the UI thread) and, once the pool runs, by a background check with
DNS and the servers' own identity (:mod:`.identity`). Either way a warning says so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from . import balancing, identity
from .config import ConfigLoad, ServerConfig, load_config
from .errors import NoServerAvailable
from .events import EventType, ServerEvent
from .http import STATUS_TIMEOUT
from .server import ComfyUIServer
from .state import PoolSnapshot, ServerSnapshot
from .websocket import ServerSocket

log = logging.getLogger(__name__)

SnapshotListener = Callable[[PoolSnapshot], None]
EventListener = Callable[[ServerEvent], None]

DEFAULT_STATUS_TTL = 5.0
#: with the websocket push connected, still poll this often to notice a hung server
LIVE_POLL_EVERY = 15.0


class ComfyUIServerPool:
    """All configured servers, seen as one cluster."""

    def __init__(
        self,
        configs: Optional[Sequence[ServerConfig]] = None,
        *,
        status_ttl: float = DEFAULT_STATUS_TTL,
        use_websocket: bool = True,
        client_id: Optional[str] = None,
        strategy: str = balancing.LEAST_LOADED,
    ) -> None:
        self.client_id = client_id or f"ncc-{uuid.uuid4().hex}"
        self.status_ttl = status_ttl
        self.use_websocket = use_websocket
        self.strategy = strategy
        self._lock = threading.RLock()
        self._servers: Dict[str, ComfyUIServer] = {}
        self._sockets: Dict[str, ServerSocket] = {}
        self._load: Optional[ConfigLoad] = None
        self._override: Optional[str] = None
        self._last_pick: Optional[str] = None
        self._listeners: List[SnapshotListener] = []
        self._event_listeners: List[EventListener] = []
        self._watchers: Dict[str, List[EventListener]] = {}
        self._events: queue.Queue[Optional[ServerEvent]] = queue.Queue()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._polls: Dict[str, Future] = {}
        self._duplicates: List[identity.Duplicate] = []
        self._identity_due = False
        self._running = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: List[threading.Thread] = []
        if configs is not None:
            self.set_servers(configs)

    # -- configuration -------------------------------------------------------------
    def load_configuration(self, environ: Optional[Mapping[str, str]] = None) -> ConfigLoad:
        """Read the configuration the environment gives and apply it. Never raises for bad input."""
        loaded = load_config(environ)
        self.set_servers(loaded.servers, loaded)
        return loaded

    @property
    def config_load(self) -> Optional[ConfigLoad]:
        return self._load

    def set_servers(self, configs: Sequence[ServerConfig], loaded: Optional[ConfigLoad] = None) -> None:
        """Replace the server list, keeping the runtime state of servers that stay the same."""
        with self._lock:
            old = self._servers
            new: Dict[str, ComfyUIServer] = {}
            for config in configs:
                existing = old.get(config.name)
                new[config.name] = existing.reconfigure(config) if existing else ComfyUIServer(config)
            removed = [s for name, s in old.items() if new.get(name) is not s]
            self._servers = new
            self._load = loaded
            if self._override is not None and self._override not in new:
                self._override = None
            self._identity_due = True
        self._apply_duplicates(identity.find_duplicates(s for s in new.values() if s.enabled))
        for server in removed:
            self._stop_socket(server.name)
            server.close()
        if self._running:
            for server in new.values():
                self._start_socket(server)
            self._wake.set()
        self._notify()

    # -- servers -------------------------------------------------------------------
    @property
    def servers(self) -> List[ComfyUIServer]:
        with self._lock:
            return list(self._servers.values())

    def get_server_by_name(self, name: str) -> Optional[ComfyUIServer]:
        with self._lock:
            return self._servers.get(name)

    def _require(self, name: str) -> ComfyUIServer:
        server = self.get_server_by_name(name)
        if server is None:
            known = ", ".join(self._servers) or "none"
            raise NoServerAvailable(f"No server named {name!r} is configured (configured: {known})")
        return server

    def set_enabled(self, name: str, enabled: bool) -> None:
        server = self._require(name)
        server.enabled = enabled
        # the entry kept for a server listed twice may change with what is enabled
        self._apply_duplicates(identity.find_duplicates(s for s in self.servers if s.enabled))
        with self._lock:
            self._identity_due = True
        if enabled:
            self._wake.set()
        self._notify()

    # -- one server listed twice ---------------------------------------------------
    @property
    def duplicates(self) -> List[identity.Duplicate]:
        """Entries found to name a server listed before them (unused while so)."""
        with self._lock:
            return list(self._duplicates)

    def _apply_duplicates(self, found: List[identity.Duplicate], *, merge: bool = False) -> None:
        """Mark the later entries of servers listed twice as unused (and stop their sockets)."""
        with self._lock:
            if merge:
                known = {d.name for d in self._duplicates}
                found = list(self._duplicates) + [d for d in found if d.name not in known]
            changed = [d for d in found if d not in self._duplicates]
            self._duplicates = list(found)
            marked = {d.name: d for d in found if d.certain}
            servers = list(self._servers.values())
        for server in servers:
            dup = marked.get(server.name)
            if dup is not None:
                if server.duplicate_of != dup.same_as:
                    server.mark_duplicate(dup.same_as, dup.message)
                    self._stop_socket(server.name)
            elif server.duplicate_of is not None:
                server.mark_duplicate(None)
        for dup in changed:
            log.warning("%s", dup.message)

    def _check_identity(self) -> None:
        """DNS and the servers' own answers (pool worker thread): duplicates literals missed."""
        candidates = [s for s in self.servers if s.enabled and s.duplicate_of is None]
        try:
            # only certain ones: identical studio boxes must never be merged on a guess
            found = [d for d in identity.check_duplicates(candidates, timeout=sum(STATUS_TIMEOUT)) if d.certain]
        except Exception:  # noqa: BLE001 - a failed check must not stop the status thread
            log.exception("duplicate-server check failed")
            return
        if found:
            self._apply_duplicates(found, merge=True)
            self._notify()

    def set_priority(self, name: str, priority: int) -> None:
        self._require(name).priority = priority
        self._notify()

    @property
    def override(self) -> Optional[str]:
        """The server pinned for submissions that do not choose one (None = automatic)."""
        return self._override

    def set_override(self, name: Optional[str]) -> None:
        if name is not None:
            self._require(name)
        self._override = name
        self._notify()

    # -- status --------------------------------------------------------------------
    def snapshot(self) -> PoolSnapshot:
        now = time.time()
        servers = tuple(s.get_status() for s in self.servers)
        loaded = self._load
        return PoolSnapshot(
            servers=servers,
            source=loaded.notice if loaded is not None else "",
            warnings=(tuple(loaded.warnings) if loaded is not None else ()) + tuple(d.message for d in self.duplicates),
            errors=tuple(loaded.errors) if loaded is not None else (),
            next_server=balancing.choose(servers, self.strategy, now=now, last_pick=self._last_pick),
            taken_at=now,
        )

    def _ensure_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ncc-status")
            return self._executor

    def _poll(self, server: ComfyUIServer) -> Future:
        """Start a poll of one server unless one is already under way."""
        with self._lock:
            current = self._polls.get(server.name)
            if current is not None and not current.done():
                return current
            future = self._ensure_executor().submit(server.update_status)
            self._polls[server.name] = future
            return future

    def update_all_server_status(self, force: bool = True, timeout: Optional[float] = None) -> PoolSnapshot:
        """Poll servers in parallel (all of them, or with ``force=False`` those older than
        the TTL) and wait at most about one status timeout, whatever hangs."""
        now = time.time()
        futures = [
            self._poll(s)
            for s in self.servers
            if s.enabled and s.duplicate_of is None and (force or s.status_age(now) >= self.status_ttl)
        ]
        if futures:
            wait(futures, timeout=timeout if timeout is not None else sum(STATUS_TIMEOUT) * 2 + 1.0)
        self._notify()
        return self.snapshot()

    # -- balancing -----------------------------------------------------------------
    def get_available_server(
        self, strategy: Optional[str] = None, exclude: Iterable[str] = ()
    ) -> Optional[ComfyUIServer]:
        """The server a single prompt should go to now, or None when none is available."""
        snaps = [s.get_status() for s in self.servers]
        name = balancing.choose(
            snaps, strategy or self.strategy, now=time.time(), last_pick=self._last_pick, exclude=exclude
        )
        if name is None:
            return None
        self._last_pick = name
        return self.get_server_by_name(name)

    def choose_server(
        self, server: Optional[str] = None, *, strategy: Optional[str] = None, exclude: Iterable[str] = ()
    ) -> ComfyUIServer:
        """Like :meth:`get_available_server`, honouring a pinned server (argument, else the
        panel override) and raising :class:`NoServerAvailable` with the reason."""
        pinned = server or self._override
        now = time.time()
        if pinned:
            chosen = self._require(pinned)
            reason = chosen.get_status().unavailable_reason(now)
            if reason is not None:
                raise NoServerAvailable(
                    f"Server {pinned!r} was chosen for this submission but is not available: {reason}",
                    server=pinned,
                    url=chosen.url,
                )
            return chosen
        picked = self.get_available_server(strategy, exclude)
        if picked is None:
            lines = ["{} ({})".format(s.name, s.unavailable_reason(now) or "excluded") for s in self.snapshot().servers]
            raise NoServerAvailable("No ComfyUI server is available: {}".format("; ".join(lines) or "none configured"))
        return picked

    # -- events --------------------------------------------------------------------
    def add_listener(self, callback: SnapshotListener) -> None:
        """Called with a fresh PoolSnapshot after every change, from a pool thread: only enqueue."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: SnapshotListener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def add_event_listener(self, callback: EventListener) -> None:
        with self._lock:
            self._event_listeners.append(callback)

    def remove_event_listener(self, callback: EventListener) -> None:
        with self._lock:
            if callback in self._event_listeners:
                self._event_listeners.remove(callback)

    def watch_prompt(self, prompt_id: str, callback: EventListener) -> None:
        """Route events carrying ``prompt_id`` to ``callback`` until :meth:`unwatch_prompt`."""
        with self._lock:
            self._watchers.setdefault(prompt_id, []).append(callback)

    def unwatch_prompt(self, prompt_id: str) -> None:
        with self._lock:
            self._watchers.pop(prompt_id, None)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        if not listeners:
            return
        snap = self.snapshot()
        for callback in listeners:
            try:
                callback(snap)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the pool
                log.exception("pool listener failed")

    def _sink(self, event: ServerEvent) -> None:
        self._events.put(event)

    def _event_loop(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            self._apply_event(event)

    def _apply_event(self, event: ServerEvent) -> None:
        server = self.get_server_by_name(event.server)
        changed = False
        if server is not None:
            if event.type is EventType.STATUS and event.queue_remaining is not None:
                server.apply_push(event.queue_remaining, event.at)
                changed = True
                if server.api_failed:
                    self._poll(server)  # the socket lives: see whether the API does again
            elif event.type is EventType.CONNECTED:
                server.live = True
                changed = True
                if event.data.get("reconnect") and not event.data.get("resumed"):
                    server.object_info.invalidate()  # a restart drops every socket
                self._poll(server)  # the push may have been lost: learn the queue now
            elif event.type is EventType.DISCONNECTED:
                server.live = False
                changed = True
                if not event.data.get("stalled"):
                    server.object_info.invalidate()
                self._poll(server)
        with self._lock:
            listeners = list(self._event_listeners)
            watchers = list(self._watchers.get(event.prompt_id, ())) if event.prompt_id else []
        for callback in listeners + watchers:
            try:
                callback(event)
            except Exception:  # noqa: BLE001
                log.exception("event listener failed")
        if changed:
            self._notify()

    # -- threads -------------------------------------------------------------------
    def _start_socket(self, server: ComfyUIServer) -> None:
        if not self.use_websocket or not server.enabled or server.duplicate_of is not None:
            return
        with self._lock:
            if not self._running or server.name in self._sockets:
                # not running: the status loop may still be finishing a turn while stop() runs,
                # and a socket it started now would reconnect forever, owned by nobody
                return
            sock = ServerSocket(server.config, self.client_id, self._sink)
            self._sockets[server.name] = sock
        sock.start()

    def _stop_socket(self, name: str) -> None:
        with self._lock:
            sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.stop()

    def reconnect(self, name: str) -> None:
        with self._lock:
            sock = self._sockets.get(name)
        if sock is not None:
            sock.reconnect_now()

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            with self._lock:
                identity_due, self._identity_due = self._identity_due, False
            if identity_due:
                self._ensure_executor().submit(self._check_identity)
            for server in self.servers:
                if self._stop.is_set():
                    return
                if not server.enabled or server.duplicate_of is not None:
                    continue
                if self.use_websocket:
                    self._start_socket(server)
                every = LIVE_POLL_EVERY if server.live else self.status_ttl
                if server.api_failed and server.poll_age(now) >= self.status_ttl:
                    # pushes keep status_age fresh, but only a poll proves the API again
                    future = self._poll(server)
                    future.add_done_callback(lambda _f: self._notify())
                elif server.status_age(now) >= every or server.last_status_check is None:
                    future = self._poll(server)
                    future.add_done_callback(lambda _f: self._notify())
            self._wake.wait(min(1.0, self.status_ttl / 2))
            self._wake.clear()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start websockets and background status polling. Idempotent."""
        if self._running:
            return
        self._running = True
        self._stop.clear()
        for target, name in ((self._event_loop, "ncc-events"), (self._status_loop, "ncc-status-loop")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread the pool started and wait for them."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._stop.set()
        self._wake.set()
        for name in list(self._sockets):
            self._stop_socket(name)
        self._events.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        with self._lock:
            executor, self._executor = self._executor, None
            self._polls = {}
        if executor is not None:
            executor.shutdown(wait=False)
        self._events = queue.Queue()

    def close(self) -> None:
        self.stop()
        for server in self.servers:
            server.close()

    def __enter__(self) -> ComfyUIServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def server_snapshots(self) -> List[ServerSnapshot]:
        return [s.get_status() for s in self.servers]
