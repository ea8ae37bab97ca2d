"""The one Qt binding shim: PySide6 (Nuke 16) or PySide2 (Nuke 14/15).

Every ui module imports Qt from here and uses only what both bindings share,
with fully qualified enums (``QtCore.Qt.AlignmentFlag.AlignLeft``).

Which binding, in order:

1. ``NCC_QT_API=pyside6|pyside2`` forces one (tests, odd installs);
2. a binding the host already imported (Nuke has loaded its own: importing the
   other one would load a second Qt into the process);
3. PySide6, else PySide2.

Choosing means importing, so the environment is read when this module is first
imported; nothing else happens here (no application, no widgets).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import threading
from typing import Any, List, Optional, Tuple

_NAMES = ("PySide6", "PySide2")


def _candidates() -> List[str]:
    forced = os.environ.get("NCC_QT_API", "").strip().lower()
    if forced:
        for name in _NAMES:
            if name.lower() == forced:
                return [name]
        raise ImportError("NCC_QT_API={!r}: expected one of {}".format(forced, ", ".join(n.lower() for n in _NAMES)))
    loaded = [name for name in _NAMES if sys.modules.get(name + ".QtCore") is not None]
    return loaded or list(_NAMES)


def _load() -> Tuple[str, Any, Any, Any]:
    errors = []
    for name in _candidates():
        try:
            core = importlib.import_module(name + ".QtCore")
            gui = importlib.import_module(name + ".QtGui")
            widgets = importlib.import_module(name + ".QtWidgets")
        except ImportError as e:
            errors.append(f"{name}: {e}")
            continue
        return name, core, gui, widgets
    raise ImportError("No Qt binding found (tried {}). Install PySide6 or PySide2.".format("; ".join(errors)))


BINDING, QtCore, QtGui, QtWidgets = _load()
#: "PySide6" -> 6, "PySide2" -> 5: the Qt major version behind the binding
QT_MAJOR = 6 if BINDING == "PySide6" else 5

Signal = QtCore.Signal
Slot = QtCore.Slot
#: QAction moved from QtWidgets (Qt 5) to QtGui (Qt 6)
QAction = QtGui.QAction if hasattr(QtGui, "QAction") else QtWidgets.QAction


def exec_(obj: Any, *args: Any) -> Any:
    """``obj.exec()`` (PySide6) or ``obj.exec_()`` (PySide2): apps, dialogs, menus, event loops."""
    method = getattr(obj, "exec", None) or obj.exec_
    return method(*args)


_fix_lock = threading.Lock()
_fixed: Optional[bool] = None
#: PySide6 releases whose calls lose references to None / True / False (seen, not guessed)
_KNOWN_LEAKY = {(6, 12, 0)}
_PROBE_CALLS = 64
#: what the singletons' reference counts are raised by: more than any session can lose
_HEADROOM = 1 << 40


def _binding_version() -> Tuple[int, ...]:
    info = getattr(sys.modules.get(BINDING), "__version_info__", ())
    return tuple(v for v in info[:3] if isinstance(v, int))


def _leaks_singletons() -> bool:
    """True when calls into the binding give back ``None`` / ``True`` without owning them.

    PySide6 6.12.0 does, on every void call (``setText``, ``setEnabled``, ...) and every
    ``emit()``: on Python 3.11 the count of ``None`` or ``True`` then runs down and the
    interpreter aborts ("none_dealloc" / "bool_dealloc: deallocating True or False"), at
    exit or mid-session. Known releases are listed; others are measured (median of three
    small rounds, so other threads touching the singletons do not decide it).
    """
    if BINDING != "PySide6":
        return False
    if _binding_version() in _KNOWN_LEAKY:
        return True
    probe = QtCore.QObject()
    losses = []
    for _ in range(3):
        before = sys.getrefcount(None)
        for _ in range(_PROBE_CALLS):
            probe.setObjectName("ncc-probe")
        losses.append(before - sys.getrefcount(None))
    return sorted(losses)[1] >= _PROBE_CALLS * 3 // 4


def apply_binding_fixes() -> bool:
    """Work around known binding bugs once per process; returns True when a fix was applied.

    For the singleton leak above: ``None``, ``True`` and ``False`` are static objects that
    must never be freed, so their reference counts are raised far beyond what any session
    can lose (what Python 3.12 does for them by design: immortal objects). Nothing else
    is touched; on Python 3.12+ and on sound bindings this does nothing. Called by the
    panel, the editor, the standalone window and :func:`emit`.
    """
    global _fixed
    if _fixed is not None:
        return _fixed
    with _fix_lock:
        if _fixed is None:
            fix = sys.implementation.name == "cpython" and sys.version_info < (3, 12) and _leaks_singletons()
            if fix:
                for obj in (None, True, False):
                    ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM
            _fixed = fix
    return bool(_fixed)


def emit(signal: Any, *args: Any) -> Any:
    """``signal.emit(*args)``, after :func:`apply_binding_fixes` (every emit of PySide6
    6.12.0 loses a reference to ``True``). Use it for every emit, from any thread."""
    if _fixed is None:
        apply_binding_fixes()
    return signal.emit(*args)


def enum_value(value: Any) -> int:
    """The integer behind a Qt enum value, whichever binding made it (or an int already)."""
    value = getattr(value, "value", value)
    return int(value)


__all__ = [
    "BINDING",
    "QT_MAJOR",
    "QAction",
    "QtCore",
    "QtGui",
    "QtWidgets",
    "Signal",
    "Slot",
    "apply_binding_fixes",
    "emit",
    "enum_value",
    "exec_",
]
