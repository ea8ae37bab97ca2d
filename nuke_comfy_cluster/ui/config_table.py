"""The config editor's table pane: one row per server entry of the decoded JSON.

The pane shows entries and reports cell edits as ``entry_edited(row, field, value)``;
the dialog applies them to the decoded JSON and rewrites the text, which stays the
source of truth. Entries given by ``"url"`` show that URL (and its port, not editable
apart from it).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..core.config import ConfigIssue
from .config_text import ERROR_BG, ERROR_FG, OK_FG, WARNING_BG
from .qt import QtCore, QtGui, QtWidgets, Signal, emit

Qt = QtCore.Qt

COL_NAME, COL_IP, COL_PORT, COL_PRIORITY, COL_ENABLED, COL_DIR_LOCAL, COL_DIR_REMOTE, COL_TEST = range(8)
TABLE_HEADERS = ("Name", "Host, IP or URL", "Port", "Priority", "Enabled", "Local folder", "Remote folder", "Test")
HEADER_TIPS = (
    "A unique name; nodes and the panel show it",
    'Host name or IP address ("ip"), or the whole address with http(s):// ("url")',
    "1-65535 (part of the URL when the address is a URL)",
    "Lower number = preferred when loads are equal",
    "Untick to keep the entry without sending work to it",
    "This machine's path of the shared drive (dir_local)",
    "The server's path of the same drive (dir_remote)",
    "The last connection test (select a row, then Test connection)",
)
_TABLE_FIELDS = {
    COL_NAME: "name",
    COL_IP: "ip",
    COL_PORT: "port",
    COL_PRIORITY: "priority",
    COL_DIR_LOCAL: "dir_local",
    COL_DIR_REMOTE: "dir_remote",
}
INT_FIELDS = ("port", "priority")
#: (least, most) width of each column when fitted to its contents: every column readable
#: at the dialog's default size, long paths cut with "…" (the tooltip has them whole)
_WIDTHS = {
    COL_NAME: (90, 170),
    COL_IP: (120, 320),
    COL_PORT: (50, 70),
    COL_PRIORITY: (56, 80),
    COL_ENABLED: (60, 80),
    COL_DIR_LOCAL: (100, 260),
    COL_DIR_REMOTE: (100, 260),
    COL_TEST: (50, 90),
}
_READ_ONLY = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled


def entries_of(data: Any) -> Optional[List[Any]]:
    """The server entries of decoded JSON, or None when it has no array to edit."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        servers = data.get("servers")
        if isinstance(servers, list):
            return servers
        if any(key in data for key in ("name", "ip", "url", "port")):
            return None  # one server object: the table edits it once it is made an array
    return None


def uses_url(entry: Mapping[str, Any]) -> bool:
    """True when the entry's address is its ``"url"`` (the host column edits that)."""
    return "url" in entry and "ip" not in entry


def _url_port(url: Any) -> str:
    try:
        port = urlsplit(str(url)).port
    except ValueError:  # a port that is not a number: validation says so
        return ""
    return "" if port is None else str(port)


