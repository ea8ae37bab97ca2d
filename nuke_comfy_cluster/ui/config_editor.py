"""The configuration editor: the servers' JSON text and a table, edited in step, validated live.

The JSON text is the source of truth (the user's layout and ``"_comment"`` keys
survive a save). The table shows the decoded entries; a table edit rewrites the
text, a text edit that decodes rebuilds the table. Validation is
:func:`~nuke_comfy_cluster.core.config.parse_servers`, the same the pool uses, with
errors marked at their line and column.

Where Save writes: the file ``NUKE_COMFYUI_SERVERS`` names; when the variable is
unset or holds inline JSON, the user's config file
(:func:`~nuke_comfy_cluster.core.config_store.default_config_path`) and the dialog
says how to point the variable at it. Every file operation (read, save, backup,
restore, import, export) and every connection test runs on a worker thread: the
file may sit on a network share, and saving waits for a lock.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import config as config_mod
from ..core import config_store
from ..core.config import ENV_SERVERS, ConfigIssue, ConfigLoad, ServerConfig, load_config, parse_servers
from .qt import QtCore, QtGui, QtWidgets, Signal, apply_binding_fixes, emit, exec_
from .workers import TaskError, TaskRunner

log = logging.getLogger(__name__)
Qt = QtCore.Qt

VALIDATE_DELAY_MS = 250

COL_NAME, COL_IP, COL_PORT, COL_PRIORITY, COL_ENABLED, COL_DIR_LOCAL, COL_DIR_REMOTE, COL_TEST = range(8)
TABLE_HEADERS = ("Name", "Host / IP", "Port", "Priority", "Enabled", "Local folder", "Remote folder", "Test")
_TABLE_FIELDS = {
    COL_NAME: "name",
    COL_IP: "ip",
    COL_PORT: "port",
    COL_PRIORITY: "priority",
    COL_DIR_LOCAL: "dir_local",
    COL_DIR_REMOTE: "dir_remote",
}
_INT_FIELDS = ("port", "priority")

ERROR_BG = QtGui.QColor(214, 69, 65, 70)
WARNING_BG = QtGui.QColor(224, 161, 0, 60)
ERROR_FG = "#d64541"
WARNING_FG = "#c98a00"
OK_FG = "#3aa655"

#: what ask_unsaved() answers
SAVE, DISCARD, CANCEL = "save", "discard", "cancel"


def target_for(environ: Mapping[str, str]) -> Tuple[Path, str]:
    """(file Save writes, why): ``"file"`` when NUKE_COMFYUI_SERVERS names a file,
    ``"inline"`` when it holds JSON, ``"unset"`` when it is empty."""
    raw = str(environ.get(ENV_SERVERS) or "").strip()
    value = config_mod._unquote(raw)  # noqa: SLF001 - the same reading as load_config
    if value and value[0] not in "[{":
        return Path(os.path.abspath(config_mod._expand(value, environ))), "file"  # noqa: SLF001
    return config_store.default_config_path(), "inline" if value else "unset"


def _issue_first_line(issue: ConfigIssue) -> str:
    return issue.message.split("\n")[0]


def _entries_of(data: Any) -> Optional[List[Any]]:
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


class RestoreDialog(QtWidgets.QDialog):
    """Pick one of the timestamped backups."""

    def __init__(self, backups: Sequence[config_store.BackupInfo], parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Restore a backup")
        self.backups = list(backups)
        self.list = QtWidgets.QListWidget(self)
        for info in self.backups:
            local = info.created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            count = (
                "unreadable"
                if info.servers is None
                else "{} server{}".format(info.servers, "" if info.servers == 1 else "s")
            )
            item = QtWidgets.QListWidgetItem(f"{local} — {count}")
            item.setToolTip(str(info.path))
            self.list.addItem(item)
        if self.backups:
            self.list.setCurrentRow(0)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel, parent=self
        )
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Restore")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(QtWidgets.QLabel("The current file is backed up first, so a restore can be undone.", self))
        layout.addWidget(self.list)
        layout.addWidget(buttons)

    def chosen(self) -> Optional[config_store.BackupInfo]:
        row = self.list.currentRow()
        return self.backups[row] if 0 <= row < len(self.backups) else None


class ConfigEditorDialog(QtWidgets.QDialog):
    """Edit, validate, save, back up, restore, import and export the server list."""

    #: the issues of the latest validation
    validated = Signal(list)
    #: a file operation ended: (operation, ok, message); operations are
    #: "load", "save", "backup", "restore", "import", "export", "reload"
    operation_finished = Signal(str, bool, str)
    #: the pool took the saved servers (the ConfigLoad it was given)
    pool_reloaded = Signal(object)
    #: a connection test ended: (server name, ok, message)
    test_finished = Signal(str, bool, str)

    def __init__(
        self,
        pool: Any = None,
        parent: Optional[QtWidgets.QWidget] = None,
        *,
        path: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
        runner: Optional[TaskRunner] = None,
    ) -> None:
        super().__init__(parent)
        apply_binding_fixes()
        self.setWindowTitle("ComfyUI Cluster — servers")
        self.pool = pool
        self.environ: Dict[str, str] = dict(os.environ if environ is None else environ)
        if path is not None:
            self.target, self.mode = Path(path), "explicit"
        else:
            self.target, self.mode = target_for(self.environ)
        self._own_runner = runner is None
        self.runner = runner if runner is not None else TaskRunner(self)
        self.issues: List[ConfigIssue] = []
        self.servers: List[ServerConfig] = []
        self._data: Any = None
        self._baseline = ""
        self._syncing = False
        self._busy = 0
        self._close_after_save = False
        self._test_results: Dict[str, Tuple[bool, str]] = {}
        self.last_message = ""
        #: True once the file (or the proposal for a new one) is in the editor
        self.ready = False
        self._build()
        self._validate_timer = QtCore.QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(self.validate_now)
        self.editor.textChanged.connect(self._text_changed)
        self.resize(980, 640)
        self.load()

    # -- layout --------------------------------------------------------------------------
    def _build(self) -> None:
        self.where = QtWidgets.QLabel(self)
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setText(self._where_text())

        self.editor = QtWidgets.QPlainTextEdit(self)
        self.editor.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.editor.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setTabChangesFocus(False)
        self.editor.cursorPositionChanged.connect(self._cursor_moved)
        self.position = QtWidgets.QLabel(self)

        self.table = QtWidgets.QTableWidget(0, len(TABLE_HEADERS), self)
        self.table.setHorizontalHeaderLabels(list(TABLE_HEADERS))
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in (
            (COL_NAME, 110),
            (COL_IP, 120),
            (COL_PORT, 60),
            (COL_PRIORITY, 60),
            (COL_ENABLED, 60),
            (COL_DIR_LOCAL, 120),
            (COL_DIR_REMOTE, 120),
        ):
            self.table.setColumnWidth(col, width)
        self.table.itemChanged.connect(self._table_item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table_note = QtWidgets.QLabel(self)
        self.table_note.setWordWrap(True)

        self.add_button = QtWidgets.QPushButton("Add", self)
        self.add_button.clicked.connect(self.add_server)
        self.duplicate_button = QtWidgets.QPushButton("Duplicate", self)
        self.duplicate_button.clicked.connect(self.duplicate_selected)
        self.remove_button = QtWidgets.QPushButton("Remove", self)
        self.remove_button.clicked.connect(self.remove_selected)
        self.test_button = QtWidgets.QPushButton("Test connection", self)
        self.test_button.setToolTip("Ask the selected server for /system_stats (in the background)")
        self.test_button.clicked.connect(self.test_selected)
        row_buttons = QtWidgets.QHBoxLayout()
        for button in (self.add_button, self.duplicate_button, self.remove_button, self.test_button):
            row_buttons.addWidget(button)
        row_buttons.addStretch(1)

        table_box = QtWidgets.QWidget(self)
        table_layout = QtWidgets.QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.table, 1)
        table_layout.addWidget(self.table_note)
        table_layout.addLayout(row_buttons)

        text_box = QtWidgets.QWidget(self)
        text_layout = QtWidgets.QVBoxLayout(text_box)
        text_layout.setContentsMargins(0, 0, 0, 0)
        text_layout.addWidget(self.editor, 1)
        text_layout.addWidget(self.position)

        self.splitter = QtWidgets.QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(text_box)
        self.splitter.addWidget(table_box)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)

        self.summary = QtWidgets.QLabel(self)
        self.issue_list = QtWidgets.QListWidget(self)
        self.issue_list.setMaximumHeight(110)
        self.issue_list.itemActivated.connect(self._issue_activated)
        self.issue_list.itemClicked.connect(self._issue_activated)

        self.import_button = QtWidgets.QPushButton("Import…", self)
        self.import_button.setToolTip("Load a server file into the editor (Save writes it)")
        self.import_button.clicked.connect(self._import_clicked)
        self.export_button = QtWidgets.QPushButton("Export…", self)
        self.export_button.setToolTip("Write the valid servers to another file (tokens left out unless you ask)")
        self.export_button.clicked.connect(self._export_clicked)
        self.backup_button = QtWidgets.QPushButton("Backup now", self)
        self.backup_button.clicked.connect(self.backup_now)
        self.restore_button = QtWidgets.QPushButton("Restore…", self)
        self.restore_button.clicked.connect(self._restore_clicked)
        self.save_button = QtWidgets.QPushButton("Save", self)
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        self.close_button = QtWidgets.QPushButton("Close", self)
        self.close_button.clicked.connect(self.close)
        bottom = QtWidgets.QHBoxLayout()
        for button in (self.import_button, self.export_button, self.backup_button, self.restore_button):
            bottom.addWidget(button)
        bottom.addStretch(1)
        bottom.addWidget(self.save_button)
        bottom.addWidget(self.close_button)

        self.status = QtWidgets.QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.where)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.issue_list)
        layout.addWidget(self.status)
        layout.addLayout(bottom)

    def _where_text(self) -> str:
        path = str(self.target)
        if self.mode == "file":
            return (
                f"Editing <b>{_html(path)}</b> (named by {ENV_SERVERS}). Save writes it atomically and keeps a backup."
            )
        if self.mode == "explicit":
            return f"Editing <b>{_html(path)}</b>. Save writes it atomically and keeps a backup."
        hint = f"set {ENV_SERVERS}={_html(path)} (in your environment or Nuke's init.py) so Nuke reads it at start-up"
        if self.mode == "inline":
            return (
                f"{ENV_SERVERS} holds inline JSON, which this editor cannot change. Save writes <b>{_html(path)}</b> and the running "
                f"session uses it; to keep using it, {hint}."
            )
        return f"{ENV_SERVERS} is not set. Save writes <b>{_html(path)}</b> and the running session uses it; to keep using it, {hint}."

    # -- state -----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.editor.toPlainText()

    @property
    def dirty(self) -> bool:
        """True when the editor holds changes not written to the file."""
        return self.text != self._baseline

    @property
    def busy(self) -> bool:
        return self._busy > 0

    @property
    def errors(self) -> List[ConfigIssue]:
        return [i for i in self.issues if i.level == "error"]

    def _set_status(self, text: str, level: str = "info") -> None:
        self.last_message = text
        colour = {"error": ERROR_FG, "warning": WARNING_FG, "ok": OK_FG}.get(level, "")
        self.status.setStyleSheet(f"color: {colour};" if colour else "")
        self.status.setText(text)

    def _run(
        self,
        operation: str,
        fn: Callable[[], Any],
        on_done: Callable[[Any], Optional[str]],
        on_error: Optional[Callable[[TaskError], None]] = None,
    ) -> bool:
        """Run a file operation on a worker; ``on_done`` returns the status text."""

        def done(result: Any) -> None:
            self._busy -= 1
            self._update_buttons()
            try:
                message = on_done(result) or ""
            except Exception as e:  # noqa: BLE001 - a bug here must be shown, not swallowed
                log.exception("config editor: %s failed after the worker", operation)
                message = f"{type(e).__name__}: {e}"
                self._set_status(message, "error")
                emit(self.operation_finished, operation, False, message)
                return
            emit(self.operation_finished, operation, True, message)

        def failed(error: TaskError) -> None:
            self._busy -= 1
            self._update_buttons()
            if on_error is not None:
                on_error(error)
            self._set_status(error.message, "error")
            emit(self.operation_finished, operation, False, error.message)

        self._busy += 1
        started = self.runner.run("config-" + operation, fn, done, failed)
        if not started:
            self._busy -= 1
            self._set_status(f"Cannot {operation} now: the panel is closing", "error")
            return False
        self._update_buttons()
        return True

    # -- loading ----------------------------------------------------------------------------
    def _initial_text(self) -> str:
        """What to show when the target file does not exist yet: the servers in use now."""
        raw = str(self.environ.get(ENV_SERVERS) or "").strip()
        if self.mode == "inline":
            value = config_mod._unquote(raw)  # noqa: SLF001
            try:
                return json.dumps(json.loads(value), indent=2, ensure_ascii=False) + "\n"
            except ValueError:
                return value + "\n"
        servers: Sequence[ServerConfig] = ()
        if self.pool is not None:
            servers = [s.config for s in self.pool.servers]
        if not servers:
            servers = load_config(self.environ).servers
        return config_mod.servers_to_json(servers)

    def load(self) -> bool:
        """(Re)read the target file into the editor, on a worker. Unsaved edits are asked about."""
        if self.dirty and self.ask_unsaved("reload the file") != DISCARD:
            return False
        target = self.target

        def read() -> Optional[str]:
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                return None
            return data.decode("utf-8-sig")

        def done(text: Optional[str]) -> str:
            exists = text is not None
            if text is None:
                text = self._initial_text()
            self._set_text(text, undoable=False)
            # a file that does not exist yet counts as unsaved only once the proposal is changed
            self._baseline = text
            self.ready = True
            self.validate_now()
            message = f"Loaded {target}" if exists else f"{target} does not exist yet: showing the servers in use"
            self._set_status(message)
            return message

        return self._run("load", read, done)

    # -- text <-> table ----------------------------------------------------------------------
    def _set_text(self, text: str, undoable: bool = True) -> None:
        self._syncing = True
        try:
            if undoable:
                cursor = QtGui.QTextCursor(self.editor.document())
                position = self.editor.textCursor().position()
                cursor.beginEditBlock()
                cursor.select(QtGui.QTextCursor.SelectionType.Document)
                cursor.insertText(text)
                cursor.endEditBlock()
                keep = self.editor.textCursor()
                keep.setPosition(min(position, len(text)))
                self.editor.setTextCursor(keep)
            else:
                self.editor.setPlainText(text)
        finally:
            self._syncing = False

    def set_text(self, text: str) -> None:
        """Replace the editor's text (undoable) and validate now."""
        self._set_text(text)
        self.validate_now()

    def _text_changed(self) -> None:
        if self._syncing:
            return
        self._validate_timer.start()
        self._update_buttons()

    def validate_now(self) -> List[ConfigIssue]:
        """Validate the text, mark the errors, rebuild the table when the JSON decodes."""
        self._validate_timer.stop()
        text = self.text
        servers, issues = parse_servers(text, origin=self.target.name)
        self.servers, self.issues = servers, issues
        try:
            self._data = json.loads(text) if text.strip() else None
            decoded = True
        except ValueError:
            decoded = False
        self._mark_issues()
        self._fill_issue_list()
        if decoded:
            self._fill_table()
        self._table_enabled(decoded and _entries_of(self._data) is not None)
        self._update_buttons()
        emit(self.validated, list(issues))
        return issues

    def _issue_position(self, issue: ConfigIssue) -> Tuple[Optional[int], Optional[int]]:
        """(line, column), 1-based: a field's own line when it can be found below its entry."""
        if issue.line is None:
            return None, None
        if issue.column is not None or not issue.field:
            return issue.line, issue.column
        doc = self.editor.document()
        needle = f'"{issue.field}"'
        block = doc.findBlockByNumber(issue.line - 1)
        depth = 0
        while block.isValid():
            text = block.text()
            col = text.find(needle)
            if col >= 0:
                return block.blockNumber() + 1, col + 1
            depth += text.count("{") - text.count("}")
            if depth <= 0 and block.blockNumber() >= issue.line:
                break  # past the end of this entry
            block = block.next()
        return issue.line, None

    def error_selections(self) -> List[Any]:
        return list(self.editor.extraSelections())

    def _mark_issues(self) -> None:
        selections = []
        doc = self.editor.document()
        for issue in self.issues:
            line, column = self._issue_position(issue)
            if line is None:
                continue
            block = doc.findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            colour = ERROR_BG if issue.level == "error" else WARNING_BG
            whole = QtWidgets.QTextEdit.ExtraSelection()
            whole.format.setBackground(colour)
            whole.format.setProperty(QtGui.QTextFormat.Property.FullWidthSelection, True)
            whole.format.setToolTip(issue.message)
            whole.cursor = QtGui.QTextCursor(block)
            selections.append(whole)
            if column is not None:
                spot = QtWidgets.QTextEdit.ExtraSelection()
                spot.format.setUnderlineStyle(QtGui.QTextCharFormat.UnderlineStyle.WaveUnderline)
                spot.format.setUnderlineColor(QtGui.QColor(ERROR_FG if issue.level == "error" else WARNING_FG))
                spot.format.setBackground(colour.darker(110))
                cursor = QtGui.QTextCursor(block)
                cursor.movePosition(
                    QtGui.QTextCursor.MoveOperation.Right,
                    QtGui.QTextCursor.MoveMode.MoveAnchor,
                    min(column - 1, max(0, block.length() - 1)),
                )
                cursor.movePosition(QtGui.QTextCursor.MoveOperation.Right, QtGui.QTextCursor.MoveMode.KeepAnchor, 1)
                spot.cursor = cursor
                selections.append(spot)
        self.editor.setExtraSelections(selections)

    def _fill_issue_list(self) -> None:
        self.issue_list.clear()
        errors = self.errors
        warnings = [i for i in self.issues if i.level != "error"]
        for issue in errors + warnings:
            line, column = self._issue_position(issue)
            where = ""
            if line is not None:
                where = "line {}{}: ".format(line, f", column {column}" if column else "")
            item = QtWidgets.QListWidgetItem(f"{where}{_issue_first_line(issue)}")
            item.setForeground(QtGui.QBrush(QtGui.QColor(ERROR_FG if issue.level == "error" else WARNING_FG)))
            item.setToolTip(issue.message)
            item.setData(Qt.ItemDataRole.UserRole, (line, column))
            self.issue_list.addItem(item)
        count = len(self.servers)
        if errors:
            self.summary.setText(
                "{} error{}, {} warning{} — fix the errors to save ({} server{} usable as it is)".format(
                    len(errors),
                    "" if len(errors) == 1 else "s",
                    len(warnings),
                    "" if len(warnings) == 1 else "s",
                    count,
                    "" if count == 1 else "s",
                )
            )
            self.summary.setStyleSheet(f"color: {ERROR_FG};")
        elif warnings:
            self.summary.setText(
                "{} server{}; {} warning{}".format(
                    count, "" if count == 1 else "s", len(warnings), "" if len(warnings) == 1 else "s"
                )
            )
            self.summary.setStyleSheet(f"color: {WARNING_FG};")
        else:
            self.summary.setText("{} server{}, no problems".format(count, "" if count == 1 else "s"))
            self.summary.setStyleSheet(f"color: {OK_FG};")
        self.issue_list.setVisible(bool(self.issues))

    def _issue_activated(self, item: QtWidgets.QListWidgetItem) -> None:
        line, column = item.data(Qt.ItemDataRole.UserRole) or (None, None)
        if line:
            self.go_to(line, column or 1)

    def go_to(self, line: int, column: int = 1) -> None:
        block = self.editor.document().findBlockByNumber(max(0, line - 1))
        cursor = QtGui.QTextCursor(block)
        cursor.movePosition(
            QtGui.QTextCursor.MoveOperation.Right,
            QtGui.QTextCursor.MoveMode.MoveAnchor,
            max(0, min(column - 1, block.length() - 1)),
        )
        self.editor.setTextCursor(cursor)
        self.editor.setFocus()

    def _cursor_moved(self) -> None:
        cursor = self.editor.textCursor()
        self.position.setText(f"Line {cursor.blockNumber() + 1}, column {cursor.positionInBlock() + 1}")

    def entries(self) -> Optional[List[Any]]:
        """The decoded server entries the table shows, or None when the text does not decode."""
        return _entries_of(self._data)

    def _table_enabled(self, enabled: bool) -> None:
        self.table.setEnabled(enabled)
        if enabled:
            self.table_note.setText("")
        elif self._data is not None and isinstance(self._data, dict) and _entries_of(self._data) is None:
            self.table_note.setText("The text holds one server object, not an array: press Add to make it a list.")
        else:
            self.table_note.setText("Fix the JSON text to edit the table.")
        self.table_note.setVisible(not enabled)

    def _fill_table(self) -> None:
        entries = self.entries() or []
        error_rows: Dict[int, List[str]] = {}
        for issue in self.issues:
            if issue.index is not None:
                error_rows.setdefault(issue.index, []).append(
                    ("" if issue.level == "error" else "Warning: ") + issue.message
                )
        blocked = self.table.blockSignals(True)
        try:
            self.table.setRowCount(len(entries))
            for row, entry in enumerate(entries):
                obj = entry if isinstance(entry, dict) else {}
                for col, field in _TABLE_FIELDS.items():
                    value = obj.get(field, "")
                    item = QtWidgets.QTableWidgetItem("" if value is None else str(value))
                    if not isinstance(entry, dict):
                        item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
                        if col == COL_NAME:
                            item.setText("(not a server object)")
                    self.table.setItem(row, col, item)
                enabled = QtWidgets.QTableWidgetItem()
                enabled.setFlags(
                    Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable
                )
                enabled.setCheckState(
                    Qt.CheckState.Checked if obj.get("enabled", True) is not False else Qt.CheckState.Unchecked
                )
                self.table.setItem(row, COL_ENABLED, enabled)
                name = str(obj.get("name", ""))
                test = QtWidgets.QTableWidgetItem()
                test.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
                if name in self._test_results:
                    ok, message = self._test_results[name]
                    test.setText("ok" if ok else "failed")
                    test.setToolTip(message)
                    test.setForeground(QtGui.QBrush(QtGui.QColor(OK_FG if ok else ERROR_FG)))
                self.table.setItem(row, COL_TEST, test)
                problems = error_rows.get(row)
                for col in range(len(TABLE_HEADERS)):
                    item = self.table.item(row, col)
                    if item is None:
                        continue
                    if problems:
                        has_error = any(not p.startswith("Warning: ") for p in problems)
                        item.setBackground(QtGui.QBrush(ERROR_BG if has_error else WARNING_BG))
                        if col != COL_TEST:
                            item.setToolTip("\n".join(problems))
        finally:
            self.table.blockSignals(blocked)

    def _table_item_changed(self, item: QtWidgets.QTableWidgetItem) -> None:
        entries = self.entries()
        row, col = item.row(), item.column()
        if entries is None or not 0 <= row < len(entries) or not isinstance(entries[row], dict):
            return
        entry = entries[row]
        if col == COL_ENABLED:
            entry["enabled"] = item.checkState() == Qt.CheckState.Checked
        elif col in _TABLE_FIELDS:
            field = _TABLE_FIELDS[col]
            value: Any = item.text()
            if field in _INT_FIELDS:
                stripped = value.strip()
                try:
                    value = int(stripped)
                except ValueError:
                    value = stripped  # kept as typed: validation names the problem
            entry[field] = value
        else:
            return
        self._write_back()

    def _write_back(self) -> None:
        """The table changed ``self._data``: rewrite the text (undoable) and validate."""
        self._set_text(json.dumps(self._data, indent=2, ensure_ascii=False) + "\n")
        self.validate_now()

    def _ensure_array(self) -> Optional[List[Any]]:
        entries = self.entries()
        if entries is not None:
            return entries
        if isinstance(self._data, dict) and any(key in self._data for key in ("name", "ip", "url", "port")):
            self._data = [self._data]
            return self._data
        if self._data is None and not self.text.strip():
            self._data = []
            return self._data
        return None

    def selected_rows(self) -> List[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    def _unique_name(self, base: str, entries: Sequence[Any]) -> str:
        taken = {str(e.get("name", "")).casefold() for e in entries if isinstance(e, dict)}
        if base.casefold() not in taken:
            return base
        n = 2
        while f"{base}-{n}".casefold() in taken:
            n += 1
        return f"{base}-{n}"

    def add_server(self) -> Optional[int]:
        """Append a new server entry; returns its row."""
        entries = self._ensure_array()
        if entries is None:
            self._set_status("Fix the JSON text first: the table edits an array of servers", "error")
            return None
        priorities = [e.get("priority") for e in entries if isinstance(e, dict) and isinstance(e.get("priority"), int)]
        entries.append(
            {
                "name": self._unique_name(f"server-{len(entries) + 1}", entries),
                "ip": "127.0.0.1",
                "port": 8188,
                "dir_local": "",
                "dir_remote": "",
                "priority": (max(priorities) + 1) if priorities else 0,
                "enabled": True,
            }
        )
        self._write_back()
        row = len(entries) - 1
        self.table.selectRow(row)
        return row

    def duplicate_selected(self) -> Optional[int]:
        entries = self.entries()
        rows = self.selected_rows()
        if entries is None or not rows or not isinstance(entries[rows[0]], dict):
            return None
        clone = copy.deepcopy(entries[rows[0]])
        clone["name"] = self._unique_name("{}-copy".format(clone.get("name", "server")), entries)
        entries.insert(rows[0] + 1, clone)
        self._write_back()
        self.table.selectRow(rows[0] + 1)
        return rows[0] + 1

    def remove_selected(self) -> int:
        entries = self.entries()
        rows = self.selected_rows()
        if entries is None or not rows:
            return 0
        for row in reversed(rows):
            del entries[row]
        self._write_back()
        return len(rows)

    # -- connection test ----------------------------------------------------------------------
    def test_selected(self) -> bool:
        rows = self.selected_rows()
        return self.test_row(rows[0]) if rows else False

    def test_row(self, row: int) -> bool:
        """Test the server of table row ``row`` on a worker; ``test_finished`` reports."""
        entries = self.entries()
        if entries is None or not 0 <= row < len(entries):
            return False
        found, issues = config_mod.servers_from_data([entries[row]], f"entry {row + 1}")
        name = str(entries[row].get("name", "")) if isinstance(entries[row], dict) else ""
        if not found:
            message = "; ".join(i.message for i in issues if i.level == "error") or "not a usable server"
            self._test_results[name] = (False, message)
            self._fill_table()
            emit(self.test_finished, name, False, message)
            return False
        config = found[0]

        def test() -> Tuple[bool, str]:
            from ..core.server import ComfyUIServer

            server = ComfyUIServer(config)
            try:
                return server.test_connection()
            finally:
                server.close()

        def done(result: Tuple[bool, str]) -> None:
            ok, message = result
            self._test_results[config.name] = (ok, message)
            self._fill_table()
            self._set_status(message, "ok" if ok else "error")
            emit(self.test_finished, config.name, ok, message)

        def failed(error: TaskError) -> None:
            self._test_results[config.name] = (False, error.message)
            self._fill_table()
            emit(self.test_finished, config.name, False, error.message)

        self._test_results.pop(config.name, None)
        started = self.runner.run("config-test-" + config.name, test, done, failed)
        if started:
            item = self.table.item(row, COL_TEST)
            if item is not None:
                item.setText("testing…")
        return started

    # -- save / reload ---------------------------------------------------------------------------
    def save(self) -> bool:
        """Validate, write the file atomically with a backup (worker), then reload the pool."""
        self.validate_now()
        if self.errors:
            first = _issue_first_line(self.errors[0])
            self._set_status(f"Not saved: fix the errors first ({first})", "error")
            emit(self.operation_finished, "save", False, self.last_message)
            return False
        text = self.text
        target = self.target
        pool = self.pool
        environ = dict(self.environ)
        mode = self.mode

        def work() -> Tuple[config_store.SaveResult, Optional[ConfigLoad]]:
            result = config_store.save_servers(target, text)
            loaded = None
            if pool is not None:
                loaded = _reload_pool(pool, target, environ, mode)
            return result, loaded

        def done(value: Tuple[config_store.SaveResult, Optional[ConfigLoad]]) -> str:
            result, loaded = value
            self._baseline = text
            self._update_buttons()
            message = f"Saved {result.path}"
            if result.backup is not None:
                message += f"; the previous version is in {result.backup}"
            if loaded is not None:
                message += ". The pool now uses {} server{}".format(
                    len(loaded.servers), "" if len(loaded.servers) == 1 else "s"
                )
                emit(self.pool_reloaded, loaded)
            self._set_status(message, "ok")
            if self._close_after_save and not self.dirty:
                self._close_after_save = False
                self._really_close()
            return message

        def failed(_error: TaskError) -> None:
            self._close_after_save = False

        return self._run("save", work, done, failed)

    # -- backups ---------------------------------------------------------------------------------
    def backup_now(self) -> bool:
        target = self.target

        def done(path: Path) -> str:
            message = f"Backed up {target.name} to {path}"
            self._set_status(message, "ok")
            return message

        return self._run("backup", lambda: config_store.backup_now(target), done)

    def _restore_clicked(self) -> None:
        target = self.target

        def chosen(backups: List[config_store.BackupInfo]) -> str:
            if not backups:
                message = f"No backups of {target} yet"
                self._set_status(message)
                return message
            dialog = RestoreDialog(backups, self)
            accepted = exec_(dialog)  # 1 = accepted, in both bindings
            info = dialog.chosen()
            if accepted and info is not None:
                self.restore(info)
            return ""

        self._run("list-backups", lambda: config_store.list_backups(target), chosen)

    def restore(self, backup: Any) -> bool:
        """Put ``backup`` (a BackupInfo or a path) back in place, show it and reload the pool."""
        if self.dirty and self.ask_unsaved("restore a backup") != DISCARD:
            return False
        target = self.target
        pool = self.pool
        environ = dict(self.environ)
        mode = self.mode

        def work() -> Tuple[config_store.SaveResult, str, Optional[ConfigLoad]]:
            result = config_store.restore_backup(target, backup)
            text = target.read_bytes().decode("utf-8-sig")
            loaded = _reload_pool(pool, target, environ, mode) if pool is not None else None
            return result, text, loaded

        def done(value: Tuple[config_store.SaveResult, str, Optional[ConfigLoad]]) -> str:
            result, text, loaded = value
            self._set_text(text)
            self._baseline = text
            self.validate_now()
            source = backup.path if isinstance(backup, config_store.BackupInfo) else backup
            message = f"Restored {result.path} from {source}"
            if result.backup is not None:
                message += f"; what it replaced is in {result.backup}"
            if loaded is not None:
                emit(self.pool_reloaded, loaded)
            self._set_status(message, "ok")
            return message

        return self._run("restore", work, done)

    # -- import / export --------------------------------------------------------------------------
    def _import_clicked(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Import servers", str(self.target.parent), "JSON (*.json);;All files (*)"
        )
        if path:
            self.import_from(path)

    def import_from(self, path: str) -> bool:
        """Load a server file into the editor (not saved until Save); bad entries are reported."""
        if self.dirty and self.ask_unsaved(f"import {path}") != DISCARD:
            return False

        def done(value: Tuple[List[ServerConfig], List[ConfigIssue]]) -> str:
            servers, issues = value
            errors = [i for i in issues if i.level == "error"]
            if not servers:
                message = "Nothing imported from {}: {}".format(
                    path, _issue_first_line(errors[0]) if errors else "no servers"
                )
                self._set_status(message, "error")
                return message
            self.set_text(config_mod.servers_to_json(servers))
            message = "Imported {} server{} from {} (not saved yet)".format(
                len(servers), "" if len(servers) == 1 else "s", path
            )
            if errors:
                message += "; {} entr{} skipped: {}".format(
                    len(errors), "y" if len(errors) == 1 else "ies", _issue_first_line(errors[0])
                )
            self._set_status(message, "warning" if errors else "ok")
            return message

        return self._run("import", lambda: config_store.import_config(path), done)

    def _export_clicked(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export servers", str(self.target.parent / "comfyui_servers_export.json"), "JSON (*.json)"
        )
        if not path:
            return
        include = False
        if any(s.token or s.headers for s in self.servers):
            answer = QtWidgets.QMessageBox.question(
                self,
                "Export secrets?",
                f"Some servers have a token or headers. Include them in {path}?",
                QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
                QtWidgets.QMessageBox.StandardButton.No,
            )
            include = answer == QtWidgets.QMessageBox.StandardButton.Yes
        self.export_to(path, include_secrets=include)

    def export_to(self, path: str, include_secrets: bool = False) -> bool:
        """Write the valid servers of the editor to ``path`` (tokens and headers only when asked)."""
        self.validate_now()
        servers = list(self.servers)
        if not servers:
            self._set_status("Nothing to export: no valid server in the editor", "error")
            emit(self.operation_finished, "export", False, self.last_message)
            return False

        def done(dest: Path) -> str:
            message = "Exported {} server{} to {}{}".format(
                len(servers),
                "" if len(servers) == 1 else "s",
                dest,
                "" if include_secrets else " (without tokens and headers)",
            )
            self._set_status(message, "ok")
            return message

        return self._run(
            "export", lambda: config_store.export_config(servers, path, include_secrets=include_secrets), done
        )

    # -- buttons, closing ---------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.busy
        has_entries = self.entries() is not None
        rows = self.selected_rows() if has_entries else []
        self.save_button.setEnabled(not busy)
        self.save_button.setText("Save*" if self.dirty else "Save")
        self.add_button.setEnabled(self._data is not None or not self.text.strip())
        self.duplicate_button.setEnabled(bool(rows))
        self.remove_button.setEnabled(bool(rows))
        self.test_button.setEnabled(bool(rows))
        for button in (self.import_button, self.backup_button, self.restore_button, self.export_button):
            button.setEnabled(not busy)
        title = "ComfyUI Cluster — servers"
        self.setWindowTitle(title + (" *" if self.dirty else ""))

    def ask_unsaved(self, action: str) -> str:
        """Ask what to do with unsaved changes: SAVE, DISCARD or CANCEL (tests replace it
        on the instance; a method, not an attribute bound to self, so that the dialog
        holds no reference cycle and is freed on the GUI thread when dropped)."""
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Unsaved changes")
        box.setText(f"The server list has changes that are not saved to {self.target}.")
        box.setInformativeText(f"Save them before you {action}?")
        box.setStandardButtons(
            QtWidgets.QMessageBox.StandardButton.Save
            | QtWidgets.QMessageBox.StandardButton.Discard
            | QtWidgets.QMessageBox.StandardButton.Cancel
        )
        box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.Save)
        exec_(box)
        clicked = box.standardButton(box.clickedButton()) if box.clickedButton() is not None else None
        if clicked == QtWidgets.QMessageBox.StandardButton.Save:
            return SAVE
        if clicked == QtWidgets.QMessageBox.StandardButton.Discard:
            return DISCARD
        return CANCEL

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        if self._may_close():
            self._finish()
            event.accept()
        else:
            event.ignore()

    def reject(self) -> None:  # Escape
        if self._may_close():
            self._finish()
            super().reject()

    def _may_close(self) -> bool:
        if getattr(self, "_closing", False) or not self.dirty:
            return True
        answer = self.ask_unsaved("close the editor")
        if answer == DISCARD:
            return True
        if answer == SAVE:
            self._close_after_save = True
            self.save()
        return False

    def _really_close(self) -> None:
        self._closing = True
        try:
            self.close()
        finally:
            self._closing = False

    def _finish(self) -> None:
        self._validate_timer.stop()
        if self._own_runner:
            self.runner.shutdown()


def _reload_pool(pool: Any, target: Path, environ: Mapping[str, str], mode: str) -> ConfigLoad:
    """Give the pool the servers of ``target`` (worker thread: removing servers joins their sockets)."""
    env = dict(environ)
    if mode != "file":
        # the variable does not name this file (yet): load it as if it did
        env[ENV_SERVERS] = str(target)
    loaded = load_config(env)
    pool.set_servers(loaded.servers, loaded)
    return loaded


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
