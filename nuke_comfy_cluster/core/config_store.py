"""Saving the server list to its JSON file: validated, locked, backed up, atomic.

A save goes::

    validate -> lock <file>.lock (fcntl / msvcrt, bounded wait)
             -> copy the current file to <dir>/backups/<stem>.YYYYmmdd-HHMMSS-ffffff.json
             -> write <dir>/.<name>.XXXX.tmp, fsync -> os.replace -> fsync the folder
             -> prune old backups -> unlock

so a crash at any point leaves the old or the new complete file, never a
mix, and every save can be undone from ``backups/``. Backup names carry UTC
time (no daylight-saving jumps in their order).

Every failure is a :class:`~nuke_comfy_cluster.core.errors.ConfigError`
naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from .config import ConfigIssue, ServerConfig, parse_servers, read_config_file, servers_to_json
from .errors import ConfigError
from .file_locks import fsync_folder, try_lock, unlock

CONFIG_FILENAME = "comfyui_servers.json"
ENV_HOME = "NUKE_COMFY_CLUSTER_HOME"
BACKUP_FOLDER = "backups"
LOCK_TIMEOUT = 10.0

_STAMP_FORMAT = "%Y%m%d-%H%M%S-%f"
_STAMP = r"(\d{8}-\d{6}-\d{6})"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class SaveResult:
    """Where the servers were written, and the backup of what was there before (None if nothing was)."""

    path: Path
    backup: Optional[Path]


@dataclass(frozen=True)
class BackupInfo:
    """One backup file; ``created`` is aware UTC, ``servers`` None when the file cannot be read as a list."""

    path: Path
    created: datetime
    servers: Optional[int]


def default_config_path() -> Path:
    """``~/.nuke/comfyui_servers.json``, or ``$NUKE_COMFY_CLUSTER_HOME/comfyui_servers.json`` when that is set."""
    home = os.environ.get(ENV_HOME, "").strip()
    folder = Path(os.path.expanduser(home)) if home else Path.home() / ".nuke"
    return folder / CONFIG_FILENAME


def _os_cause(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file or folder not found"
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def _fail(action: str, path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"Cannot {action} {path}: {_os_cause(exc)}")


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(path: Path, timeout: Optional[float] = None) -> Iterator[None]:
    """Hold ``<path>.lock`` exclusively (between processes and between threads), waiting at most ``timeout``.

    The lock file is removed on release (an empty ``.lock`` beside the config only
    puzzles people); a waiter that then holds the lock of a removed file sees the
    path now names another file (or none) and starts over.
    """
    if timeout is None:
        timeout = LOCK_TIMEOUT
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail("lock", path, exc) from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _fail("lock", path, exc) from exc
        try:
            _wait_for_lock(fd, path, lock_path, deadline, timeout)
        except BaseException:
            os.close(fd)
            raise
        if _still_named(fd, lock_path):
            break
        unlock(fd)
        os.close(fd)
    try:
        yield
    finally:
        if sys.platform != "win32":  # Windows cannot remove a file that is open
            with contextlib.suppress(OSError):
                os.unlink(str(lock_path))
        unlock(fd)
        os.close(fd)


def _wait_for_lock(fd: int, path: Path, lock_path: Path, deadline: float, timeout: float) -> None:
    while True:
        try:
            try_lock(fd)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                raise _fail("lock", path, exc) from exc
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"Cannot save {path}: another program has been saving it for more than {timeout:.0f} s "
                    f"(lock file {lock_path})"
                ) from exc
            time.sleep(0.02)


def _still_named(fd: int, lock_path: Path) -> bool:
    """True when ``lock_path`` still names the file ``fd`` has open (not removed by the last holder)."""
    if sys.platform == "win32":  # pragma: no cover - never removed there
        return True
    try:
        held, named = os.fstat(fd), os.stat(str(lock_path))
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _replace(src: str, dst: Path) -> None:
    # On Windows a reader holding the file open makes replace fail for a moment.
    for attempt in range(20):
        try:
            os.replace(src, str(dst))
            return
        except PermissionError:
            if sys.platform != "win32" or attempt == 19:
                raise
            time.sleep(0.05)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def _remove_stale_temps(path: Path) -> None:
    """Temp files a killed save left behind; only called while holding the lock, so none is in use."""
    for folder, prefix in (
        (path.parent, _temp_prefix(path)),
        (_backup_folder(path), f".{path.stem}."),
    ):
        try:
            names = os.listdir(str(folder))
        except OSError:
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(str(folder / name))


def _mode_for(servers: Sequence[ServerConfig], existing: Optional[int]) -> int:
    mode = 0o600 if any(s.token or s.headers for s in servers) else 0o644
    if existing is not None:
        # never loosen what the user tightened, but keep the file ours to rewrite
        mode = (mode & existing) | 0o600
    return mode


# --------------------------------------------------------------------------- backups


def _backup_folder(path: Path) -> Path:
    return path.parent / BACKUP_FOLDER


def _backup_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(path.stem)}\.{_STAMP}\.json$")


def _make_backup(path: Path, data: bytes) -> Path:
    folder = _backup_folder(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail("create the backup folder", folder, exc) from exc
    now = datetime.now(timezone.utc)
    while True:
        target = folder / f"{path.stem}.{now.strftime(_STAMP_FORMAT)}.json"
        if not target.exists():
            break
        now += timedelta(microseconds=1)
    try:
        # private whatever the original was: old copies of tokens should not linger readable
        _atomic_write(target, data, 0o600)
    except OSError as exc:
        raise _fail("write the backup", target, exc) from exc
    return target


def _prune_backups(path: Path, keep: int) -> None:
    for info in list_backups(path, count_servers=False)[max(keep, 0) :]:
        with contextlib.suppress(OSError):
            info.path.unlink()


def list_backups(path: PathLike, *, count_servers: bool = True) -> List[BackupInfo]:
    """The backups of ``path``, newest first. ``servers`` counts usable servers (None: unreadable or not JSON)."""
    path = Path(path)
    folder = _backup_folder(path)
    pattern = _backup_pattern(path)
    try:
        names = os.listdir(str(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _fail("list the backups in", folder, exc) from exc
    found: List[BackupInfo] = []
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        try:
            created = datetime.strptime(match.group(1), _STAMP_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        full = folder / name
        found.append(BackupInfo(full, created, _count_servers(full) if count_servers else None))
    found.sort(key=lambda info: (info.created, info.path.name), reverse=True)
    return found


def _count_servers(path: Path) -> Optional[int]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    servers, issues = parse_servers(text, origin=str(path))
    if not servers and any(i.level == "error" and i.index is None for i in issues):
        return None
    return len(servers)


def backup_now(path: PathLike, *, keep_backups: int = 20) -> Path:
    """Copy the current file to ``backups/`` now; returns the backup's path."""
    path = Path(path)
    with _locked(path):
        data = _read_bytes(path)
        backup = _make_backup(path, data)
        _prune_backups(path, max(keep_backups, 1))
    return backup


