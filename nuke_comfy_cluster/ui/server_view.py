"""The server table widget: sorting, the priority spin box, and columns that fit a narrow dock."""

from __future__ import annotations

import functools
from typing import Any, List, Optional, Sequence, Set

from .qt import QtCore, QtWidgets, Signal, emit, exec_
from .server_table import (
    COL_ADDRESS,
    COL_ENABLED,
    COL_GPU,
    COL_LATENCY,
    COL_NAME,
    COL_PRIORITY,
    COL_QUEUE,
    COL_SEEN,
    COL_STATUS,
    COL_VRAM,
    HEADERS,
    NameRole,
    ServerTableModel,
    SortRole,
)

Qt = QtCore.Qt


class ServerTableDelegate(QtWidgets.QStyledItemDelegate):
    """A spin box for the priority column; the rest is drawn by the style."""

    def createEditor(self, parent: QtWidgets.QWidget, option: Any, index: QtCore.QModelIndex) -> Any:  # noqa: N802
        if index.column() == COL_PRIORITY:
            editor = QtWidgets.QSpinBox(parent)
            editor.setRange(-9999, 9999)
            editor.setToolTip("Lower number = preferred")
            editor.setFrame(False)
            return editor
        return super().createEditor(parent, option, index)

    def setEditorData(self, editor: QtWidgets.QWidget, index: QtCore.QModelIndex) -> None:  # noqa: N802
        if isinstance(editor, QtWidgets.QSpinBox):
            # only once: a live update arriving while the user types must not overwrite the value
            if not editor.property("ncc_initialised"):
                value = index.data(Qt.ItemDataRole.EditRole)
                editor.setValue(int(value) if value is not None else 0)
                editor.setProperty("ncc_initialised", True)
            return
        super().setEditorData(editor, index)

    def setModelData(self, editor: QtWidgets.QWidget, model: Any, index: QtCore.QModelIndex) -> None:  # noqa: N802
        if isinstance(editor, QtWidgets.QSpinBox):
            editor.interpretText()
            model.setData(index, editor.value(), Qt.ItemDataRole.EditRole)
            return
        super().setModelData(editor, model, index)


#: the columns a narrow table hides first, while the rest does not fit (the header's context
#: menu shows them again); Status and Name always stay
HIDE_ORDER = (COL_GPU, COL_VRAM, COL_SEEN, COL_LATENCY, COL_ADDRESS, COL_PRIORITY, COL_ENABLED, COL_QUEUE)
#: before one of these is hidden, a wide Status column is narrowed (down to its default)
_SHRINK_STATUS_FIRST = (COL_ENABLED, COL_QUEUE)
#: default widths; fit_columns() widens to the contents, never narrower than these
_DEFAULT_WIDTHS = {
    COL_STATUS: 104,
    COL_NAME: 90,
    COL_ADDRESS: 130,
    COL_QUEUE: 76,
    COL_PRIORITY: 58,
    COL_ENABLED: 62,
    COL_LATENCY: 64,
    COL_GPU: 150,
    COL_VRAM: 130,
    COL_SEEN: 80,
}
#: no column is made wider than this to fit its contents (the tooltip has the full text)
_MAX_FIT = {COL_STATUS: 230}
_MAX_FIT_DEFAULT = 360
#: columns whose text changes with the status, and the room their cells need besides the text
_GROWING = {COL_STATUS: 36, COL_QUEUE: 16}


