"""The jobs view: every batch with its progress, its frames, where they run, and why they failed.

A tree model over :class:`BatchSnapshot` objects (batches on top, one child row
per job) fed on the GUI thread, a delegate drawing the progress bars (progress_bar),
and a small widget with Cancel / Retry failed / Error… / Clear. The view knows no
cluster: it emits ``cancel_requested(batch_id)`` and ``retry_requested(batch_id)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..core.jobs import BatchSnapshot, JobError, JobSnapshot
from ..core.state import JobState
from .progress_bar import (  # noqa: F401 - the colour helpers are re-exported
    STATE_COLOURS,
    ProgressDelegate,
    ProgressRole,
    StateRole,
    bar_colours,
    contrast,
    readable_on,
)
from .qt import QtCore, QtGui, QtWidgets, Signal, apply_binding_fixes, emit
from .server_table import bold_font, cached_brush

Qt = QtCore.Qt

BatchIdRole = int(Qt.ItemDataRole.UserRole) + 12
JobIndexRole = int(Qt.ItemDataRole.UserRole) + 14
_CELL_ROLES = (
    int(Qt.ItemDataRole.DisplayRole),
    int(Qt.ItemDataRole.ForegroundRole),
    int(Qt.ItemDataRole.FontRole),
    int(Qt.ItemDataRole.ToolTipRole),
    ProgressRole,
    StateRole,
)
_ITEM_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

COL_NAME, COL_STATE, COL_PROGRESS, COL_FRAMES, COL_SERVER, COL_ATTEMPTS, COL_ERROR = range(7)
HEADERS = ("Batch / job", "State", "Progress", "Frames", "Server", "Tries", "Error")


class _BatchEntry:
    """One batch: its latest snapshot and the role -> value last written to each cell.

    Job rows are made when the batch is first expanded (until then one empty child
    row gives it its expand arrow): a 200-frame batch arrives as one row, not 1400 cells.
    """

    __slots__ = ("snapshot", "cells", "job_cells", "populated")

    def __init__(self, snapshot: BatchSnapshot) -> None:
        self.snapshot = snapshot
        self.cells: List[Dict[int, Any]] = []
        self.job_cells: List[List[Dict[int, Any]]] = []
        self.populated = False


def batch_counts_text(snap: BatchSnapshot) -> str:
    """``12/24 done · 2 running · 1 failed`` (only the parts that are not zero, after "done")."""
    parts = [f"{snap.done}/{len(snap.jobs)} done"]
    for label, count in (
        ("running", snap.running),
        ("queued", snap.count(JobState.SUBMITTED)),
        ("failed", snap.failed),
        ("cancelled", snap.count(JobState.CANCELLED)),
    ):
        if count:
            parts.append(f"{count} {label}")
    return " · ".join(parts)


def batch_servers_text(snap: BatchSnapshot) -> str:
    """Which server did what: ``sim-1x 5 · sim-0.5x 3 (+2 running)`` (frames done per server)."""
    done: Dict[str, int] = {}
    active = 0
    for job in snap.jobs:
        if job.server and job.state is JobState.DONE:
            done[job.server] = done.get(job.server, 0) + 1
        elif job.server and job.state in (JobState.RUNNING, JobState.SUBMITTED):
            done.setdefault(job.server, 0)
            active += 1
    text = " · ".join(f"{name} {count}" for name, count in sorted(done.items(), key=lambda kv: (-kv[1], kv[0])))
    return text + (f" (+{active} running)" if active else "")


def batch_servers_tooltip(snap: BatchSnapshot) -> str:
    """Each server's frames, then where the batch loaded its models and for how long."""
    per: Dict[str, List[str]] = {}
    for job in snap.jobs:
        if job.server:
            per.setdefault(job.server, []).append(f"{job.label} {job.state.value}")
    lines = [f"{name}: " + ", ".join(items) for name, items in sorted(per.items())]
    for name, count, seconds in snap.loads:
        took = f", {seconds:.1f} s" if seconds else ""
        lines.append(f"{name} loaded the models {count}x{took}")
    return "\n".join(lines)


