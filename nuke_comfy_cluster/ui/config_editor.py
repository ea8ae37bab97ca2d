"""The configuration editor: the servers' table and JSON text, edited in step, validated live.

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

The dialog assembles three parts::

    config_table    ServerEntriesPane: the table and Add / Duplicate / Remove / Test
    config_text     ConfigTextPane: the JSON, problems marked at line and column
    config_files    where Save writes; save, backup, restore, import, export
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import config as config_mod
from ..core.config import ENV_SERVERS, ConfigIssue, ServerConfig, load_config, parse_servers
from .config_files import (
    CANCEL,
    DISCARD,
    SAVE,
    FileOperations,
    RestoreDialog,
    issue_first_line,
    read_text,
    target_for,
    where_text,
)
from .config_table import (
    COL_DIR_LOCAL,
    COL_DIR_REMOTE,
    COL_ENABLED,
    COL_IP,
    COL_NAME,
    COL_PORT,
    COL_PRIORITY,
    COL_TEST,
    TABLE_HEADERS,
    ServerEntriesPane,
    entries_of,
)
from .config_text import ERROR_FG, OK_FG, WARNING_FG, ConfigTextPane
from .qt import QtCore, QtGui, QtWidgets, Signal, apply_binding_fixes, emit, exec_
from .workers import TaskError, TaskRunner

log = logging.getLogger(__name__)
Qt = QtCore.Qt

VALIDATE_DELAY_MS = 250
#: the default size: every table column readable without scrolling
DEFAULT_SIZE = (1100, 720)

__all__ = [
    "CANCEL",
    "COL_DIR_LOCAL",
    "COL_DIR_REMOTE",
    "COL_ENABLED",
    "COL_IP",
    "COL_NAME",
    "COL_PORT",
    "COL_PRIORITY",
    "COL_TEST",
    "DISCARD",
    "SAVE",
    "TABLE_HEADERS",
    "ConfigEditorDialog",
    "RestoreDialog",
    "target_for",
]


class ConfigEditorDialog(FileOperations, QtWidgets.QDialog):
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
        self._busy = 0
        self._close_after_save = False
        self._closing = False
        self._test_results: Dict[str, Tuple[bool, str]] = {}
        self.last_message = ""
        #: True once the file (or the proposal for a new one) is in the editor
        self.ready = False
        self._build()
        self._validate_timer = QtCore.QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(self.validate_now)
        self.text_pane.edited.connect(self._text_edited)
        self.resize(*DEFAULT_SIZE)
        self.load()

    # -- layout --------------------------------------------------------------------------
    def _build(self) -> None:
        self.where = QtWidgets.QLabel(self)
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setText(where_text(self.target, self.mode))

        self.table_pane = ServerEntriesPane(self)
        self.table_pane.entry_edited.connect(self._entry_edited)
        self.table_pane.table.itemSelectionChanged.connect(self._update_buttons)
        self.table_pane.add_button.clicked.connect(self.add_server)
        self.table_pane.duplicate_button.clicked.connect(self.duplicate_selected)
        self.table_pane.remove_button.clicked.connect(self.remove_selected)
        self.table_pane.test_button.clicked.connect(self.test_selected)
        self.text_pane = ConfigTextPane(self)
        # what the tests and callers reach directly
        self.table = self.table_pane.table
        self.table_note = self.table_pane.note
        self.editor = self.text_pane.editor

        # the table over the text: the table gets the dialog's whole width, so every column
        # is readable; the text below keeps its own lines (no wrapping)
        self.splitter = QtWidgets.QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.addWidget(self.table_pane)
        self.splitter.addWidget(self.text_pane)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setChildrenCollapsible(False)

        self.summary = QtWidgets.QLabel(self)
        self.issue_list = QtWidgets.QListWidget(self)
        self.issue_list.setMaximumHeight(110)
        self.issue_list.setWordWrap(True)  # a long message wraps instead of scrolling sideways
        self.issue_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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

    # -- state -----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.text_pane.text()

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

        def done(text: Optional[str]) -> str:
            exists = text is not None
            if text is None:
                text = self._initial_text()
            self.text_pane.set_text(text, undoable=False)
            # a file that does not exist yet counts as unsaved only once the proposal is changed
            self._baseline = text
            self.ready = True
            self.validate_now()
            message = f"Loaded {target}" if exists else f"{target} does not exist yet: showing the servers in use"
            self._set_status(message)
            return message

        return self._run("load", lambda: read_text(target), done)

    # -- text <-> table ----------------------------------------------------------------------
    def set_text(self, text: str) -> None:
        """Replace the editor's text (undoable) and validate now."""
        self.text_pane.set_text(text)
        self.validate_now()

    def _text_edited(self) -> None:
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
        self.text_pane.mark_issues(issues)
        self._fill_issue_list()
        if decoded:
            self.table_pane.fill(self.entries() or [], issues, self._test_results)
        self._table_enabled(decoded and self.entries() is not None)
        self._update_buttons()
        emit(self.validated, list(issues))
        return issues

    def _issue_position(self, issue: ConfigIssue) -> Tuple[Optional[int], Optional[int]]:
        return self.text_pane.issue_position(issue)

    def error_selections(self) -> List[Any]:
        return self.text_pane.error_selections()

    def go_to(self, line: int, column: int = 1) -> None:
        self.text_pane.go_to(line, column)

    def _fill_issue_list(self) -> None:
        self.issue_list.clear()
        errors = self.errors
        warnings = [i for i in self.issues if i.level != "error"]
        for issue in errors + warnings:
            line, column = self._issue_position(issue)
            where = ""
            if line is not None:
                where = "line {}{}: ".format(line, f", column {column}" if column else "")
            item = QtWidgets.QListWidgetItem(f"{where}{issue_first_line(issue)}")
            item.setForeground(QtGui.QBrush(QtGui.QColor(ERROR_FG if issue.level == "error" else WARNING_FG)))
            item.setToolTip(issue.message)
            item.setData(Qt.ItemDataRole.UserRole, (line, column))
            self.issue_list.addItem(item)
        count = len(self.servers)
        servers = "{} server{}".format(count, "" if count == 1 else "s")
        if errors:
            self.summary.setText(
                "{} error{}, {} warning{} — fix the errors to save ({} usable as it is)".format(
                    len(errors), _s(len(errors)), len(warnings), _s(len(warnings)), servers
                )
            )
            self.summary.setStyleSheet(f"color: {ERROR_FG};")
        elif warnings:
            self.summary.setText("{}; {} warning{}".format(servers, len(warnings), _s(len(warnings))))
            self.summary.setStyleSheet(f"color: {WARNING_FG};")
        else:
            self.summary.setText(f"{servers}, no problems")
            self.summary.setStyleSheet(f"color: {OK_FG};")
        self.issue_list.setVisible(bool(self.issues))

    def _issue_activated(self, item: QtWidgets.QListWidgetItem) -> None:
        line, column = item.data(Qt.ItemDataRole.UserRole) or (None, None)
        if line:
            self.go_to(line, column or 1)

    def entries(self) -> Optional[List[Any]]:
        """The decoded server entries the table shows, or None when the text does not decode."""
        return entries_of(self._data)

    def _table_enabled(self, enabled: bool) -> None:
        if enabled:
            note = ""
        elif self._data is not None and isinstance(self._data, dict) and entries_of(self._data) is None:
            note = "The text holds one server object, not an array: press Add to make it a list."
        else:
            note = "Fix the JSON text to edit the table."
        self.table_pane.set_editable(enabled, note)

    def _entry_edited(self, row: int, field: str, value: Any) -> None:
        entries = self.entries()
        if entries is None or not 0 <= row < len(entries) or not isinstance(entries[row], dict):
            return
        entries[row][field] = value
        self._write_back()

    def _write_back(self) -> None:
        """The table changed ``self._data``: rewrite the text (undoable) and validate."""
        self.text_pane.set_text(json.dumps(self._data, indent=2, ensure_ascii=False) + "\n")
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
        return self.table_pane.selected_rows()

    @staticmethod
    def _unique_name(base: str, entries: Sequence[Any]) -> str:
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
        self.table_pane.select_row(row)
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
        self.table_pane.select_row(rows[0] + 1)
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

    def _show_test(self, name: str, ok: bool, message: str) -> None:
        self._test_results[name] = (ok, message)
        self.table_pane.fill(self.entries() or [], self.issues, self._test_results)
        emit(self.test_finished, name, ok, message)

    def test_row(self, row: int) -> bool:
        """Test the server of table row ``row`` on a worker; ``test_finished`` reports."""
        entries = self.entries()
        if entries is None or not 0 <= row < len(entries):
            return False
        found, issues = config_mod.servers_from_data([entries[row]], f"entry {row + 1}")
        name = str(entries[row].get("name", "")) if isinstance(entries[row], dict) else ""
        if not found:
            message = "; ".join(i.message for i in issues if i.level == "error") or "not a usable server"
            self._show_test(name, False, message)
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
            self._set_status(message, "ok" if ok else "error")
            self._show_test(config.name, ok, message)

        def failed(error: TaskError) -> None:
            self._show_test(config.name, False, error.message)

        self._test_results.pop(config.name, None)
        started = self.runner.run("config-test-" + config.name, test, done, failed)
        if started:
            self.table_pane.set_testing(row)
        return started

    # -- buttons, closing ---------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.busy
        self.save_button.setEnabled(not busy)
        self.save_button.setText("Save*" if self.dirty else "Save")
        self.table_pane.update_buttons(can_add=self._data is not None or not self.text.strip())
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
        box.deleteLater()
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
        if self._closing or not self.dirty:
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


def _s(count: int) -> str:
    return "" if count == 1 else "s"
