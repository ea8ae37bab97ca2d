"""Saving the server file: validation, backups, restore, import/export, crash and concurrency safety."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nuke_comfy_cluster.core import config_store
from nuke_comfy_cluster.core.config import ServerConfig, parse_servers, servers_to_json
from nuke_comfy_cluster.core.config_store import (
    BackupInfo,
    SaveResult,
    backup_now,
    default_config_path,
    export_config,
    import_config,
    list_backups,
    restore_backup,
    save_servers,
)
from nuke_comfy_cluster.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
POSIX = os.name == "posix"


def servers(n, prefix="s", **kw):
    return [ServerConfig(f"{prefix}{i}", ip=f"10.0.{i // 250}.{i % 250 + 1}", **kw) for i in range(n)]


def mode_of(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


# --------------------------------------------------------------------------- paths


def test_default_config_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NUKE_COMFY_CLUSTER_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "comfyui_servers.json"
    monkeypatch.delenv("NUKE_COMFY_CLUSTER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".nuke" / "comfyui_servers.json"


# --------------------------------------------------------------------------- save


def test_first_save_creates_the_file_without_backup(tmp_path):
    path = tmp_path / "nested" / "servers.json"
    result = save_servers(path, servers(2))
    assert result == SaveResult(path, None)
    loaded, issues = parse_servers(path.read_text(encoding="utf-8"))
    assert [s.name for s in loaded] == ["s0", "s1"] and issues == []
    assert list_backups(path) == []


def test_each_save_backs_up_the_previous_file(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    first = path.read_bytes()
    result = save_servers(path, servers(3))
    assert result.backup is not None and result.backup.read_bytes() == first
    assert result.backup.parent == tmp_path / "backups"
    assert result.backup.name.startswith("servers.") and result.backup.name.endswith(".json")
    (info,) = list_backups(path)
    assert isinstance(info, BackupInfo) and info.path == result.backup and info.servers == 1
    assert info.created.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - info.created).total_seconds()) < 60


def test_backups_are_listed_newest_first_and_pruned(tmp_path):
    path = tmp_path / "servers.json"
    for n in range(1, 8):
        save_servers(path, servers(n), keep_backups=4)
    backups = list_backups(path)
    assert [b.servers for b in backups] == [6, 5, 4, 3]
    assert [b.created for b in backups] == sorted((b.created for b in backups), reverse=True)
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(b.path.name for b in backups)


def test_text_is_written_as_given_and_warnings_do_not_stop_a_save(tmp_path):
    path = tmp_path / "servers.json"
    text = '[\n  {"name": "a", "ip": "h", "_comment": "render box", "prot": 1}\n]'
    save_servers(path, text)
    assert path.read_text(encoding="utf-8") == text + "\n"


def test_text_with_errors_is_refused_and_the_file_is_untouched(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(2))
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        save_servers(path, '[{"name": "a", "ip": "h", "port": "abc"}]')
    assert str(path) in str(info.value) and 'field "port"' in str(info.value)
    assert info.value.issues and info.value.issues[0].field == "port"
    with pytest.raises(ConfigError) as info:
        save_servers(path, "[{")
    assert "line 1" in str(info.value)
    with pytest.raises(ConfigError):
        save_servers(path, [ServerConfig("dup"), ServerConfig("DUP")])
    assert path.read_bytes() == before and list_backups(path) == []


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_file_mode_follows_secrets_and_keeps_a_stricter_mode(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    assert mode_of(path) == 0o644
    save_servers(path, servers(1, token="t0ken"))
    assert mode_of(path) == 0o600
    save_servers(path, [ServerConfig("a", headers={"X-Key": "v"})])
    assert mode_of(path) == 0o600
    os.chmod(str(path), 0o640)
    save_servers(path, servers(1))
    assert mode_of(path) == 0o640
    assert [mode_of(b.path) for b in list_backups(path)] == [0o600] * 3


def test_unwritable_place_is_a_config_error_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "servers.json"
    with pytest.raises(ConfigError) as info:
        save_servers(target, servers(1))
    assert str(target) in str(info.value)


@pytest.mark.skipif(not POSIX, reason="POSIX permissions")
def test_permission_denied_is_named(tmp_path):
    """Run as an unprivileged user even when the tests run as root (root ignores modes)."""
    import subprocess
    import sys
    import textwrap

    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "servers.json"
    save_servers(path, servers(1))
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(folder), 0o555)
    os.chmod(str(path), 0o644)
    code = textwrap.dedent(
        """
        import os, sys
        from nuke_comfy_cluster.core.config import ServerConfig
        from nuke_comfy_cluster.core.config_store import save_servers
        from nuke_comfy_cluster.core.errors import ConfigError
        if os.geteuid() == 0:  # imports first: the interpreter may live under /root
            os.setgid(65534)
            os.setuid(65534)
        try:
            save_servers(sys.argv[1], [ServerConfig("x", "h", 1)])
        except ConfigError as e:
            print(e)
            sys.exit(3)
        sys.exit(0)
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, HOME=str(tmp_path))
    parents = [tmp_path] + list(tmp_path.parents)
    opened = [(p, os.stat(p).st_mode) for p in parents if os.geteuid() == 0 and not (os.stat(p).st_mode & 0o001)]
    for p, mode in opened:  # let the unprivileged child reach the folder
        os.chmod(str(p), mode | 0o001)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        for p, mode in opened:
            os.chmod(str(p), mode)
        os.chmod(str(folder), 0o700)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "permission denied" in done.stdout and str(path) in done.stdout