class ServerTableView(QtWidgets.QTableView):
    """The table widget: sortable through a proxy, priority edited in place.

    Fits a narrow dock: columns that do not fit are hidden in :data:`HIDE_ORDER`
    (GPU and VRAM first); the header's context menu shows or hides any column, and
    a column chosen there stays as chosen.
    """

    columns_changed = Signal()

    def __init__(self, model: ServerTableModel, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._min_widths = dict(_DEFAULT_WIDTHS)
        #: the width each column wants (its contents, within bounds): what fitting adds up
        self._wanted = dict(_DEFAULT_WIDTHS)
        self._user_shown: Set[int] = set()
        self._user_hidden: Set[int] = set()
        self._auto_hidden: Set[int] = set()
        self._fitting = True  # until the defaults are in
        self.proxy = QtCore.QSortFilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.proxy.setSortRole(SortRole)
        self.proxy.setDynamicSortFilter(True)
        self.setModel(self.proxy)
        # only the priority column has a Python delegate (its spin box); Qt draws the rest alone
        self.setItemDelegateForColumn(COL_PRIORITY, ServerTableDelegate(self))
        self.setSortingEnabled(True)
        self.sortByColumn(COL_PRIORITY, Qt.SortOrder.AscendingOrder)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(
            QtWidgets.QAbstractItemView.EditTrigger.DoubleClicked
            | QtWidgets.QAbstractItemView.EditTrigger.EditKeyPressed
            | QtWidgets.QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.verticalHeader().setVisible(False)
        # compact rows (a style's default is up to 30 px): a docked panel shows more servers
        row = self.fontMetrics().height() + 6
        self.verticalHeader().setMinimumSectionSize(row)
        self.verticalHeader().setDefaultSectionSize(row)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._header_menu_requested)
        header.sectionResized.connect(self._section_resized)
        for col, width in _DEFAULT_WIDTHS.items():
            self.setColumnWidth(col, width)
        self._fitting = False

    # -- widths --------------------------------------------------------------------------
    def fit_columns(self) -> None:
        """Widen columns to their cells (fonts differ between hosts); never narrower than the
        defaults, which fit the titles. Then hide what does not fit the width."""
        self._fitting = True
        try:
            for col, minimum in self._min_widths.items():
                # the cells only: a title is cut with "…" before a column is hidden for it
                cells = self.sizeHintForColumn(col) + 8
                wanted = max(minimum, min(cells, _MAX_FIT.get(col, _MAX_FIT_DEFAULT)))
                self._wanted[col] = wanted
                if not self.isColumnHidden(col):
                    self.setColumnWidth(col, wanted)
        finally:
            self._fitting = False
        self.fit_to_width()

    def fit_grown_columns(self) -> None:
        """Widen the columns whose texts grew (a longer reason, a "+1 sent"), measured from
        the model's own texts (a few rows, no view round trips); fit_columns() does all."""
        model = self.proxy.sourceModel()
        metrics = self.fontMetrics()
        grown = False
        for col, extra in _GROWING.items():
            texts = [model.index(r, col).data() or "" for r in range(model.rowCount())]
            needed = max((metrics.horizontalAdvance(t) for t in texts), default=0) + extra
            needed = max(self._min_widths[col], min(needed, _MAX_FIT.get(col, _MAX_FIT_DEFAULT)))
            if needed > self._wanted[col]:
                self._wanted[col] = needed
                grown = True
        if grown:
            self.fit_to_width()

    def _section_resized(self, col: int, _old: int, new: int) -> None:
        # a width the user dragged is the one to keep and to count when fitting; the last
        # visible column is stretched to the edge by the header, not chosen
        if not self._fitting and new > 0 and col != self._last_visible():
            self._wanted[col] = new

    def _last_visible(self) -> int:
        header = self.horizontalHeader()
        for visual in range(header.count() - 1, -1, -1):
            col = header.logicalIndex(visual)
            if not header.isSectionHidden(col):
                return col
        return -1

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.fit_to_width()

    def fit_to_width(self) -> None:
        """Hide columns in :data:`HIDE_ORDER` until the rest fits the visible width."""
        available = self.viewport().width()
        if available <= 0:
            return
        shown = [c for c in range(len(HEADERS)) if c not in self._user_hidden]
        total = sum(self._wanted.get(c, 0) for c in shown)
        status = self._wanted.get(COL_STATUS, 0)
        floor = min(status, self._min_widths[COL_STATUS])
        auto: Set[int] = set()
        for col in HIDE_ORDER:
            if total <= available:
                break
            if col in _SHRINK_STATUS_FIRST and status > floor:
                # a long reason is cut with "…" (its tooltip has it) before a control goes
                cut = min(total - available, status - floor)
                status -= cut
                total -= cut
                if total <= available:
                    break
            if col in self._user_shown or col in self._user_hidden:
                continue
            auto.add(col)
            total -= self._wanted.get(col, 0)
        same = auto == self._auto_hidden and all(
            self.isColumnHidden(c) == (c in auto or c in self._user_hidden) for c in range(len(HEADERS))
        )
        self._fitting = True
        try:
            self._auto_hidden = auto
            for col in range(len(HEADERS)):
                hide = col in auto or col in self._user_hidden
                if self.isColumnHidden(col) != hide:
                    self.setColumnHidden(col, hide)
            last = self._last_visible()
            for col in range(len(HEADERS)):
                width = status if col == COL_STATUS else self._wanted.get(col, 80)
                if col != last and not self.isColumnHidden(col) and self.columnWidth(col) != width:
                    self.setColumnWidth(col, width)  # the last one is stretched to the edge
        finally:
            self._fitting = False
        if not same:
            emit(self.columns_changed)

    # -- the header menu: which columns --------------------------------------------------------
    def hidden_columns(self) -> List[int]:
        return [c for c in range(len(HEADERS)) if self.isColumnHidden(c)]

    def auto_hidden_columns(self) -> List[int]:
        """Hidden because they do not fit (not by the user's choice)."""
        return sorted(self._auto_hidden)

    def set_column_shown(self, col: int, shown: bool) -> None:
        """The user's choice for one column: it stays shown (the table scrolls) or hidden."""
        if col in (COL_STATUS, COL_NAME):
            return
        (self._user_shown if shown else self._user_hidden).add(col)
        (self._user_hidden if shown else self._user_shown).discard(col)
        self.fit_to_width()

    def reset_columns(self) -> None:
        """Forget the user's choices: columns are hidden only where they do not fit."""
        self._user_shown.clear()
        self._user_hidden.clear()
        self.fit_to_width()

    def column_menu(self, parent: Optional[QtWidgets.QWidget] = None) -> QtWidgets.QMenu:
        """The header's context menu: one checkable entry per column, and a reset."""
        menu = QtWidgets.QMenu(parent or self)
        for col, title in enumerate(HEADERS):
            if col in (COL_STATUS, COL_NAME):
                continue
            text = title + (" (hidden: no room)" if col in self._auto_hidden else "")
            action = menu.addAction(text)
            action.setCheckable(True)
            action.setChecked(not self.isColumnHidden(col))
            action.setData(col)
            action.toggled.connect(functools.partial(self.set_column_shown, col))
        menu.addSeparator()
        reset = menu.addAction("Fit columns to the width")
        reset.setToolTip("Show every column that fits; hide the others, GPU and VRAM first")
        reset.triggered.connect(self.reset_columns)
        return menu

    def _header_menu_requested(self, pos: QtCore.QPoint) -> None:
        menu = self.column_menu(self)
        exec_(menu, self.horizontalHeader().mapToGlobal(pos))
        menu.deleteLater()

    # -- rows ----------------------------------------------------------------------------------
    def source_row(self, proxy_row: int) -> int:
        return self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row()

    def selected_server(self) -> Optional[str]:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        return rows[0].data(NameRole)


def names_in_view_order(view: ServerTableView) -> Sequence[str]:
    """Server names as the (sorted) view shows them."""
    proxy = view.proxy
    return [proxy.index(r, COL_NAME).data(NameRole) for r in range(proxy.rowCount())]
