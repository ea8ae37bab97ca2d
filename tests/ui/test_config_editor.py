"""The config editor: live validation, table in step with the text, save/backup/restore, import/export."""

from __future__ import annotations

import json

import pytest

from .conftest import closed_port, sim_servers

pytestmark = pytest.mark.qt

ORIGINAL = """[
  {"name": "gpu-a", "ip": "127.0.0.1", "port": %d, "priority": 0, "enabled": true},
  {"name": "gpu-b", "ip": "127.0.0.1", "port": %d, "priority": 1, "enabled": true, "_comment": "kept"}
]
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "servers" / "cluster.json"
    path.parent.mkdir()
    path.write_text(ORIGINAL % (closed_port(), closed_port()), encoding="utf-8")
    return path


@pytest.fixture
def pool_for(request):
    """pool_for(environ) -> a pool configured from ``environ`` (not started: no network)."""
    from nuke_comfy_cluster.core.pool import ComfyUIServerPool

    pools = []

    def make(environ):
        pool = ComfyUIServerPool()
        pool.load_configuration(environ)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def open_editor(qtbot):
    from nuke_comfy_cluster.ui.config_editor import DISCARD, ConfigEditorDialog

    dialogs = []

    def make(pool=None, **kw):
        # not qtbot.addWidget: pytest-qt would close it before the answer below is set, and a
        # dialog with unsaved changes would then wait for a modal question nobody answers
        dialog = ConfigEditorDialog(pool, **kw)
        dialogs.append(dialog)
        qtbot.waitUntil(lambda: dialog.ready, timeout=10000)
        return dialog

    yield make
    for dialog in dialogs:
        dialog.ask_unsaved = lambda _action: DISCARD
        dialog.close()
        dialog.runner.shutdown()
        dialog.deleteLater()


def _wait_op(qtbot, dialog, operation, start, timeout=15000):
    """Run ``start()`` and wait for ``operation_finished(operation, ...)``; returns (ok, message)."""
    with qtbot.waitSignal(
        dialog.operation_finished, timeout=timeout, check_params_cb=lambda op, ok, msg: op == operation
    ) as blocker:
        start()
    _, ok, message = blocker.args
    return ok, message


def _names(pool):
    return [s.name for s in pool.servers]


def _cell(dialog, row, col):
    return dialog.table.item(row, col).text()


def test_round_trip_edit_validate_save_backup_restore(config_file, pool_for, open_editor, qtbot):
    from nuke_comfy_cluster.core import config_store
    from nuke_comfy_cluster.ui import config_editor as ce
    from nuke_comfy_cluster.ui.qt import QtCore

    environ = {"NUKE_COMFYUI_SERVERS": str(config_file)}
    pool = pool_for(environ)
    original = config_file.read_text(encoding="utf-8")
    dialog = open_editor(pool, environ=environ)
    assert dialog.mode == "file" and dialog.target == config_file
    assert dialog.text == original and not dialog.dirty
    assert [_cell(dialog, r, ce.COL_NAME) for r in range(dialog.table.rowCount())] == ["gpu-a", "gpu-b"]
    assert "2 servers, no problems" in dialog.summary.text()

    # 1. break the JSON: the error is listed and marked at its line and column; nothing can be saved
    dialog.set_text(original.replace('"priority": 1,', '"priority": 1'))
    errors = dialog.errors
    assert len(errors) == 1 and errors[0].line == 3 and errors[0].column
    assert dialog.issue_list.item(0).text().startswith("line 3, column {}: ".format(errors[0].column))
    marked = {sel.cursor.blockNumber() for sel in dialog.error_selections()}
    assert marked == {2}
    assert not dialog.table.isEnabled() and "Fix the JSON" in dialog.table_note.text()
    ok, message = _wait_op(qtbot, dialog, "save", dialog.save)
    assert not ok and "fix the errors first" in message
    assert config_file.read_text(encoding="utf-8") == original
    assert config_store.list_backups(config_file) == []

    # 2. undo brings the good text back (the replacement was one undoable edit)
    dialog.editor.undo()
    dialog.validate_now()
    assert dialog.text == original and not dialog.errors and dialog.table.isEnabled()

    # 3. edit in the table: the text follows
    dialog.table.item(1, ce.COL_PRIORITY).setText("5")
    assert json.loads(dialog.text)[1]["priority"] == 5
    assert json.loads(dialog.text)[1]["_comment"] == "kept", "keys the table does not show survive"
    dialog.table.item(0, ce.COL_ENABLED).setCheckState(QtCore.Qt.CheckState.Unchecked)
    assert json.loads(dialog.text)[0]["enabled"] is False
    row = dialog.add_server()
    assert row == 2 and _cell(dialog, 2, ce.COL_NAME) == "server-3"
    dialog.table.item(2, ce.COL_PORT).setText("http")  # typed wrong: kept as typed, flagged
    assert json.loads(dialog.text)[2]["port"] == "http"
    port_error = [i for i in dialog.errors if i.field == "port"]
    assert port_error and port_error[0].index == 2
    assert dialog.table.item(2, ce.COL_PORT).background().color().alpha() > 0  # the row is tinted
    line, column = dialog._issue_position(port_error[0])
    assert '"port"' in dialog.editor.document().findBlockByNumber(line - 1).text()
    dialog.table.item(2, ce.COL_PORT).setText("8190")
    assert not dialog.errors
    dialog.table.selectRow(2)
    assert dialog.duplicate_selected() == 3
    assert _cell(dialog, 3, ce.COL_NAME) == "server-3-copy"
    dialog.table.selectRow(3)
    assert dialog.remove_selected() == 1
    dialog.table.item(1, ce.COL_NAME).setText("gpu-b2")
    edited = dialog.text
    assert [e["name"] for e in json.loads(edited)] == ["gpu-a", "gpu-b2", "server-3"]
    assert dialog.dirty and dialog.windowTitle().endswith("*")

    # 4. save: written atomically, the previous file backed up, the pool reloaded
    with qtbot.waitSignal(dialog.pool_reloaded, timeout=15000):
        ok, message = _wait_op(qtbot, dialog, "save", dialog.save)
    assert ok, message
    assert config_file.read_text(encoding="utf-8") == edited
    backups = config_store.list_backups(config_file)
    assert len(backups) == 1 and backups[0].path.read_text(encoding="utf-8") == original
    assert str(backups[0].path) in message
    assert not dialog.dirty
    assert _names(pool) == ["gpu-a", "gpu-b2", "server-3"]
    assert pool.get_server_by_name("gpu-a").enabled is False
    assert pool.get_server_by_name("gpu-b2").priority == 5

    # 5. backup now, then restore the first backup: file, editor and pool go back
    ok, message = _wait_op(qtbot, dialog, "backup", dialog.backup_now)
    assert ok and len(config_store.list_backups(config_file)) == 2
    first = [b for b in config_store.list_backups(config_file) if b.path == backups[0].path][0]
    ok, message = _wait_op(qtbot, dialog, "restore", lambda: dialog.restore(first))
    assert ok, message
    assert config_file.read_text(encoding="utf-8") == original
    assert dialog.text == original and not dialog.dirty
    assert _names(pool) == ["gpu-a", "gpu-b"]
    # the restore itself backed up what it replaced: it can be undone too
    assert any(b.path.read_text(encoding="utf-8") == edited for b in config_store.list_backups(config_file))


def test_live_validation_while_typing(config_file, pool_for, open_editor, qtbot):
    from nuke_comfy_cluster.ui.qt import QtGui

    environ = {"NUKE_COMFYUI_SERVERS": str(config_file)}
    dialog = open_editor(pool_for(environ), environ=environ)
    dialog.show()
    cursor = dialog.editor.textCursor()
    cursor.movePosition(QtGui.QTextCursor.MoveOperation.End)
    dialog.editor.setTextCursor(cursor)
    with qtbot.waitSignal(dialog.validated, timeout=3000) as validated:
        qtbot.keyClicks(dialog.editor, "oops")
    issues = validated.args[0]
    assert [i.level for i in issues] == ["error"]
    assert "line 5" in dialog.issue_list.item(0).text()
    assert dialog.dirty


def test_import_and_export(config_file, tmp_path, pool_for, open_editor, qtbot):
    from nuke_comfy_cluster.ui.config_editor import DISCARD

    environ = {"NUKE_COMFYUI_SERVERS": str(config_file)}
    dialog = open_editor(pool_for(environ), environ=environ)
    # a token in the editor: exports leave it out unless asked
    with_token = json.loads(dialog.text)
    with_token[0]["token"] = "s3cret-token"
    dialog.set_text(json.dumps(with_token, indent=2))
    plain = tmp_path / "out" / "export.json"
    ok, message = _wait_op(qtbot, dialog, "export", lambda: dialog.export_to(str(plain)))
    assert ok and "without tokens" in message
    exported = json.loads(plain.read_text(encoding="utf-8"))
    assert [e["name"] for e in exported] == ["gpu-a", "gpu-b"]
    assert "s3cret-token" not in plain.read_text(encoding="utf-8")
    secret = tmp_path / "out" / "export-secret.json"
    ok, _ = _wait_op(qtbot, dialog, "export", lambda: dialog.export_to(str(secret), include_secrets=True))
    assert ok and json.loads(secret.read_text(encoding="utf-8"))[0]["token"] == "s3cret-token"

    # import: good entries come in (not saved yet), bad ones are reported
    source = tmp_path / "incoming.json"
    source.write_text(
        json.dumps(
            [
                {"name": "farm-1", "ip": "10.1.0.1", "port": 8188},
                {"name": "farm-2", "ip": "10.1.0.2", "port": 70000},
            ]
        ),
        encoding="utf-8",
    )
    dialog.ask_unsaved = lambda _action: DISCARD  # the token edit above is thrown away
    before = config_file.read_text(encoding="utf-8")
    ok, message = _wait_op(qtbot, dialog, "import", lambda: dialog.import_from(str(source)))
    assert ok and "Imported 1 server" in message and "skipped" in message and "port" in message
    assert [e["name"] for e in json.loads(dialog.text)] == ["farm-1"]
    assert dialog.dirty and config_file.read_text(encoding="utf-8") == before

    # an unreadable import changes nothing
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    text = dialog.text
    ok, message = _wait_op(qtbot, dialog, "import", lambda: dialog.import_from(str(broken)))
    assert "Nothing imported" in message and dialog.text == text


def test_inline_variable_saves_to_the_user_file_and_says_how(pool_for, open_editor, qtbot):
    from nuke_comfy_cluster.core import config_store

    port = closed_port()
    inline = '[{"name": "inline-1", "ip": "127.0.0.1", "port": %d}]' % port
    environ = {"NUKE_COMFYUI_SERVERS": inline}
    pool = pool_for(environ)
    dialog = open_editor(pool, environ=environ)
    target = config_store.default_config_path()
    assert dialog.mode == "inline" and dialog.target == target
    where = dialog.where.text()
    assert "inline JSON" in where and "NUKE_COMFYUI_SERVERS={}".format(target) in where
    assert [e["name"] for e in json.loads(dialog.text)] == ["inline-1"]
    assert not target.exists()

    dialog.add_server()
    with qtbot.waitSignal(dialog.pool_reloaded, timeout=15000) as reloaded:
        ok, message = _wait_op(qtbot, dialog, "save", dialog.save)
    assert ok, message
    assert [e["name"] for e in json.loads(target.read_text(encoding="utf-8"))] == ["inline-1", "server-2"]
    assert _names(pool) == ["inline-1", "server-2"]
    assert reloaded.args[0].path == str(target)


def test_unset_variable_proposes_the_servers_in_use(pool_for, open_editor):
    pool = pool_for({})
    dialog = open_editor(pool, environ={})
    assert dialog.mode == "unset"
    assert "is not set" in dialog.where.text()
    assert [e["name"] for e in json.loads(dialog.text)] == [s.name for s in pool.servers]
    assert not dialog.dirty, "a proposal is not an unsaved change"


def test_unsaved_changes_are_never_dropped_silently(config_file, pool_for, open_editor, qtbot):
    from nuke_comfy_cluster.ui.config_editor import CANCEL, DISCARD, SAVE

    environ = {"NUKE_COMFYUI_SERVERS": str(config_file)}
    dialog = open_editor(pool_for(environ), environ=environ)
    dialog.show()
    dialog.add_server()
    asked = []

    def answer(reply):
        def ask(action):
            asked.append(action)
            return reply

        return ask

    dialog.ask_unsaved = answer(CANCEL)
    assert not dialog.close()
    assert dialog.isVisible() and asked == ["close the editor"]
    dialog.reject()  # Escape asks too
    assert dialog.isVisible() and len(asked) == 2

    dialog.ask_unsaved = answer(SAVE)  # saves, then closes once written
    with qtbot.waitSignal(dialog.operation_finished, timeout=15000):
        assert not dialog.close()
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)
    assert "server-3" in config_file.read_text(encoding="utf-8")

    dialog.show()
    dialog.add_server()
    dialog.ask_unsaved = answer(DISCARD)
    assert dialog.close() and not dialog.isVisible()


@pytest.mark.integration
def test_connection_test_per_server_runs_on_a_worker(start_sims, open_editor, qtbot, tmp_path):
    from nuke_comfy_cluster.core.config import servers_to_json
    from nuke_comfy_cluster.ui import config_editor as ce

    procs = start_sims([1.0], seconds=0.2)
    servers = sim_servers(procs)
    path = tmp_path / "servers.json"
    text = servers_to_json(servers)
    entries = json.loads(text) + [{"name": "nobody", "ip": "127.0.0.1", "port": closed_port()}]
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    dialog = open_editor(None, path=str(path))
    with qtbot.waitSignal(dialog.test_finished, timeout=15000) as good:
        assert dialog.test_row(0)
    assert good.args[0] == "sim0" and good.args[1] is True and "reachable" in good.args[2]
    assert _cell(dialog, 0, ce.COL_TEST) == "ok"
    dialog.table.selectRow(1)
    with qtbot.waitSignal(dialog.test_finished, timeout=15000) as bad:
        assert dialog.test_selected()
    assert bad.args[:2] == ["nobody", False]
    assert _cell(dialog, 1, ce.COL_TEST) == "failed"


def test_url_servers_show_their_url_and_every_column_is_readable(tmp_path, open_editor, qtbot):
    from nuke_comfy_cluster.ui import config_editor as ce
    from nuke_comfy_cluster.ui.qt import QtCore

    path = tmp_path / "servers.json"
    entries = [
        {"name": "gpu-a", "ip": "10.0.0.21", "port": 8188, "dir_local": "P:/projects", "dir_remote": "/mnt/projects"},
        {"name": "gpu-b", "url": "https://comfy-b.studio.lan:8443", "priority": 1},
        {
            "name": "render-farm-07",
            "ip": "render-farm-07.studio.lan",
            "port": 8188,
            "dir_local": "//fileserver/projects/show",
            "dir_remote": "/mnt/projects/show",
            "enabled": False,
        },
    ]
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    dialog = open_editor(None, path=str(path), environ={})
    dialog.show()
    qtbot.waitExposed(dialog)

    # a server given by "url" shows it; its port is part of it, not a field of its own
    assert _cell(dialog, 1, ce.COL_IP) == "https://comfy-b.studio.lan:8443"
    assert _cell(dialog, 1, ce.COL_PORT) == "8443"
    assert not dialog.table.item(1, ce.COL_PORT).flags() & QtCore.Qt.ItemFlag.ItemIsEditable
    dialog.table.item(1, ce.COL_IP).setText("https://comfy-b.studio.lan:9443")
    edited = json.loads(dialog.text)[1]
    assert edited["url"] == "https://comfy-b.studio.lan:9443" and "ip" not in edited and "port" not in edited
    assert _cell(dialog, 1, ce.COL_PORT) == "9443" and not dialog.errors

    # at the default size every column shows its title and its cells whole, without scrolling
    table = dialog.table
    header = table.horizontalHeader()
    assert header.length() <= table.viewport().width()
    for col, title in enumerate(ce.TABLE_HEADERS):
        width = table.columnWidth(col)
        assert width >= header.sectionSizeHint(col), f"the title {title!r} is cut"
        assert width >= table.sizeHintForColumn(col), f"the cells of {title!r} are cut"
