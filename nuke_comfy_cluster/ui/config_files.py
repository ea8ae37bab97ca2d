"""The config editor's file side: where Save writes, and save / backup / restore / import / export.

Every file operation runs on a worker thread (the file may sit on a network share,
and saving waits for a lock); :class:`FileOperations` is mixed into the dialog and
goes through its ``_run`` (worker + status line + ``operation_finished``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

from ..core import config as config_mod
from ..core import config_store
from ..core.config import ENV_SERVERS, ConfigIssue, ConfigLoad, ServerConfig, load_config
from .qt import QtWidgets, emit, exec_
from .workers import TaskError

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


def where_text(target: Path, mode: str) -> str:
    """The dialog's first line: which file Save writes, and how Nuke will find it."""
    path = _html(str(target))
    if mode == "file":
        return f"Editing <b>{path}</b> (named by {ENV_SERVERS}). Save writes it atomically and keeps a backup."
    if mode == "explicit":
        return f"Editing <b>{path}</b>. Save writes it atomically and keeps a backup."
    hint = f"set {ENV_SERVERS}={path} (in your environment or Nuke's init.py) so Nuke reads it at start-up"
    if mode == "inline":
        return (
            f"{ENV_SERVERS} holds inline JSON, which this editor cannot change. Save writes <b>{path}</b> and the running "
            f"session uses it; to keep using it, {hint}."
        )
    return f"{ENV_SERVERS} is not set. Save writes <b>{path}</b> and the running session uses it; to keep using it, {hint}."


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def issue_first_line(issue: ConfigIssue) -> str:
    return issue.message.split("\n")[0]


def read_text(path: Path) -> Optional[str]:
    """The file's text (UTF-8 or UTF-16, as the loader reads it); None when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    decode = getattr(config_mod, "decode_config_bytes", None)
    return decode(data)[0] if decode is not None else data.decode("utf-8-sig")


def reload_pool(pool: Any, target: Path, environ: Mapping[str, str], mode: str) -> ConfigLoad:
    """Give the pool the servers of ``target`` (worker thread: removing servers joins their sockets)."""
    env = dict(environ)
    if mode != "file":
        # the variable does not name this file (yet): load it as if it did
        env[ENV_SERVERS] = str(target)
    loaded = load_config(env)
    pool.set_servers(loaded.servers, loaded)
    return loaded


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
        self.list.itemDoubleClicked.connect(self.accept)
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


class FileOperations:
    """Save, backup, restore, import and export, for :class:`ConfigEditorDialog`.

    Uses the dialog's ``target``, ``mode``, ``environ``, ``pool``, ``text``, ``dirty``,
    ``errors``, ``servers``, ``validate_now``, ``set_text``, ``ask_unsaved``, ``_run``,
    ``_set_status`` and its signals.
    """

    # what the dialog provides (annotations only: nothing here shadows the dialog's own)
    target: Path
    mode: str
    environ: Any
    pool: Any
    servers: List[ServerConfig]
    errors: List[ConfigIssue]
    text: str
    dirty: bool
    last_message: str
    text_pane: Any
    operation_finished: Any
    pool_reloaded: Any
    _baseline: str
    _close_after_save: bool
    _run: Callable[..., bool]
    _set_status: Callable[..., None]
    validate_now: Callable[[], Any]
    set_text: Callable[[str], None]
    ask_unsaved: Callable[[str], str]
    _update_buttons: Callable[[], None]
    _really_close: Callable[[], None]

    def save(self) -> bool:
        """Validate, write the file atomically with a backup (worker), then reload the pool."""
        self.validate_now()
        errors = self.errors
        if errors:
            self._set_status(f"Not saved: fix the errors first ({issue_first_line(errors[0])})", "error")
            emit(self.operation_finished, "save", False, self.last_message)
            return False
        text = self.text
        target, pool, environ, mode = self.target, self.pool, dict(self.environ), self.mode

        def work() -> Tuple[config_store.SaveResult, Optional[ConfigLoad]]:
            result = config_store.save_servers(target, text)
            loaded = reload_pool(pool, target, environ, mode) if pool is not None else None
            return result, loaded

        def done(value: Tuple[config_store.SaveResult, Optional[ConfigLoad]]) -> str:
            result, loaded = value
            self._baseline = text
            self._update_buttons()
            message = f"Saved {result.path}"
            if result.backup is not None:
                message += f"; the previous version is in {result.backup}"
            if loaded is not None:
                count = len(loaded.servers)
                message += ". The pool now uses {} server{}".format(count, "" if count == 1 else "s")
                emit(self.pool_reloaded, loaded)
            self._set_status(message, "ok")
            if self._close_after_save and not self.dirty:
                self._close_after_save = False
                self._really_close()
            return message

        def failed(_error: TaskError) -> None:
            self._close_after_save = False

        return self._run("save", work, done, failed)

    # -- backups -------------------------------------------------------------------------------
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
            dialog = RestoreDialog(backups, self)  # type: ignore[arg-type]
            accepted = exec_(dialog)  # 1 = accepted, in both bindings
            info = dialog.chosen()
            dialog.deleteLater()
            if accepted and info is not None:
                self.restore(info)
            return ""

        self._run("list-backups", lambda: config_store.list_backups(target), chosen)

    def restore(self, backup: Any) -> bool:
        """Put ``backup`` (a BackupInfo or a path) back in place, show it and reload the pool."""
        if self.dirty and self.ask_unsaved("restore a backup") != DISCARD:
            return False
        target, pool, environ, mode = self.target, self.pool, dict(self.environ), self.mode

        def work() -> Tuple[config_store.SaveResult, str, Optional[ConfigLoad]]:
            result = config_store.restore_backup(target, backup)
            text = read_text(target) or ""
            loaded = reload_pool(pool, target, environ, mode) if pool is not None else None
            return result, text, loaded

        def done(value: Tuple[config_store.SaveResult, str, Optional[ConfigLoad]]) -> str:
            result, text, loaded = value
            self.text_pane.set_text(text)
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

    # -- import / export -----------------------------------------------------------------------
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
                why = issue_first_line(errors[0]) if errors else "no servers"
                message = f"Nothing imported from {path}: {why}"
                self._set_status(message, "error")
                return message
            self.set_text(config_mod.servers_to_json(servers))
            message = "Imported {} server{} from {} (not saved yet)".format(
                len(servers), "" if len(servers) == 1 else "s", path
            )
            if errors:
                message += "; {} entr{} skipped: {}".format(
                    len(errors), "y" if len(errors) == 1 else "ies", issue_first_line(errors[0])
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
                self,  # type: ignore[arg-type]
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