def error_details(error: JobError, job: Optional[JobSnapshot] = None) -> str:
    """The whole story of one failure, for the "Show error" box."""
    lines = []
    if job is not None:
        lines.append(f"{job.label} — {job.state.value}")
    lines.append(f"{error.kind.capitalize()} error: {error.message}")
    if error.node_id or error.node_type:
        lines.append("Node: {}{}".format(error.node_id or "?", f" ({error.node_type})" if error.node_type else ""))
    if error.server:
        lines.append(f"Server: {error.server}")
    if job is not None and job.failed_servers:
        lines.append("Failed on: {}".format(", ".join(job.failed_servers)))
    return "\n".join(lines)


class JobsModel(QtGui.QStandardItemModel):
    """Batches (top level) and their jobs (children), newest batch last.

    Like the server table, the cells live in Qt items, written only when what they show
    changes, so repaints never call into Python (see :class:`ServerTableModel`).
    """

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(0, len(HEADERS), parent)
        apply_binding_fixes()
        self.setHorizontalHeaderLabels(list(HEADERS))
        self._entries: List[_BatchEntry] = []

    # -- feeding -----------------------------------------------------------------------
    def update_batch(self, snap: BatchSnapshot) -> None:
        """Add the batch or show its new snapshot (a batch keeps its jobs)."""
        row = self.row_of(snap.id)
        if row < 0:
            self._append(snap)
            return
        entry = self._entries[row]
        if len(entry.snapshot.jobs) != len(snap.jobs):  # not expected: rebuild that batch
            self.removeRow(row)
            del self._entries[row]
            self._append(snap, row)
            return
        old = entry.snapshot
        entry.snapshot = snap
        entry.cells = self._write(QtCore.QModelIndex(), row, entry.cells, self._batch_cells(snap))
        if not entry.populated:
            return
        parent = self.index(row, 0)
        for i, (a, b) in enumerate(zip(old.jobs, snap.jobs)):
            if a != b:
                entry.job_cells[i] = self._write(parent, i, entry.job_cells[i], self._job_cells(snap, i))

    def _append(self, snap: BatchSnapshot, row: Optional[int] = None) -> None:
        entry = _BatchEntry(snap)
        entry.cells = self._batch_cells(snap)
        top = self._items(entry.cells)
        if snap.jobs:
            top[0].appendRow([QtGui.QStandardItem() for _ in HEADERS])  # the expand arrow
        if row is None:
            self._entries.append(entry)
            self.appendRow(top)
        else:
            self._entries.insert(row, entry)
            self.insertRow(row, top)

    def populate(self, row: int) -> None:
        """Make the job rows of batch ``row`` (the view calls it when the batch is expanded)."""
        if not 0 <= row < len(self._entries) or self._entries[row].populated:
            return
        entry = self._entries[row]
        entry.populated = True
        top = self.item(row, 0)
        top.removeRows(0, top.rowCount())
        entry.job_cells = [self._job_cells(entry.snapshot, i) for i in range(len(entry.snapshot.jobs))]
        for cells in entry.job_cells:
            top.appendRow(self._items(cells))

    @staticmethod
    def _items(cells: List[Dict[int, Any]]) -> List[QtGui.QStandardItem]:
        items = []
        for cell in cells:
            item = QtGui.QStandardItem()
            item.setFlags(_ITEM_FLAGS)
            for role, value in cell.items():
                item.setData(value, role)
            items.append(item)
        return items

    def _write(
        self, parent: QtCore.QModelIndex, row: int, old: List[Dict[int, Any]], new: List[Dict[int, Any]]
    ) -> List[Dict[int, Any]]:
        for col in range(len(HEADERS)):
            if old[col] == new[col]:
                continue
            values = dict(new[col])
            for role in old[col]:
                if role not in values:
                    values[role] = None  # clears the role
            self.setItemData(self.index(row, col, parent), values)
        return new

    def _batch_cells(self, snap: BatchSnapshot) -> List[Dict[int, Any]]:
        return [_cell(lambda r, c=c: self._batch_data(snap, c, r), snap.id, None) for c in range(len(HEADERS))]

    def _job_cells(self, snap: BatchSnapshot, i: int) -> List[Dict[int, Any]]:
        job = snap.jobs[i]
        return [_cell(lambda r, c=c: self._job_data(job, c, r), snap.id, i) for c in range(len(HEADERS))]

    def remove_batch(self, batch_id: str) -> None:
        row = self.row_of(batch_id)
        if row >= 0:
            del self._entries[row]
            self.removeRow(row)

    def finished_batch_ids(self) -> List[str]:
        return [e.snapshot.id for e in self._entries if e.snapshot.finished]

    def row_of(self, batch_id: str) -> int:
        for i, entry in enumerate(self._entries):
            if entry.snapshot.id == batch_id:
                return i
        return -1

    def batch(self, batch_id: str) -> Optional[BatchSnapshot]:
        row = self.row_of(batch_id)
        return self._entries[row].snapshot if row >= 0 else None

    def batches(self) -> List[BatchSnapshot]:
        return [e.snapshot for e in self._entries]

    def batch_for(self, index: QtCore.QModelIndex) -> Optional[BatchSnapshot]:
        """The batch of a batch row or of a job row."""
        if not index.isValid():
            return None
        return self.batch(index.data(BatchIdRole) or "")

    def job_for(self, index: QtCore.QModelIndex) -> Optional[JobSnapshot]:
        if not index.isValid() or not index.parent().isValid():
            return None
        batch = self.batch_for(index)
        row = index.row()
        return batch.jobs[row] if batch is not None and 0 <= row < len(batch.jobs) else None

    def _batch_data(self, snap: BatchSnapshot, col: int, role: int) -> Any:
        state = snap.state
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME:
                return snap.name
            if col == COL_STATE:
                return state
            if col == COL_PROGRESS:
                return f"{snap.progress * 100:.0f}%"
            if col == COL_FRAMES:
                return batch_counts_text(snap)
            if col == COL_SERVER:
                return batch_servers_text(snap) or (snap.pinned or "")
            if col == COL_ATTEMPTS:
                return ""
            if col == COL_ERROR:
                if snap.errors:
                    first = snap.errors[0].message
                    more = len(snap.errors) - 1
                    return first + (f" (+{more} more)" if more else "")
                return snap.message
            return None
        if role == ProgressRole:
            return snap.progress
        if role == StateRole:
            return state
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            return cached_brush(STATE_COLOURS.get(state, "#a0a0a0"))
        if role == Qt.ItemDataRole.FontRole and col == COL_NAME:
            return bold_font()
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_SERVER:
                return batch_servers_tooltip(snap) or None
            lines = [snap.name, batch_counts_text(snap)]
            if snap.pinned:
                lines.append(f"Pinned to {snap.pinned}")
            if snap.message:
                lines.append(snap.message)
            for error in snap.errors[:5]:
                lines.append("• " + error.message)
            if snap.makespan is not None:
                lines.append(f"Took {snap.makespan:.1f} s")
            return "\n".join(lines)
        return None

    def _job_data(self, job: JobSnapshot, col: int, role: int) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME:
                return job.label
            if col == COL_STATE:
                return job.state.value
            if col == COL_PROGRESS:
                return job_progress_text(job)
            if col == COL_FRAMES:
                return "" if job.frame is None else str(job.frame)
            if col == COL_SERVER:
                return job.server or ""
            if col == COL_ATTEMPTS:
                return str(job.attempts) if job.attempts else ""
            if col == COL_ERROR:
                return job.error.message if job.error is not None and job.error.kind != "cancelled" else ""
            return None
        if role == ProgressRole:
            # no bar for a frame that has not started: a row of empty bars says nothing
            return job.fraction if job.state not in (JobState.PENDING, JobState.SUBMITTED) else None
        if role == StateRole:
            return job.state.value
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            return cached_brush(STATE_COLOURS.get(job.state.value, "#a0a0a0"))
        if role == Qt.ItemDataRole.ToolTipRole:
            if job.error is not None:
                return error_details(job.error, job)
            if col == COL_PROGRESS and job.state is JobState.RUNNING and job.progress_max > 0:
                return "Step {:g} of {:g} of the running node (ComfyUI's progress messages)".format(
                    job.progress_value, job.progress_max
                )
            if job.current_node:
                return "{} on {} (node {})".format(job.label, job.server or "?", job.current_node)
            if job.failed_servers:
                return "Failed before on: {}".format(", ".join(job.failed_servers))
        return None


