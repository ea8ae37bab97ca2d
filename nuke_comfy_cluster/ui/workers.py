"""Threads for the UI: blocking work on QThreads, core callbacks turned into queued signals.

The GUI thread never does network I/O. Three kinds of helpers:

- :class:`TaskRunner` runs a blocking callable (refresh, test connection, submit,
  reload the pool) on its own :class:`QtCore.QThread` and hands the result, or the
  error as a sentence plus traceback, back by a signal on the GUI thread.
- :class:`SnapshotBridge` is what a pool listener calls from a pool thread: it
  keeps only the newest :class:`PoolSnapshot` and delivers it on the GUI thread,
  at most ten times a second, so a burst of status pushes costs one update.
- :class:`BatchBridge` does the same per batch for :class:`BatchSnapshot`, and
  :class:`BatchRelay` for batches announced to a panel.

A bridge is what core threads hold, never the widget it serves: it is a child of
that widget, so holding it neither keeps the widget alive nor makes a core thread
the one that frees it. Emitting and closing are exclusive (one lock), and a bridge
closes itself when Qt destroys it: once :meth:`_Bridge.close` returns or the
object is being destroyed, no core thread is inside ``emit`` on it.

Shutdown: every QThread started here is remembered in a module-level set until it
has finished, so no QThread object is ever destroyed while running (the
"QThread: Destroyed while thread is still running" abort). :func:`wait_for_tasks`
waits for them; the work itself is bounded by network timeouts.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set

from ..core.errors import user_message
from .qt import QtCore, Signal, apply_binding_fixes, emit

log = logging.getLogger(__name__)

#: QThreads that may still run; a strong reference keeps each alive until it finished
_live_threads: Set[_TaskThread] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True)
class TaskError:
    """A task failed: a sentence for the user and the traceback for "details"."""

    message: str
    traceback: str
    exception: Optional[BaseException] = None

    def __str__(self) -> str:
        return self.message


class _TaskThread(QtCore.QThread):
    """Runs one callable; ``completed(result, error)`` is emitted from the thread."""

    completed = Signal(object, object)

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.setObjectName(f"ncc-{name}")
        self.task_name = name
        self._fn = fn
        self.started_at = time.monotonic()

    def run(self) -> None:
        result: Any = None
        error: Optional[TaskError] = None
        try:
            result = self._fn()
        except BaseException as e:  # noqa: BLE001 - reported to the GUI, never lost
            error = TaskError(user_message(e), traceback.format_exc(), e)
        self._fn = None  # drop references the closure holds (pool, dialog data) early
        emit(self.completed, result, error)


class _Receiver(QtCore.QObject):
    """Lives on the GUI thread as a child of the runner (itself a child of a widget):
    when the widget is destroyed the connection goes with it, so a late result never
    reaches a deleted widget; after :meth:`TaskRunner.shutdown` results are dropped."""

    def __init__(
        self,
        runner: TaskRunner,
        on_done: Optional[Callable[[Any], None]],
        on_error: Optional[Callable[[TaskError], None]],
    ) -> None:
        super().__init__(runner)
        self._runner = runner
        self._on_done = on_done
        self._on_error = on_error

    def deliver(self, result: Any, error: Optional[TaskError]) -> None:
        try:
            if self._runner.closed:
                return
            if error is None:
                if self._on_done is not None:
                    self._on_done(result)
            elif self._on_error is not None:
                self._on_error(error)
            else:
                log.warning("background task failed: %s\n%s", error.message, error.traceback)
        finally:
            self._on_done = self._on_error = None
            self._runner = None  # type: ignore[assignment]
            self.deleteLater()


def _forget(thread: _TaskThread) -> None:
    with _live_lock:
        _live_threads.discard(thread)
    thread.deleteLater()


class TaskRunner(QtCore.QObject):
    """Starts named tasks on QThreads and reports them on the GUI thread.

    ``task_started(name)`` / ``task_finished(name)`` let widgets show a busy state.
    At most one task per name runs at a time when ``exclusive`` is asked for.
    """

    task_started = Signal(str)
    task_finished = Signal(str)

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        apply_binding_fixes()
        self._threads: Dict[int, _TaskThread] = {}
        self._closed = False

    def run(
        self,
        name: str,
        fn: Callable[[], Any],
        on_done: Optional[Callable[[Any], None]] = None,
        on_error: Optional[Callable[[TaskError], None]] = None,
        *,
        exclusive: bool = False,
    ) -> bool:
        """Run ``fn()`` on a new QThread. Returns False (and runs nothing) when closed,
        or when ``exclusive`` and a task of that name is still running."""
        if self._closed or (exclusive and self.is_running(name)):
            return False
        thread = _TaskThread(name, fn)
        receiver = _Receiver(self, on_done, on_error)
        thread.completed.connect(receiver.deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        thread.finished.connect(self._thread_finished, QtCore.Qt.ConnectionType.QueuedConnection)
        with _live_lock:
            _live_threads.add(thread)
        self._threads[id(thread)] = thread
        thread.start()
        emit(self.task_started, name)
        return True

    def _thread_finished(self) -> None:
        done = [key for key, t in self._threads.items() if t.isFinished()]
        for key in done:
            thread = self._threads.pop(key)
            emit(self.task_finished, thread.task_name)
            _forget(thread)

    def is_running(self, name: Optional[str] = None) -> bool:
        return any(not t.isFinished() and (name is None or t.task_name == name) for t in list(self._threads.values()))

    def running_names(self) -> List[str]:
        return [t.task_name for t in self._threads.values() if not t.isFinished()]

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Refuse new tasks and wait for the running ones. True when all have finished."""
        self._closed = True
        deadline = time.monotonic() + timeout
        ok = True
        for thread in list(self._threads.values()):
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not thread.wait(left_ms):
                ok = False
                log.warning(
                    "task %s still running after %.0f s; it finishes in the background", thread.task_name, timeout
                )
        self._thread_finished()
        return ok

    @property
    def closed(self) -> bool:
        return self._closed