class ServerEntriesPane(QtWidgets.QWidget):
    """The table, a note when it cannot be edited, and Add / Duplicate / Remove / Test."""

    #: a cell was edited: (row, field, value); ``field`` is a server field or "enabled"
    entry_edited = Signal(int, str, object)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.table = QtWidgets.QTableWidget(0, len(TABLE_HEADERS), self)
        self.table.setHorizontalHeaderLabels(list(TABLE_HEADERS))
        for col, tip in enumerate(HEADER_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # paths: both ends tell
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, (least, _most) in _WIDTHS.items():
            self.table.setColumnWidth(col, least)
        self.table.itemChanged.connect(self._item_changed)
        self.note = QtWidgets.QLabel(self)
        self.note.setWordWrap(True)

        self.add_button = QtWidgets.QPushButton("Add", self)
        self.duplicate_button = QtWidgets.QPushButton("Duplicate", self)
        self.remove_button = QtWidgets.QPushButton("Remove", self)
        self.test_button = QtWidgets.QPushButton("Test connection", self)
        self.test_button.setToolTip("Ask the selected server for /system_stats (in the background)")
        buttons = QtWidgets.QHBoxLayout()
        for button in (self.add_button, self.duplicate_button, self.remove_button, self.test_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)
        self._url_rows: List[bool] = []

    # -- showing -----------------------------------------------------------------------------
    def fill(
        self,
        entries: Sequence[Any],
        issues: Sequence[ConfigIssue],
        test_results: Mapping[str, Tuple[bool, str]],
    ) -> None:
        """Show ``entries``, tinting the rows with problems and showing the last tests."""
        problems: Dict[int, List[str]] = {}
        for issue in issues:
            if issue.index is not None:
                problems.setdefault(issue.index, []).append(
                    ("" if issue.level == "error" else "Warning: ") + issue.message
                )
        table = self.table
        blocked = table.blockSignals(True)
        try:
            table.setRowCount(len(entries))
            self._url_rows = []
            for row, entry in enumerate(entries):
                obj = entry if isinstance(entry, dict) else {}
                self._url_rows.append(uses_url(obj))
                for col in _TABLE_FIELDS:
                    table.setItem(row, col, self._field_item(obj, col, isinstance(entry, dict)))
                enabled = QtWidgets.QTableWidgetItem()
                enabled.setFlags(_READ_ONLY | Qt.ItemFlag.ItemIsUserCheckable)
                enabled.setCheckState(
                    Qt.CheckState.Checked if obj.get("enabled", True) is not False else Qt.CheckState.Unchecked
                )
                table.setItem(row, COL_ENABLED, enabled)
                table.setItem(row, COL_TEST, self._test_item(test_results.get(str(obj.get("name", "")))))
                self._tint(row, problems.get(row))
        finally:
            table.blockSignals(blocked)
        self.fit_columns()

    def _field_item(self, obj: Mapping[str, Any], col: int, is_object: bool) -> QtWidgets.QTableWidgetItem:
        field = _TABLE_FIELDS[col]
        by_url = uses_url(obj)
        tip = ""
        if col == COL_IP and by_url:
            value: Any = obj.get("url", "")
            tip = 'The whole address ("url")'
        elif col == COL_PORT and by_url:
            value = _url_port(obj.get("url"))
            tip = "Part of the URL: edit the address to change it"
        else:
            value = obj.get(field, "")
        item = QtWidgets.QTableWidgetItem("" if value is None else str(value))
        if not is_object:
            item.setFlags(_READ_ONLY)
            if col == COL_NAME:
                item.setText("(not a server object)")
        elif col == COL_PORT and by_url:
            item.setFlags(_READ_ONLY)
            item.setForeground(QtGui.QBrush(self.palette().color(QtGui.QPalette.ColorRole.PlaceholderText)))
        if col in (COL_DIR_LOCAL, COL_DIR_REMOTE, COL_IP) and value:
            tip = (tip + "\n" if tip else "") + str(value)
        if tip:
            item.setToolTip(tip)
        return item

    @staticmethod
    def _test_item(result: Optional[Tuple[bool, str]]) -> QtWidgets.QTableWidgetItem:
        item = QtWidgets.QTableWidgetItem()
        item.setFlags(_READ_ONLY)
        if result is not None:
            ok, message = result
            item.setText("ok" if ok else "failed")
            item.setToolTip(message)
            item.setForeground(QtGui.QBrush(QtGui.QColor(OK_FG if ok else ERROR_FG)))
        return item

    def _tint(self, row: int, problems: Optional[List[str]]) -> None:
        if not problems:
            return
        has_error = any(not p.startswith("Warning: ") for p in problems)
        for col in range(len(TABLE_HEADERS)):
            item = self.table.item(row, col)
            if item is None:
                continue
            item.setBackground(QtGui.QBrush(ERROR_BG if has_error else WARNING_BG))
            if col != COL_TEST:
                item.setToolTip("\n".join(problems))

    def fit_columns(self) -> None:
        """Each column as wide as its title and cells; cells within bounds (see ``_WIDTHS``)."""
        header = self.table.horizontalHeader()
        for col, (least, most) in _WIDTHS.items():
            self.table.resizeColumnToContents(col)
            cells = min(self.table.columnWidth(col), most)
            self.table.setColumnWidth(col, max(least, header.sectionSizeHint(col), cells))

    def set_editable(self, editable: bool, note: str = "") -> None:
        self.table.setEnabled(editable)
        self.note.setText("" if editable else note)
        self.note.setVisible(not editable)

    def set_testing(self, row: int) -> None:
        item = self.table.item(row, COL_TEST)
        if item is not None:
            item.setText("testing…")

    # -- selection ---------------------------------------------------------------------------
    def selected_rows(self) -> List[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    def select_row(self, row: int) -> None:
        self.table.selectRow(row)

    def update_buttons(self, can_add: bool) -> None:
        rows = bool(self.selected_rows()) and self.table.isEnabled()
        self.add_button.setEnabled(can_add)
        for button in (self.duplicate_button, self.remove_button, self.test_button):
            button.setEnabled(rows)

    # -- editing -----------------------------------------------------------------------------
    def _item_changed(self, item: QtWidgets.QTableWidgetItem) -> None:
        row, col = item.row(), item.column()
        if col == COL_ENABLED:
            emit(self.entry_edited, row, "enabled", item.checkState() == Qt.CheckState.Checked)
            return
        field = _TABLE_FIELDS.get(col)
        if field is None:
            return
        value: Any = item.text()
        if col == COL_IP and 0 <= row < len(self._url_rows) and self._url_rows[row]:
            field = "url"
        elif field in INT_FIELDS:
            stripped = value.strip()
            try:
                value = int(stripped)
            except ValueError:
                value = stripped  # kept as typed: validation names the problem
        emit(self.entry_edited, row, field, value)