# --------------------------------------------------------------------------- save / restore / import / export


def _read_bytes(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise ConfigError(f"Cannot read {path}: it is a folder, not a file")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"Cannot read {path}: file not found") from exc
    except OSError as exc:
        raise _fail("read", path, exc) from exc


def _read_config(path: Path) -> Tuple[str, List[ConfigIssue]]:
    """(text, warnings) of a file to import or restore; read as the environment's file is
    (size limit, no FIFOs, UTF-16 from PowerShell accepted with a warning)."""
    read = read_config_file(str(path), origin="")
    if read.text is None:
        raise ConfigError(read.issues[0].message, read.issues)
    return read.text, list(read.issues)


def _validated(path: Path, servers_or_json_text: Union[str, Sequence[ServerConfig]]) -> Tuple[str, List[ServerConfig]]:
    if isinstance(servers_or_json_text, str):
        text = servers_or_json_text
    else:
        text = servers_to_json(list(servers_or_json_text))
    servers, issues = parse_servers(text, origin=str(path))
    errors = [i for i in issues if i.level == "error"]
    if errors:
        first = errors[0].message
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"Not saved: {first}{more}", issues)
    if not text.endswith("\n"):
        text += "\n"
    return text, servers


def save_servers(
    path: PathLike, servers_or_json_text: Union[str, Sequence[ServerConfig]], *, keep_backups: int = 20
) -> SaveResult:
    """Validate, back up the current file, and atomically write the new one.

    ``servers_or_json_text`` is JSON text (written as given, so the user's
    layout and ``"_comment"`` keys survive) or ServerConfig objects (written
    with :func:`servers_to_json`). Text with errors is refused with a
    :class:`ConfigError` carrying the issues; warnings do not stop a save.
    ``keep_backups`` bounds the backups kept (0: make none).
    """
    path = Path(path)
    text, servers = _validated(path, servers_or_json_text)
    data = text.encode("utf-8")
    with _locked(path):
        _remove_stale_temps(path)
        backup: Optional[Path] = None
        existing_mode: Optional[int] = None
        try:
            existing_mode = stat.S_IMODE(os.stat(str(path)).st_mode)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fail("read", path, exc) from exc
        if existing_mode is not None and keep_backups > 0:
            backup = _make_backup(path, _read_bytes(path))
        try:
            _atomic_write(path, data, _mode_for(servers, existing_mode))
        except OSError as exc:
            raise _fail("write", path, exc) from exc
        if keep_backups > 0:
            _prune_backups(path, keep_backups)
    return SaveResult(path, backup)