@pytest.mark.skipif(not POSIX, reason="fcntl lock")
def test_a_held_lock_makes_save_give_up_after_a_bounded_wait(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    monkeypatch.setattr(config_store, "LOCK_TIMEOUT", 0.3)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = time.monotonic()
        with pytest.raises(ConfigError) as info:
            save_servers(path, servers(2))
        assert 0.25 < time.monotonic() - start < 5
        assert "another program" in str(info.value)
    finally:
        os.close(fd)
    save_servers(path, servers(2))
    assert len(parse_servers(path.read_text())[0]) == 2


def test_stale_temp_files_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    stale = tmp_path / ".servers.json.abc123.tmp"
    stale.write_text("half")
    (tmp_path / "backups" / ".servers.20200101.json.x.tmp").parent.mkdir(exist_ok=True)
    (tmp_path / "backups" / ".servers.20200101.json.x.tmp").write_text("half")
    save_servers(path, servers(2))
    assert not stale.exists() and not list((tmp_path / "backups").glob("*.tmp"))


# --------------------------------------------------------------------------- backup / restore


def test_backup_now_and_restore_is_undoable(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    one = path.read_bytes()
    manual = backup_now(path)
    assert manual.read_bytes() == one
    save_servers(path, servers(2))
    two = path.read_bytes()

    result = restore_backup(path, manual)
    assert path.read_bytes() == one
    assert result.backup is not None and result.backup.read_bytes() == two
    restore_backup(path, list_backups(path)[0])  # undo the restore
    assert path.read_bytes() == two


def test_backup_now_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        backup_now(tmp_path / "none.json")
    assert "none.json" in str(info.value) and "not found" in str(info.value)


def test_restoring_an_invalid_or_missing_backup_is_refused(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    bad = tmp_path / "backups" / "servers.20200101-000000-000000.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text("[{", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        restore_backup(path, bad)
    assert "Not restored" in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(ConfigError):
        restore_backup(path, tmp_path / "missing.json")
    assert path.read_bytes() == before
    assert [b.servers for b in list_backups(path)] == [None]


def test_list_backups_ignores_other_files(tmp_path):
    path = tmp_path / "servers.json"
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "servers.20240101-120000-000000.json").write_text("[]")
    (folder / "servers.nope.json").write_text("[]")
    (folder / "other.20240101-120000-000000.json").write_text("[]")
    (folder / "servers.x.20240101-120000-000000.json").write_text("[]")
    (backup,) = list_backups(path)
    assert backup.created == datetime(2024, 1, 1, 12, tzinfo=timezone.utc) and backup.servers == 0


# --------------------------------------------------------------------------- import / export


def test_export_without_and_with_secrets(tmp_path):
    items = [ServerConfig("a", token="tok", headers={"X-Key": "hdr"})]
    dest = export_config(items, tmp_path / "out" / "export.json")
    text = dest.read_text(encoding="utf-8")
    assert "tok" not in text and "hdr" not in text and json.loads(text)[0]["name"] == "a"
    dest = export_config(items, tmp_path / "secret.json", include_secrets=True)
    assert json.loads(dest.read_text())[0]["token"] == "tok"
    if POSIX:
        assert mode_of(dest) == 0o600


def test_import_validates_without_writing(tmp_path):
    src = tmp_path / "in.json"
    src.write_text('[{"name": "a", "ip": "h"}, {"name": "b", "ip": "h", "port": 0}]', encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    loaded, issues = import_config(src)
    assert [s.name for s in loaded] == ["a"]
    assert issues[0].message.startswith(f"{src} entry 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    src.write_text("[{", encoding="utf-8")
    loaded, issues = import_config(src)
    assert loaded == [] and issues[0].line == 1


def test_import_of_missing_or_binary_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        import_config(tmp_path / "missing.json")
    assert "missing.json" in str(info.value) and "not found" in str(info.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"[\xc3\x28garbage")
    with pytest.raises(ConfigError) as info:
        import_config(binary)
    assert "UTF-8" in str(info.value) and str(binary) in str(info.value)
    if POSIX:
        fifo = tmp_path / "fifo.json"
        os.mkfifo(str(fifo))
        with pytest.raises(ConfigError, match="not a regular file"):
            import_config(fifo)  # would block forever if it were opened for reading


def test_import_reads_the_utf16_that_powershell_writes(tmp_path):
    src = tmp_path / "ps.json"
    src.write_bytes('[{"name": "gpu1", "ip": "10.0.0.5", "port": 8188}]\r\n'.encode("utf-16"))  # with BOM
    loaded, issues = import_config(src)
    assert [s.name for s in loaded] == ["gpu1"]
    assert [i.level for i in issues] == ["warning"] and "UTF-16" in issues[0].message


def test_import_of_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    from nuke_comfy_cluster.core.config import MAX_CONFIG_BYTES

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(b"[" + b" " * (MAX_CONFIG_BYTES + 10) + b"]")
    with pytest.raises(ConfigError, match="larger than 10 MB"):
        import_config(big)


def test_export_does_not_create_folders_and_names_a_file_in_the_way(tmp_path):
    items = [ServerConfig("a")]
    with pytest.raises(ConfigError) as info:
        export_config(items, tmp_path / "typo" / "export.json", make_folders=False)
    assert "does not exist" in str(info.value) and not (tmp_path / "typo").exists()
    assert export_config(items, tmp_path / "made" / "export.json").is_file()  # the editor's dialog may make one
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        export_config(items, tmp_path / "file" / "sub" / "export.json")
    assert f"{tmp_path / 'file'} is a file, not a folder" in str(info.value)
    with pytest.raises(ConfigError, match="it is a folder"):
        export_config(items, tmp_path)


def test_a_save_leaves_no_lock_file_behind(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    save_servers(path, servers(2))
    backup_now(path)
    assert not (tmp_path / "servers.json.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "servers.json"]


def test_restore_from_a_bad_backup_names_that_backup(tmp_path):
    path = tmp_path / "servers.json"
    save_servers(path, servers(1))
    bad = tmp_path / "old.json"
    bad.write_text('[{"name": "a", "ip": "h", "port": 0}]', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        restore_backup(path, bad)
    message = str(info.value)
    assert message.startswith(f"Not restored: backup {bad} is not valid: {bad} entry 1")
    assert str(path) + " " not in message
    with pytest.raises(ConfigError, match=f"Not restored: cannot read {tmp_path / 'gone.json'}: file not found"):
        restore_backup(path, tmp_path / "gone.json")


# --------------------------------------------------------------------------- crash and concurrency

_SAVE_LOOP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from nuke_comfy_cluster.core.config_store import save_servers
    path = Path(sys.argv[2])
    texts = [Path(p).read_text(encoding="utf-8") for p in sys.argv[3:5]]
    rounds = int(sys.argv[5])
    i = 0
    while rounds < 0 or i < rounds:
        save_servers(path, texts[i % 2], keep_backups=3)
        if i == 0:
            print("saved", flush=True)
        i += 1
    """
)


def _start_loop(tmp_path, path, a, b, rounds):
    script = tmp_path / "save_loop.py"
    script.write_text(_SAVE_LOOP, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script), str(REPO), str(path), str(a), str(b), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _texts(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text(servers_to_json(servers(300, "a", token="x" * 40)), encoding="utf-8")
    b.write_text(servers_to_json(servers(500, "b")), encoding="utf-8")
    return a, b


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
@pytest.mark.timeout(90)
def test_killing_a_save_at_random_points_never_leaves_a_broken_file(tmp_path):
    a, b = _texts(tmp_path)
    good = {a.read_bytes(), b.read_bytes()}
    path = tmp_path / "cfg" / "servers.json"
    save_servers(path, a.read_text(encoding="utf-8"))
    rng = random.Random(20240611)
    for _ in range(10):
        proc = _start_loop(tmp_path, path, a, b, -1)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready and proc.stdout.readline().strip() == b"saved", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.08))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert path.read_bytes() in good
        loaded, issues = parse_servers(path.read_text(encoding="utf-8"))
        assert len(loaded) in (300, 500) and not [i for i in issues if i.level == "error"]
        backups = list_backups(path)
        assert 1 <= len(backups) <= 4  # keep 3, plus one made just before a kill cut the pruning
        assert all(info.path.read_bytes() in good for info in backups)
    save_servers(path, b.read_text(encoding="utf-8"), keep_backups=3)
    assert not list(path.parent.glob("*.tmp")) and not list((path.parent / "backups").glob("*.tmp"))
    assert len(list_backups(path)) == 3


@pytest.mark.timeout(120)
def test_two_processes_saving_at_once_leave_valid_files(tmp_path):
    a, b = _texts(tmp_path)
    good = {a.read_bytes(), b.read_bytes()}
    path = tmp_path / "cfg" / "servers.json"
    procs = [_start_loop(tmp_path, path, a, b, 25), _start_loop(tmp_path, path, b, a, 25)]
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=100)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, err.decode(errors="replace")
    assert path.read_bytes() in good
    backups = list_backups(path)
    assert len(backups) == 3
    assert all(info.servers in (300, 500) and info.path.read_bytes() in good for info in backups)
    assert len({info.path.name for info in backups}) == 3


def test_the_lock_still_excludes_when_each_holder_removes_its_lock_file(tmp_path):
    """Removing the lock file on release must not let a waiter and a newcomer in together."""
    import threading

    path = tmp_path / "servers.json"
    inside = []
    overlaps = []

    def worker() -> None:
        for _ in range(30):
            with config_store._locked(path, timeout=30):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not overlaps
    assert not (tmp_path / "servers.json.lock").exists()