def wait_for_tasks(timeout: float = 10.0) -> bool:
    """Wait for every task thread of the process (call before the application object goes)."""
    deadline = time.monotonic() + timeout
    with _live_lock:
        threads = list(_live_threads)
    ok = True
    for thread in threads:
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        ok = thread.wait(left_ms) and ok
    return ok


def running_task_count() -> int:
    with _live_lock:
        return sum(1 for t in _live_threads if not t.isFinished())


#: the GUI takes at most this many updates a second from a bridge: a burst of status
#: pushes from twenty servers costs one repaint, not twenty
DELIVERIES_PER_S = 10


class _Gate:
    """Whether a bridge still emits, and the lock that makes emitting and closing exclusive.

    A plain object, so the ``destroyed`` connection holds it (strongly: the bridge's
    Python side may be gone when Qt destroys it) and not the bridge."""

    __slots__ = ("lock", "closed")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False

    def close(self, *_: Any) -> None:
        with self.lock:
            self.closed = True


class _Bridge(QtCore.QObject):
    """Keeps what core threads push and hands it to the GUI thread, coalesced and paced.

    :meth:`push` may be called from any thread. Delivery always goes through the event
    loop, even from the GUI thread, so a pool call made by a slot (e.g. ``set_enabled``)
    never re-enters the widgets; and at most ``DELIVERIES_PER_S`` times a second.
    """

    _poked = Signal()

    def __init__(self, parent: Optional[QtCore.QObject] = None, min_interval: Optional[float] = None) -> None:
        super().__init__(parent)
        self._gate = _Gate()
        self._lock = self._gate.lock
        self._pending = False
        self._last = 0.0
        self.min_interval = 1.0 / DELIVERIES_PER_S if min_interval is None else min_interval
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._deliver)
        self._poked.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        # runs in ~QObject (GUI thread), before Qt drops this object's posted events: it
        # waits for a push that is emitting right now, and refuses the next ones
        self.destroyed.connect(functools.partial(_Gate.close, self._gate))

    @property
    def _dead(self) -> bool:
        return self._gate.closed

    def push(self, snapshot: Any) -> None:
        with self._lock:
            if self._gate.closed:
                return
            self._store(snapshot)
            if self._pending:
                return
            self._pending = True
            # under the lock: close() (and the destructor) wait for this emit to end
            try:
                emit(self._poked)
            except RuntimeError:  # the C++ object is gone (widget deleted): stop quietly
                self._gate.closed = True

    def _deliver(self) -> None:
        wait = self._last + self.min_interval - time.monotonic()
        if wait > 0:
            if not self._timer.isActive():
                self._timer.start(int(wait * 1000) + 1)
            return  # still pending: pushes meanwhile only replace what is kept
        with self._lock:
            items = self._take()
            self._pending = False
        self._last = time.monotonic()
        if not self._gate.closed:
            self._send(items)

    def close(self) -> None:
        with self._lock:
            self._gate.closed = True
            self._take()
        self._timer.stop()

    def _store(self, snapshot: Any) -> None:
        raise NotImplementedError

    def _take(self) -> Any:
        raise NotImplementedError

    def _send(self, items: Any) -> None:
        raise NotImplementedError


class SnapshotBridge(_Bridge):
    """Pool listener -> ``snapshot_changed(PoolSnapshot)`` on the GUI thread, the newest only."""

    snapshot_changed = Signal(object)

    def __init__(self, parent: Optional[QtCore.QObject] = None, min_interval: Optional[float] = None) -> None:
        super().__init__(parent, min_interval)
        self._latest: Any = None

    def _store(self, snapshot: Any) -> None:
        self._latest = snapshot

    def _take(self) -> Any:
        latest, self._latest = self._latest, None
        return latest

    def _send(self, snapshot: Any) -> None:
        if snapshot is not None:
            emit(self.snapshot_changed, snapshot)


class BatchBridge(_Bridge):
    """Batch listeners -> ``batch_changed(BatchSnapshot)`` on the GUI thread, the newest per batch."""

    batch_changed = Signal(object)

    def __init__(self, parent: Optional[QtCore.QObject] = None, min_interval: Optional[float] = None) -> None:
        super().__init__(parent, min_interval)
        self._latest: Dict[str, Any] = {}

    def _store(self, snapshot: Any) -> None:
        self._latest[snapshot.id] = snapshot

    def _take(self) -> Any:
        latest, self._latest = self._latest, {}
        return latest

    def _send(self, latest: Any) -> None:
        for snapshot in latest.values():
            emit(self.batch_changed, snapshot)


class BatchRelay(_Bridge):
    """Batches announced on any thread (by the dispatcher, the Nuke node) ->
    ``announced(batch)`` on the GUI thread, each batch once per delivery."""

    announced = Signal(object)

    def __init__(self, parent: Optional[QtCore.QObject] = None, min_interval: Optional[float] = None) -> None:
        super().__init__(parent, 0.0 if min_interval is None else min_interval)
        self._latest: Dict[str, Any] = {}

    def _store(self, batch: Any) -> None:
        self._latest[batch.id] = batch

    def _take(self) -> Any:
        latest, self._latest = self._latest, {}
        return latest

    def _send(self, latest: Any) -> None:
        for batch in latest.values():
            emit(self.announced, batch)