def job_progress_text(job: JobSnapshot) -> str:
    """``step 12/20`` while a frame runs (ComfyUI's ``progress`` messages), else its state's word."""
    if job.state is JobState.RUNNING:
        if job.progress_max > 0:
            return "step {:.0f}/{:.0f}".format(min(job.progress_value, job.progress_max), job.progress_max)
        return "running"
    if job.state is JobState.DONE:
        return "100%"
    if job.state is JobState.SUBMITTED:
        return "queued"
    if job.state is JobState.PENDING:
        return "waiting"
    return job.state.value


def _cell(value_of: Any, batch_id: str, job_index: Optional[int]) -> Dict[int, Any]:
    """role -> value of one cell, with the ids that lead back to its batch and job."""
    cell: Dict[int, Any] = {BatchIdRole: batch_id}
    if job_index is not None:
        cell[JobIndexRole] = job_index
    for role in _CELL_ROLES:
        value = value_of(role)
        if value is not None:
            cell[role] = value
    return cell


def _button(text: str, parent: QtWidgets.QWidget) -> QtWidgets.QToolButton:
    button = QtWidgets.QToolButton(parent)
    button.setText(text)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    return button


class JobsView(QtWidgets.QWidget):
    """Batches and jobs, with Cancel, Retry failed, Show error and Clear finished."""

    cancel_requested = Signal(str)
    retry_requested = Signal(str)
    cleared = Signal(list)  # ids of the batches removed from the view

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.model = JobsModel(self)
        self.tree = QtWidgets.QTreeView(self)
        self.tree.setModel(self.model)
        # Python draws only the bars; every other cell is drawn by Qt alone
        self.tree.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.tree))
        self.tree.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for col, width in (
            (COL_NAME, 190),
            (COL_STATE, 76),
            (COL_PROGRESS, 110),
            (COL_FRAMES, 230),
            (COL_SERVER, 250),
            (COL_ATTEMPTS, 40),
        ):
            self.tree.setColumnWidth(col, width)
        self.tree.header().setStretchLastSection(True)
        # a docked panel gives the jobs what the servers leave: a header and a row will do
        self.tree.setMinimumHeight(self.tree.fontMetrics().height() * 3 + 8)
        self.tree.doubleClicked.connect(self._double_clicked)
        self.tree.expanded.connect(self._expanded)

        # tool buttons: a push button is at least ~80 px wide in most styles, and the four
        # must fit a dock 420 px wide with a large font
        self.cancel_button = _button("Cancel", self)
        self.cancel_button.setToolTip("Cancel the selected batch: removes our queued prompts and stops ours if running")
        self.retry_button = _button("Retry failed", self)
        self.retry_button.setToolTip("Send the failed frames of the selected batch again")
        self.error_button = _button("Error…", self)
        self.error_button.setToolTip("The full error of the selected failed job or batch")
        self.clear_button = _button("Clear", self)
        self.clear_button.setToolTip("Remove the finished batches from this list")
        self.summary = QtWidgets.QLabel(self)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setWordWrap(True)

        self.cancel_button.clicked.connect(self._cancel_clicked)
        self.retry_button.clicked.connect(self._retry_clicked)
        self.error_button.clicked.connect(self.show_error)
        self.clear_button.clicked.connect(self.clear_finished)

        buttons = QtWidgets.QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for button in (self.cancel_button, self.retry_button, self.error_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)

        self.error_box: Optional[QtWidgets.QMessageBox] = None
        # once per event loop turn, however many cells an update changed
        self._buttons_timer = QtCore.QTimer(self)
        self._buttons_timer.setSingleShot(True)
        self._buttons_timer.setInterval(0)
        self._buttons_timer.timeout.connect(self._update_buttons)
        self.tree.selectionModel().selectionChanged.connect(self._buttons_timer.start)
        self.model.rowsInserted.connect(self._rows_inserted)
        self._update_buttons()

    # -- feeding -----------------------------------------------------------------------
    def update_batch(self, snap: BatchSnapshot) -> None:
        self.model.update_batch(snap)
        self._buttons_timer.start()

    def _rows_inserted(self, parent: QtCore.QModelIndex, first: int, last: int) -> None:
        if parent.isValid():
            return
        # widen for the new batch's texts, measured here (sizeHintForColumn would ask the
        # model for every role of every row through Python)
        metrics = self.tree.fontMetrics()
        bold = QtGui.QFontMetrics(bold_font())  # batch names are drawn bold
        for snap in self.model.batches()[first : last + 1]:
            texts = {
                COL_NAME: snap.name,
                COL_FRAMES: batch_counts_text(snap),
                COL_SERVER: batch_servers_text(snap),
            }
            for col, text in texts.items():
                extra = self.tree.indentation() + 24 if col == COL_NAME else 16
                width = (bold if col == COL_NAME else metrics).horizontalAdvance(text)
                wanted = min(width + extra, 360)
                if wanted > self.tree.columnWidth(col):
                    self.tree.setColumnWidth(col, wanted)
        if not self.current_index().isValid():
            self.tree.setCurrentIndex(self.model.index(last, 0))
        self._buttons_timer.start()

    def _expanded(self, index: QtCore.QModelIndex) -> None:
        if not index.parent().isValid():
            self.model.populate(index.row())

    # -- selection ---------------------------------------------------------------------
    def current_index(self) -> QtCore.QModelIndex:
        # the current index, not selectedRows(): with one selected row they agree, and this
        # one costs no round trips through the Python model
        return self.tree.currentIndex()

    def selected_batch(self) -> Optional[BatchSnapshot]:
        return self.model.batch_for(self.current_index())

    def selected_job(self) -> Optional[JobSnapshot]:
        return self.model.job_for(self.current_index())

    def select_batch(self, batch_id: str) -> None:
        row = self.model.row_of(batch_id)
        if row >= 0:
            self.tree.setCurrentIndex(self.model.index(row, 0))
        self._update_buttons()

    def select_job(self, batch_id: str, job_index: int) -> None:
        row = self.model.row_of(batch_id)
        if row >= 0:
            self.model.populate(row)
            parent = self.model.index(row, 0)
            self.tree.expand(parent)
            self.tree.setCurrentIndex(self.model.index(job_index, 0, parent))
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        batch = self.selected_batch()
        self.cancel_button.setEnabled(batch is not None and not batch.finished)
        self.retry_button.setEnabled(batch is not None and batch.failed > 0)
        self.error_button.setEnabled(self.error_text() is not None)
        self.clear_button.setEnabled(bool(self.model.finished_batch_ids()))
        summary = self._summary_text(batch)
        self.summary.setText(summary)
        self.summary.setVisible(bool(summary))

    @staticmethod
    def _summary_text(batch: Optional[BatchSnapshot]) -> str:
        if batch is None:
            return ""
        text = f"{batch.name}: {batch_counts_text(batch)}"
        if batch.message:
            text += " — " + batch.message
        return text

    # -- actions -----------------------------------------------------------------------
    def _cancel_clicked(self) -> None:
        batch = self.selected_batch()
        if batch is not None:
            emit(self.cancel_requested, batch.id)

    def _retry_clicked(self) -> None:
        batch = self.selected_batch()
        if batch is not None:
            emit(self.retry_requested, batch.id)

    def clear_finished(self) -> None:
        ids = self.model.finished_batch_ids()
        for batch_id in ids:
            self.model.remove_batch(batch_id)
        self._update_buttons()
        if ids:
            emit(self.cleared, ids)

    def error_text(self) -> Optional[str]:
        """The error story of the selection (a failed job, or every distinct error of a batch)."""
        job = self.selected_job()
        if job is not None:
            if job.error is None or job.error.kind == "cancelled":
                return None
            return error_details(job.error, job)
        batch = self.selected_batch()
        if batch is None or not batch.errors:
            return None
        failed = [j for j in batch.jobs if j.state is JobState.FAILED]
        head = f"{batch.name}: {len(failed)} of {len(batch.jobs)} failed"
        return head + "\n\n" + "\n\n".join(error_details(e) for e in batch.errors)

    def error_traceback(self) -> Optional[str]:
        job = self.selected_job()
        errors = (
            [job.error]
            if job is not None and job.error is not None
            else list(getattr(self.selected_batch(), "errors", ()) or ())
        )
        tracebacks = [e.traceback for e in errors if e.traceback]
        return "\n\n".join(tracebacks) if tracebacks else None

    def show_error(self) -> Optional[QtWidgets.QMessageBox]:
        """Open (non-modal) a box with the selected error and its traceback under "details"."""
        text = self.error_text()
        if text is None:
            return None
        if self.error_box is not None:
            self.error_box.close()
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Job error")
        box.setText(text)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        tb = self.error_traceback()
        if tb:
            box.setDetailedText(tb)
        box.setModal(False)
        box.show()
        self.error_box = box
        return box

    def _double_clicked(self, index: QtCore.QModelIndex) -> None:
        if self.error_text() is not None:
            self.show_error()
