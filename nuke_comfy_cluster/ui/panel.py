"""The cluster panel: servers, override, refresh, configuration banner and jobs, in one dockable widget.

Nuke registers ``nuke_comfy_cluster.ui.panel.ClusterPanel`` and builds it with no
arguments, so the panel then serves the process-wide
:func:`~nuke_comfy_cluster.core.api.default_cluster`. The standalone window and the
tests pass their own cluster.

Threads: the pool reports through a listener (pool thread) that only hands the
newest snapshot to a :class:`SnapshotBridge`; batches likewise through a
:class:`BatchBridge`. Refresh and submissions run on :class:`TaskRunner` QThreads.
Widgets only ever read immutable snapshots on the GUI thread; the calls the panel
makes on the GUI thread (``set_enabled``, ``set_priority``, ``set_override``,
``cancel``, ``retry_failed``) do no network I/O.

Lifetime: nothing outside the panel (core listeners, the list of open panels,
timers) holds the panel itself, only child QObjects, and the panel holds no bound
method of its own. A closed panel is therefore freed by reference counting on
the GUI thread, never by the cyclic garbage collector, which runs on whichever
Python thread happens to allocate (a websocket or status thread) and would delete
the widgets there: Qt cannot stop their timers from another thread, and the next
timer event lands on freed memory (the PySide2 test crash of issue 15).
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Set

from ..core.errors import ClusterError, user_message
from ..core.state import PoolSnapshot
from .jobs_view import JobsView
from .qt import QtCore, QtGui, QtWidgets, Signal, apply_binding_fixes, emit
from .server_table import STATUS_COLOURS, ServerTableModel
from .server_view import ServerTableView
from .widgets import ConfigBanner, ElidedLabel
from .workers import BatchBridge, BatchRelay, SnapshotBridge, TaskError, TaskRunner

log = logging.getLogger(__name__)
Qt = QtCore.Qt

_STRATEGY_LABELS = {"least_loaded": "least loaded", "round_robin": "round robin", "priority": "by priority"}
#: how often "last seen" ages and cooldowns are redrawn, and batches looked for (no network)
TICK_MS = 1000
#: the longest a closing panel waits for its worker threads (each is bounded by network timeouts)
SHUTDOWN_WAIT_S = 15.0

#: the batch relays of open panels (children of the panels, so holding one never
#: keeps a panel alive, nor makes another thread the one that frees it)
_open_relays: weakref.WeakSet[BatchRelay] = weakref.WeakSet()


def announce_batch(batch: Any) -> None:
    """Show ``batch`` in every open panel (any thread). The Nuke node and scripts call this."""
    for relay in list(_open_relays):
        relay.push(batch)


class ClusterPanel(QtWidgets.QWidget):
    """The docked panel: live server table, override, refresh, config banner and jobs."""

    #: a refresh began / ended (seconds it took); ``snapshot_applied`` after the widgets show one
    refresh_started = Signal()
    refresh_finished = Signal(float)
    snapshot_applied = Signal(object)
    batch_watched = Signal(str)

    def __init__(
        self,
        cluster: Any = None,
        parent: Optional[QtWidgets.QWidget] = None,
        *,
        auto_refresh: bool = True,
    ) -> None:
        super().__init__(parent)
        apply_binding_fixes()
        if cluster is None:
            from ..core.api import default_cluster

            cluster = default_cluster()
        self.cluster = cluster
        self.pool = cluster.pool
        self.setObjectName("ComfyUIClusterPanel")
        self.setWindowTitle("ComfyUI Cluster")
        self._closed = False
        self._batches: Dict[str, Any] = {}
        #: batch id -> ((server, why left out), ...) of the batches still running
        self._left_out: Dict[str, Any] = {}
        self._dismissed: Set[str] = set()
        self._last_refresh_s: Optional[float] = None
        self._refresh_started_at = 0.0
        self.last_message = ""
        self._override_state: Any = None
        self._override_state_items: List[Any] = []
        self.config_editor: Optional[QtWidgets.QDialog] = None

        self.runner = TaskRunner(self)
        self.snapshot_bridge = SnapshotBridge(self)
        self.batch_bridge = BatchBridge(self)
        self.batch_relay = BatchRelay(self)

        self._build()

        self.snapshot_bridge.snapshot_changed.connect(self._apply_snapshot)
        self.batch_bridge.batch_changed.connect(self._batch_changed)
        self.batch_relay.announced.connect(self._watch_batch_gui)
        self.pool.add_listener(self.snapshot_bridge.push)
        self._dispatcher_hooked = self._hook_dispatcher()

        self._tick = QtCore.QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._on_tick)
        self._tick.start()
        # children, not QTimer.singleShot(0, self.method): a pending single shot would hold
        # the panel and call it after it was closed
        self._fit_timer = _one_shot(self, self._fit_table)
        self._refresh_timer = _one_shot(self, self.refresh)
        self.table.columns_changed.connect(self._fit_timer.start)  # a scroll bar may come or go

        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        _open_relays.add(self.batch_relay)

        self._apply_snapshot(self.pool.snapshot())
        self._scan_batches()
        if auto_refresh:
            self._refresh_timer.start()

    # -- layout ------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = ConfigBanner(self)

        self.override_combo = QtWidgets.QComboBox(self)
        self.override_combo.setToolTip(
            "Where submissions go when they do not choose a server: automatic, or pinned to one server"
        )
        # sized by a character count, not the items: fitting the contents would re-measure
        # every item at each status change; it grows with the dock from there
        self.override_combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.override_combo.setMinimumContentsLength(6)
        self.override_combo.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        self.override_combo.setMaximumWidth(420)
        self.override_combo.activated.connect(self._override_chosen)
        self.override_warning = QtWidgets.QLabel(self)
        self.override_warning.setWordWrap(True)
        self.override_warning.setStyleSheet("color: {};".format(STATUS_COLOURS["offline"]))
        self.override_warning.setVisible(False)
        self.refresh_button = QtWidgets.QPushButton("Refresh", self)
        self.refresh_button.setToolTip("Ask every server for its status now")
        self.refresh_button.clicked.connect(self.refresh)
        # the one way to the editor (the banner only tells what is wrong)
        self.config_button = QtWidgets.QPushButton("Configure…", self)
        self.config_button.setToolTip("Edit the server list (NUKE_COMFYUI_SERVERS): add, remove, test, back up")
        self.config_button.clicked.connect(self.open_config_editor)

        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(QtWidgets.QLabel("Send to:", self))
        bar.addWidget(self.override_combo, 1)
        bar.addStretch(0)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.config_button)

        self.model = ServerTableModel(self)
        self.model.enabled_toggled.connect(self.set_server_enabled)
        self.model.priority_edited.connect(self.set_server_priority)
        self.table = ServerTableView(self.model, self)

        self.jobs = JobsView(self)
        self.jobs.cancel_requested.connect(self.cancel_batch)
        self.jobs.retry_requested.connect(self.retry_batch)
        self.jobs.cleared.connect(self._batches_cleared)
        # no group box: its title and frame cost a docked panel a server row
        self.jobs_box = QtWidgets.QWidget(self)
        jobs_layout = QtWidgets.QVBoxLayout(self.jobs_box)
        jobs_layout.setContentsMargins(0, 2, 0, 0)
        jobs_layout.addWidget(self.jobs)

        self.splitter = QtWidgets.QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.jobs_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)
        self._splitter_set_by_user = False
        self.splitter.splitterMoved.connect(self._splitter_moved)

        self.status_label = ElidedLabel(self)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(self.banner)
        layout.addLayout(bar)
        layout.addWidget(self.override_warning)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.status_label)
        self.banner.expanded_changed.connect(self._banner_toggled)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        return QtCore.QSize(1000, 620)

    def _splitter_moved(self, *_: Any) -> None:
        self._splitter_set_by_user = True

    def _banner_toggled(self, _expanded: bool) -> None:
        self._fit_timer.start()

    def table_height_wanted(self) -> int:
        """The height that shows every server as a row (and a horizontal scroll bar)."""
        table = self.table
        rows = max(self.model.rowCount(), 3)
        wanted = table.horizontalHeader().sizeHint().height() + table.verticalHeader().defaultSectionSize() * rows
        wanted += 2 * table.frameWidth() + 2
        if table.horizontalHeader().length() > table.viewport().width():
            wanted += table.horizontalScrollBar().sizeHint().height()  # columns the user chose to keep
        return wanted

    def _fit_table(self) -> None:
        """Give the server table the height of its rows (until the user drags the splitter):
        every server is a visible row; the jobs get the rest, down to their minimum."""
        if self._closed:
            return
        total = sum(self.splitter.sizes())
        if self._splitter_set_by_user or total <= 0:
            return
        jobs_min = self.jobs_box.minimumSizeHint().height()
        wanted = min(self.table_height_wanted(), max(total - jobs_min, int(total * 0.4)))
        self.splitter.setSizes([wanted, total - wanted])

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        # after the layout has given the splitter its new size
        if not self._closed:
            self._fit_timer.start()

    # -- snapshots -----------------------------------------------------------------------
    def _apply_snapshot(self, snap: PoolSnapshot) -> None:
        if self._closed:
            return
        now = time.time()
        rows = self.model.rowCount()
        self.model.set_snapshot(snap, now)
        if self.model.rowCount() != rows:
            self.table.fit_columns()
            self._fit_table()
        else:
            self.table.fit_grown_columns()
        self.banner.set_state(snap.source, snap.warnings, snap.errors)
        self._update_override(snap, now)
        self._update_status_line(snap, now)
        emit(self.snapshot_applied, snap)

    def _update_override(self, snap: PoolSnapshot, now: float) -> None:
        combo = self.override_combo
        strategy = _STRATEGY_LABELS.get(getattr(self.pool, "strategy", ""), "least loaded")
        auto = f"Auto ({strategy})"
        items: List[Any] = [(auto, None, None)]
        for server in snap.servers:
            reason = server.unavailable_reason(now) if server.status.value != "unknown" or not server.enabled else None
            text = server.name if reason is None else f"{server.name} — {_short(reason)}"
            items.append((text, server.name, reason))
        names = [name for _, name, _ in items]
        override = self.pool.override
        if (items, override) == self._override_state:
            return  # unchanged: touching the items would re-lay out the tool bar
        self._override_state = (items, override)
        current = [combo.itemData(i) for i in range(combo.count())]
        combo.blockSignals(True)
        try:
            if names != current:
                combo.clear()
                for text, name, _ in items:
                    combo.addItem(text, name)
            grey = QtGui.QBrush(QtGui.QColor(STATUS_COLOURS["disabled"]))
            previous = self._override_state_items
            for i, (text, name, reason) in enumerate(items):
                if i < len(previous) and previous[i] == (text, name, reason) and names == current:
                    continue  # each item change makes the combo re-measure itself
                combo.setItemText(i, text)
                combo.setItemData(i, grey if reason else None, Qt.ItemDataRole.ForegroundRole)
                if reason:
                    tip = f"Unavailable: {reason}"
                elif name:
                    tip = f"Pin submissions to {name}"
                else:
                    tip = "Each prompt goes where it finishes first"
                combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
            self._override_state_items = items
            index = names.index(override) if override in names else 0
            combo.setCurrentIndex(index)
        finally:
            combo.blockSignals(False)
        pinned = override
        reason = None
        if pinned:
            server = snap.by_name().get(pinned)
            reason = server.unavailable_reason(now) if server is not None else "not configured"
        self.override_warning.setVisible(bool(reason))
        self.override_warning.setText(
            "{} is unavailable ({}): submissions pinned to it will fail".format(pinned, _short(reason or ""))
            if reason
            else ""
        )

    def _update_status_line(self, snap: PoolSnapshot, now: float) -> None:
        total = len(snap.servers)
        up = sum(1 for s in snap.servers if s.is_available(now))
        parts = [f"{up}/{total} servers available"]
        if snap.next_server:
            parts.append(f"next: {snap.next_server}")
        if self._last_refresh_s is not None:
            parts.append(f"last refresh took {self._last_refresh_s:.2f} s")
        if self.last_message:
            parts.append(self.last_message)
        text = " · ".join(parts)
        if text != self.status_label.text():
            self.status_label.setText(text)

    def _on_tick(self) -> None:
        now = time.time()
        self.model.tick(now)
        snap = self.model.snapshot
        if snap is not None:
            self._update_override(snap, now)
        if not self._dispatcher_hooked:
            self._scan_batches()

    def _status_style(self, style: str) -> None:
        if self.status_label.styleSheet() != style:
            self.status_label.setStyleSheet(style)

    @property
    def snapshot(self) -> Optional[PoolSnapshot]:
        """The snapshot the panel shows now."""
        return self.model.snapshot

    def _message(self, text: str, error: bool = False) -> None:
        self.last_message = text
        self._status_style("color: {};".format(STATUS_COLOURS["offline"]) if error else "")
        snap = self.model.snapshot
        if snap is not None:
            self._update_status_line(snap, time.time())
        else:
            self.status_label.setText(text)

    # -- user actions on servers -------------------------------------------------------------
    def set_server_enabled(self, name: str, enabled: bool) -> None:
        try:
            self.pool.set_enabled(name, enabled)
        except ClusterError as e:
            self._message(user_message(e), error=True)
            return
        self._message("{} {}".format(name, "enabled" if enabled else "disabled"))
        if enabled:
            self.refresh_server(name)

    def set_server_priority(self, name: str, priority: int) -> None:
        try:
            self.pool.set_priority(name, priority)
        except ClusterError as e:
            self._message(user_message(e), error=True)
            return
        self._message(f"{name} priority set to {priority}")

    def _override_chosen(self, index: int) -> None:
        self.set_override(self.override_combo.itemData(index))

    def set_override(self, name: Optional[str]) -> None:
        """Pin submissions that do not choose a server to ``name`` (None: automatic)."""
        try:
            self.pool.set_override(name or None)
        except ClusterError as e:
            self._message(user_message(e), error=True)
            return
        self._message(f"submissions go to {name}" if name else "submissions are balanced automatically")
        snap = self.model.snapshot
        if snap is not None:
            self._update_override(snap, time.time())

    # -- refresh -----------------------------------------------------------------------------
    @property
    def refreshing(self) -> bool:
        return self.runner.is_running("refresh")

    def refresh(self) -> bool:
        """Poll every server now, on a worker thread. False when one is already running."""
        if self._closed:
            return False
        pool = self.pool
        started = self.runner.run(
            "refresh",
            lambda: pool.update_all_server_status(force=True),
            self._refresh_done,
            self._refresh_failed,
            exclusive=True,
        )
        if started:
            self._refresh_started_at = time.monotonic()
            self.refresh_button.setEnabled(False)
            self.refresh_button.setText("Refreshing…")
            self.setCursor(Qt.CursorShape.BusyCursor)
            emit(self.refresh_started)
        return started

    def refresh_server(self, name: str) -> None:
        """Poll one server now (e.g. just re-enabled), on a worker thread."""
        server = self.pool.get_server_by_name(name)
        if server is None or self._closed:
            return
        pool = self.pool

        def poll() -> PoolSnapshot:
            server.update_status()
            return pool.snapshot()

        self.runner.run("refresh-" + name, poll, self._apply_snapshot, exclusive=True)

    def _refresh_ended(self) -> float:
        elapsed = time.monotonic() - self._refresh_started_at
        self._last_refresh_s = elapsed
        self.refresh_button.setEnabled(True)
        self.refresh_button.setText("Refresh")
        self.unsetCursor()
        return elapsed

    def _refresh_done(self, snap: PoolSnapshot) -> None:
        elapsed = self._refresh_ended()
        self.last_message = ""
        self._status_style("")
        self._apply_snapshot(snap)
        emit(self.refresh_finished, elapsed)

    def _refresh_failed(self, error: TaskError) -> None:
        elapsed = self._refresh_ended()
        self._message(f"Refresh failed: {error.message}", error=True)
        log.warning("refresh failed: %s\n%s", error.message, error.traceback)
        emit(self.refresh_finished, elapsed)

    # -- batches -----------------------------------------------------------------------------
    def _hook_dispatcher(self) -> bool:
        """Use a dispatcher batch hook when the core has one; else batches are found by a
        cheap in-memory scan of ``dispatcher.batches`` on the tick, plus :meth:`watch_batch`."""
        dispatcher = getattr(self.cluster, "dispatcher", None)
        add = getattr(dispatcher, "add_batch_listener", None)
        if add is None:
            return False
        add(self.batch_relay.push)
        return True

    def _scan_batches(self) -> None:
        dispatcher = getattr(self.cluster, "dispatcher", None)
        for batch in list(getattr(dispatcher, "batches", ()) or ()):
            if batch.id not in self._batches and batch.id not in self._dismissed:
                self._watch_batch_gui(batch)

    def watch_batch(self, batch: Any) -> None:
        """Show ``batch`` in the jobs view and follow it. Safe from any thread."""
        if self._closed:
            return
        self.batch_relay.push(batch)

    def _watch_batch_gui(self, batch: Any) -> None:
        if self._closed or batch.id in self._batches:
            return
        self._batches[batch.id] = batch
        self._dismissed.discard(batch.id)
        batch.add_listener(self.batch_bridge.push)
        # after subscribing, so a batch finishing meanwhile is still shown finished
        self._batch_changed(batch.snapshot())
        emit(self.batch_watched, batch.id)

    def _batch_changed(self, snap: Any) -> None:
        self.jobs.update_batch(snap)
        left_out = tuple(getattr(snap, "left_out", ()) or ())
        if snap.finished:
            changed = self._left_out.pop(snap.id, None) is not None
        else:
            changed = self._left_out.get(snap.id) != left_out
            if left_out:
                self._left_out[snap.id] = left_out
            else:
                changed = self._left_out.pop(snap.id, None) is not None
        if changed:
            self._show_left_out()

    def _show_left_out(self) -> None:
        """Why running batches leave servers out, in the servers' rows (the newest batch wins)."""
        reasons: Dict[str, str] = {}
        for left_out in self._left_out.values():
            reasons.update(dict(left_out))
        self.model.set_left_out(reasons)

    def batch(self, batch_id: str) -> Optional[Any]:
        return self._batches.get(batch_id)

    def cancel_batch(self, batch_id: str) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        self.cluster.cancel(batch)  # queued to the dispatcher thread: no I/O here
        self._message(f"cancelling {batch.name}")

    def retry_batch(self, batch_id: str) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        self.cluster.retry_failed(batch)
        self._message(f"retrying the failed frames of {batch.name}")

    def _batches_cleared(self, ids: List[str]) -> None:
        if any(self._left_out.pop(batch_id, None) is not None for batch_id in list(ids)):
            self._show_left_out()
        for batch_id in ids:
            batch = self._batches.pop(batch_id, None)
            if batch is not None:
                batch.remove_listener(self.batch_bridge.push)
            self._dismissed.add(batch_id)

    def submit_in_background(self, submit: Callable[[], Any], name: str = "submit") -> bool:
        """Run ``submit()`` (a Cluster.submit* call: it may touch the network) on a worker;
        the batch it returns is shown in the jobs view, an error in the status line."""

        def failed(error: TaskError) -> None:
            self._message(f"Submit failed: {error.message}", error=True)

        return self.runner.run(name, submit, self.watch_batch, failed)

    # -- configuration -------------------------------------------------------------------------
    def open_config_editor(self) -> QtWidgets.QDialog:
        """Open (or raise) the configuration editor for this panel's pool."""
        if self.config_editor is None or not self.config_editor.isVisible():
            from .config_editor import ConfigEditorDialog

            self.config_editor = ConfigEditorDialog(self.pool, parent=self, runner=self.runner)
        self.config_editor.show()
        self.config_editor.raise_()
        self.config_editor.activateWindow()
        return self.config_editor

    # -- shutdown --------------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        editor = self.config_editor
        if editor is not None and editor.isVisible() and not editor.close():
            event.ignore()  # the user kept unsaved configuration changes open
            return
        self.shutdown()
        super().closeEvent(event)

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, timeout: float = SHUTDOWN_WAIT_S) -> bool:
        """Stop listening and wait for this panel's worker threads. Idempotent.

        The cluster is not closed: in Nuke it is the process-wide one; whoever made
        a cluster closes it.
        """
        if self._closed:
            return True
        self._closed = True
        _open_relays.discard(self.batch_relay)
        self._tick.stop()
        self._fit_timer.stop()
        self._refresh_timer.stop()
        self.pool.remove_listener(self.snapshot_bridge.push)
        self.snapshot_bridge.close()
        if self._dispatcher_hooked:
            remove = getattr(self.cluster.dispatcher, "remove_batch_listener", None)
            if remove is not None:
                remove(self.batch_relay.push)
        self.batch_relay.close()
        for batch in self._batches.values():
            batch.remove_listener(self.batch_bridge.push)
        self.batch_bridge.close()
        return self.runner.shutdown(timeout)


def _one_shot(parent: QtCore.QObject, slot: Callable[[], Any]) -> QtCore.QTimer:
    """A single-shot, zero-delay timer owned by ``parent``: it dies with it."""
    timer = QtCore.QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(slot)
    return timer


def _short(reason: str, limit: int = 60) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