def restore_backup(path: PathLike, backup: Union[PathLike, BackupInfo], *, keep_backups: int = 20) -> SaveResult:
    """Put a backup back in place; the current file is backed up first, so a restore can be undone."""
    source = backup.path if isinstance(backup, BackupInfo) else Path(backup)
    try:
        text, _ = _read_config(source)
    except ConfigError as exc:
        text_of = str(exc)
        raise ConfigError(f"Not restored: {text_of[:1].lower()}{text_of[1:]}", exc.issues) from exc
    # checked under its own name first, so a message points at the bad backup, not at the target
    _, issues = parse_servers(text, origin=str(source))
    errors = [i for i in issues if i.level == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"Not restored: backup {source} is not valid: {errors[0]}{more}", issues)
    return save_servers(path, text, keep_backups=keep_backups)


def export_config(
    servers: Sequence[ServerConfig], dest: PathLike, include_secrets: bool = False, make_folders: bool = True
) -> Path:
    """Write the servers to ``dest`` (atomic; token and headers left out unless ``include_secrets``).

    ``make_folders=False`` refuses a missing folder instead of creating it (the command
    line: a typo in a typed path should fail, not make a tree).
    """
    dest = Path(os.path.abspath(str(dest)))
    servers = list(servers)
    text = servers_to_json(servers, include_secrets=include_secrets)
    secret = include_secrets and any(s.token or s.headers for s in servers)
    _check_export_target(dest, make_folders)
    try:
        if make_folders:
            dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, text.encode("utf-8"), 0o600 if secret else 0o644)
    except OSError as exc:
        raise _fail("export to", dest, exc) from exc
    return dest


def _check_export_target(dest: Path, make_folders: bool) -> None:
    """Say what is in the way in words (a file where a folder should be), before the OS says less."""
    if dest.is_dir():
        raise ConfigError(f"Cannot export to {dest}: it is a folder; give a file name, e.g. {dest / CONFIG_FILENAME}")
    for parent in [dest.parent, *dest.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"Cannot export to {dest}: {parent} is a file, not a folder")
            break
    if not make_folders and not dest.parent.is_dir():
        raise ConfigError(f"Cannot export to {dest}: folder {dest.parent} does not exist (create it first)")


def import_config(src: PathLike) -> Tuple[List[ServerConfig], List[ConfigIssue]]:
    """Read and validate a server file without writing anything; unreadable files raise ConfigError."""
    path = Path(src)
    text, notes = _read_config(path)
    servers, issues = parse_servers(text, origin=str(path))
    return servers, notes + issues


__all__ = [
    "BackupInfo",
    "CONFIG_FILENAME",
    "SaveResult",
    "backup_now",
    "default_config_path",
    "export_config",
    "import_config",
    "list_backups",
    "restore_backup",
    "save_servers",
]
