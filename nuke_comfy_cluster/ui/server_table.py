"""The live server table's model: one row per server of the latest :class:`PoolSnapshot`.

The model only ever holds immutable snapshots, replaced on the GUI thread. User
edits (enabled checkbox, priority) are not applied to the snapshot: the model
emits ``enabled_toggled`` / ``priority_edited`` and the panel hands them to the
pool, whose next snapshot shows the result.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..core.state import PoolSnapshot, ServerSnapshot, ServerStatus
from .qt import QtCore, QtGui, Signal, apply_binding_fixes, emit, enum_value
from .server_texts import (  # noqa: F401 - re-exported: the table's wording
    STATUS_COLOURS,
    format_age,
    format_bytes,
    short_gpu_name,
    status_colour_name,
    status_text,
    status_tooltip,
    status_word,
)

Qt = QtCore.Qt

#: the value sorting compares, per column (numbers sort as numbers)
SortRole = int(Qt.ItemDataRole.UserRole) + 1
#: the status colour as a QColor (what the dot and the word are drawn in)
StatusColourRole = int(Qt.ItemDataRole.UserRole) + 2
#: the server name of the row, whatever the column
NameRole = int(Qt.ItemDataRole.UserRole) + 3

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_DECORATION = int(Qt.ItemDataRole.DecorationRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_FONT = int(Qt.ItemDataRole.FontRole)
_CHECK = int(Qt.ItemDataRole.CheckStateRole)
_ALIGN = int(Qt.ItemDataRole.TextAlignmentRole)
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_BASE_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_LEFT = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter

COL_STATUS, COL_NAME, COL_ADDRESS, COL_QUEUE, COL_PRIORITY, COL_ENABLED, COL_LATENCY, COL_GPU, COL_VRAM, COL_SEEN = (
    range(10)
)
_FLAGS = {
    COL_ENABLED: _BASE_FLAGS | Qt.ItemFlag.ItemIsUserCheckable,
    COL_PRIORITY: _BASE_FLAGS | Qt.ItemFlag.ItemIsEditable,
}
HEADERS = (
    "Status",
    "Name",
    "Host:port",
    "Run / wait",
    "Priority",
    "Enabled",
    "Latency",
    "GPU",
    "VRAM free",
    "Last seen",
)
HEADER_TIPS = (
    "Whether the balancer uses the server, and why not when it does not",
    "The server's name; the one the balancer would pick next is bold with an arrow",
    "Address and port",
    "Prompts running / waiting in the server's queue, from every artist.\n"
    "“+N sent”: prompts this Nuke sent that the server has not listed yet.",
    "Lower number = preferred when loads are equal (double-click to edit)",
    "Untick to stop sending work to this server (takes effect at once)",
    "Round trip of the last status request",
    "The server's first device",
    "Free / total video memory",
    "Live: connected by websocket (queue pushed); else the time since it last answered",
)

_icon_cache: Dict[Tuple[str, str], QtGui.QIcon] = {}
_paint_cache: Dict[Tuple[str, str], Any] = {}


def cached_colour(name: str) -> QtGui.QColor:
    """One QColor per colour name: cells share it, so comparing cells costs no Qt call."""
    key = ("colour", name)
    if key not in _paint_cache:
        _paint_cache[key] = QtGui.QColor(name)
    return _paint_cache[key]


def cached_brush(name: str) -> QtGui.QBrush:
    key = ("brush", name)
    if key not in _paint_cache:
        _paint_cache[key] = QtGui.QBrush(cached_colour(name))
    return _paint_cache[key]


def bold_font() -> QtGui.QFont:
    key = ("font", "bold")
    if key not in _paint_cache:
        font = QtGui.QFont()
        font.setBold(True)
        _paint_cache[key] = font
    return _paint_cache[key]


def dot_icon(colour: str, shape: str = "dot") -> QtGui.QIcon:
    """A small coloured dot (or a "next" arrow) painted once and cached."""
    key = (colour, shape)
    icon = _icon_cache.get(key)
    if icon is None:
        pixmap = QtGui.QPixmap(12, 12)
        pixmap.fill(QtGui.QColor(0, 0, 0, 0))
        painter = QtGui.QPainter(pixmap)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        painter.setPen(QtCore.Qt.PenStyle.NoPen)
        painter.setBrush(QtGui.QColor(colour))
        if shape == "arrow":
            painter.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(2, 1), QtCore.QPointF(11, 6), QtCore.QPointF(2, 11)]))
        else:
            painter.drawEllipse(QtCore.QRectF(1, 1, 10, 10))
        painter.end()
        icon = QtGui.QIcon(pixmap)
        _icon_cache[key] = icon
    return icon


def _same_cell(old: Dict[int, Any], new: Dict[int, Any], col: int) -> bool:
    if col in (COL_SEEN, COL_LATENCY):
        # their sort keys move with every poll while the text stays the same: redraw (and
        # re-sort) when what is shown changes, not for a millisecond of latency
        return {k: v for k, v in old.items() if k != SortRole} == {k: v for k, v in new.items() if k != SortRole}
    return old == new


def _checked(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return enum_value(value) == enum_value(Qt.CheckState.Checked)
    except (TypeError, ValueError):
        return bool(value)


class ServerTableModel(QtGui.QStandardItemModel):
    """One row per server of the latest :class:`PoolSnapshot`.

    The cells live in Qt's own item storage and are written only when what they show
    changes. Why not a Python ``data()``: a repaint asks it for every role of every
    visible cell, each call a round trip that must take the GIL back from the pool's
    and dispatcher's threads; measured, a full repaint of 20 rows went from 17 ms to
    61 ms with four busy Python threads, against 3.5 ms to 4.4 ms from items.
    """

    enabled_toggled = Signal(str, bool)
    priority_edited = Signal(str, int)

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(0, len(HEADERS), parent)
        apply_binding_fixes()
        for col, (text, tip) in enumerate(zip(HEADERS, HEADER_TIPS)):
            self.setHeaderData(col, Qt.Orientation.Horizontal, text, Qt.ItemDataRole.DisplayRole)
            self.setHeaderData(col, Qt.Orientation.Horizontal, tip, Qt.ItemDataRole.ToolTipRole)
        self._snapshot: Optional[PoolSnapshot] = None
        self._rows: List[ServerSnapshot] = []
        #: per row, per column: the role -> value last written to the item
        self._cells: List[List[Dict[int, Any]]] = []
        self._now = time.time()
        #: server name -> why a running batch left it out ("no node X")
        self._left_out: Dict[str, str] = {}

    # -- feeding -----------------------------------------------------------------------
    @property
    def snapshot(self) -> Optional[PoolSnapshot]:
        return self._snapshot

    def set_snapshot(self, snapshot: PoolSnapshot, now: Optional[float] = None) -> None:
        """Show ``snapshot``. With the same servers, rows are updated in place (selection,
        sorting and an open editor survive) and only the cells whose look changed are
        written (and redrawn). Otherwise the rows are rebuilt (one model reset)."""
        self._now = now if now is not None else time.time()
        rows = list(snapshot.servers)
        old_rows, old_next = self._rows, self._snapshot.next_server if self._snapshot is not None else None
        self._snapshot = snapshot
        if [s.name for s in rows] != [s.name for s in old_rows]:
            self._rebuild(rows)
            return
        self._rows = rows
        for row, (old, new) in enumerate(zip(old_rows, rows)):
            if old != new or (old.name == old_next) != (new.name == snapshot.next_server):
                self._update_row(row)

    def set_left_out(self, reasons: Mapping[str, str]) -> None:
        """Show why running batches leave servers out (server name -> reason)."""
        reasons = dict(reasons)
        if reasons == self._left_out:
            return
        changed = {n for n in set(reasons) | set(self._left_out) if reasons.get(n) != self._left_out.get(n)}
        self._left_out = reasons
        for row, server in enumerate(self._rows):
            if server.name in changed:
                self._update_row(row)

    def left_out(self, name: str) -> Optional[str]:
        return self._left_out.get(name)

    def tick(self, now: Optional[float] = None) -> None:
        """Time moved on: rewrite the cells whose time-dependent text changed (last seen, cooldown)."""
        self._now = now if now is not None else time.time()
        for row, server in enumerate(self._rows):
            cells = self._cells[row]
            if any(cells[col].get(_DISPLAY) != self._display(server, col, self._now) for col in (COL_STATUS, COL_SEEN)):
                self._update_row(row)

    def _rebuild(self, rows: List[ServerSnapshot]) -> None:
        self.beginResetModel()
        blocked = self.blockSignals(True)  # one reset, not a signal per item
        try:
            self._rows = rows
            self._cells = [self._compute_row(server) for server in rows]
            self.setRowCount(0)
            self.setRowCount(len(rows))
            for row, cells in enumerate(self._cells):
                for col, cell in enumerate(cells):
                    item = QtGui.QStandardItem()
                    item.setFlags(_FLAGS.get(col, _BASE_FLAGS))
                    self.setItem(row, col, item)
                    self.setItemData(self.index(row, col), cell)
        finally:
            self.blockSignals(blocked)
        self.endResetModel()

    def _update_row(self, row: int) -> None:
        old = self._cells[row]
        new = self._cells[row] = self._compute_row(self._rows[row])
        for col in range(len(HEADERS)):
            if _same_cell(old[col], new[col], col):
                continue
            values = dict(new[col])
            for role in old[col]:
                if role not in values:
                    values[role] = None  # clears the role
            self.setItemData(self.index(row, col), values)

    def server_at(self, row: int) -> Optional[ServerSnapshot]:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, name: str) -> int:
        for i, server in enumerate(self._rows):
            if server.name == name:
                return i
        return -1

    def _compute_row(self, server: ServerSnapshot) -> List[Dict[int, Any]]:
        now = self._now
        is_next = self._snapshot is not None and self._snapshot.next_server == server.name
        colour = status_colour_name(server, now)
        grey = None if server.enabled else cached_brush(STATUS_COLOURS[ServerStatus.DISABLED.value])
        cells: List[Dict[int, Any]] = []
        for col in range(len(HEADERS)):
            cell: Dict[int, Any] = {
                _DISPLAY: self._display(server, col, now),
                SortRole: self._sort_key(server, col, now),
                NameRole: server.name,
                StatusColourRole: cached_colour(colour),
                _ALIGN: _RIGHT if col in (COL_QUEUE, COL_PRIORITY, COL_LATENCY, COL_VRAM) else _LEFT,
            }
            tip = self._tooltip(server, col, now, is_next)
            if tip:
                cell[_TOOLTIP] = tip
            if col == COL_STATUS:
                cell[_DECORATION] = dot_icon(colour)
                cell[_FOREGROUND] = cached_brush(colour)
            elif grey is not None:
                cell[_FOREGROUND] = grey
            if col == COL_NAME and is_next:
                cell[_DECORATION] = dot_icon(STATUS_COLOURS[ServerStatus.ONLINE.value], "arrow")
                cell[_FONT] = bold_font()
            if col == COL_ENABLED:
                cell[_CHECK] = Qt.CheckState.Checked if server.enabled else Qt.CheckState.Unchecked
            cells.append(cell)
        return cells

    def _display(self, server: ServerSnapshot, col: int, now: float) -> Any:
        if col == COL_STATUS:
            return status_text(server, now, self._left_out.get(server.name))
        if col == COL_NAME:
            return server.name
        if col == COL_ADDRESS:
            host = f"[{server.host}]" if ":" in server.host else server.host
            return f"{host}:{server.port}"
        if col == COL_QUEUE:
            if server.status is ServerStatus.UNKNOWN or not server.status.reachable:
                return "–"
            text = f"{server.queue_running} / {server.queue_pending}"
            return text + f" +{server.in_flight} sent" if server.in_flight else text
        if col == COL_PRIORITY:
            return str(server.priority)
        if col == COL_ENABLED:
            return ""
        if col == COL_LATENCY:
            return "–" if server.latency_ms is None else f"{server.latency_ms:.0f} ms"
        if col == COL_GPU:
            return short_gpu_name(server.device.name) or "–"
        if col == COL_VRAM:
            if not server.device.vram_total:
                return "–"
            return f"{format_bytes(server.device.vram_free)} / {format_bytes(server.device.vram_total)}"
        if col == COL_SEEN:
            if server.live and server.status.reachable:
                return "live"
            seen = server.last_status_check
            return format_age(None if seen is None else now - seen)
        return None

    def _sort_key(self, server: ServerSnapshot, col: int, now: float) -> Any:
        if col == COL_STATUS:
            order = ("online", "busy", "cooling down", "unknown", "error", "offline", "disabled")
            word = status_word(server, now)
            return order.index(word) if word in order else len(order)
        if col == COL_QUEUE:
            return server.load if server.status.reachable else 1 << 30
        if col == COL_PRIORITY:
            return server.priority
        if col == COL_ENABLED:
            return 1 if server.enabled else 0
        if col == COL_LATENCY:
            return server.latency_ms if server.latency_ms is not None else float("inf")
        if col == COL_VRAM:
            return server.device.vram_free
        if col == COL_SEEN:
            return -(server.last_status_check or 0.0)  # most recent first
        if col == COL_ADDRESS:
            return f"{server.host.lower()}:{server.port:05d}"
        return str(self._display(server, col, now)).lower()

    def _tooltip(self, server: ServerSnapshot, col: int, now: float, is_next: bool) -> Optional[str]:
        if col == COL_STATUS:
            return status_tooltip(server, now, self._left_out.get(server.name))
        if col == COL_NAME:
            text = server.url
            if is_next:
                text += "\nThe balancer would send the next prompt here"
            if server.dir_local or server.dir_remote:
                text += "\nPaths: {} -> {}".format(server.dir_local or "?", server.dir_remote or "?")
            return text
        if col == COL_QUEUE:
            return "{} running, {} waiting in its queue (every artist's){}".format(
                server.queue_running,
                server.queue_pending,
                f"; {server.in_flight} sent from here, not listed by the server yet" if server.in_flight else "",
            )
        if col == COL_GPU:
            device = server.device
            if not device.name:
                return None
            extra = f" · ComfyUI {device.comfyui_version}" if device.comfyui_version else ""
            return device.name + extra
        if col == COL_SEEN:
            last = server.last_status_check
            when = (
                "Last answer {}".format(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last)))
                if last
                else "Never answered"
            )
            return when + ("\nLive: the server pushes its queue over the websocket" if server.live else "")
        if col == COL_LATENCY and server.counters.mean_latency_ms is not None:
            return f"Mean frame time here: {server.counters.mean_latency_ms / 1000.0:.1f} s"
        return None

    def setData(self, index: QtCore.QModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        """A user edit (checkbox, priority): reported, not stored; the pool's next snapshot shows it."""
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return False
        server = self._rows[index.row()]
        if index.column() == COL_ENABLED and role == Qt.ItemDataRole.CheckStateRole:
            emit(self.enabled_toggled, server.name, _checked(value))
            return True
        if index.column() == COL_PRIORITY and role == Qt.ItemDataRole.EditRole:
            try:
                priority = int(value)
            except (TypeError, ValueError):
                return False
            if priority != server.priority:
                emit(self.priority_edited, server.name, priority)
            return True
        return False
