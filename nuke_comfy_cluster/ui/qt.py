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


_emit_lock = threading.Lock()
_emit_loses_true: Optional[bool] = None
#: releases where emit() is known to lose a reference to True (checked, not guessed: see _probe_emit)
_KNOWN_LEAKY = {(6, 12, 0)}
_PROBE_EMITS = 64


def _incref(obj: Any) -> None:
    ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_IncRef", ctypes.pythonapi))(obj)


def _binding_version() -> Tuple[int, ...]:
    info = getattr(sys.modules.get(BINDING), "__version_info__", ())
    return tuple(v for v in info[:3] if isinstance(v, int))


def _probe_emit() -> bool:
    """True when ``SignalInstance.emit`` hands back ``True`` without owning a reference.

    PySide6 6.12.0 does: every emit made from Python takes one reference from ``True``,
    and the interpreter aborts ("bool_dealloc: deallocating True or False") at exit, or
    mid-run once a few hundred signals were emitted. Known releases are listed; others
    are measured in three small rounds (the median, so other threads touching ``True``
    meanwhile do not decide it), each loss given back at once.
    """
    if BINDING != "PySide6":
        return False
    if _binding_version() in _KNOWN_LEAKY:
        return True

    class _Probe(QtCore.QObject):
        probed = Signal()

    probe = _Probe()
    losses = []
    for _ in range(3):
        before = sys.getrefcount(True)
        for _ in range(_PROBE_EMITS):
            probe.probed.emit()
        lost = before - sys.getrefcount(True)
        for _ in range(min(max(lost, 0), _PROBE_EMITS)):
            _incref(True)
        losses.append(lost)
    return sorted(losses)[1] >= _PROBE_EMITS * 3 // 4


def emit(signal: Any, *args: Any) -> Any:
    """``signal.emit(*args)``; use it for every emit (any thread): it repairs the
    reference PySide6 6.12.0 loses on each one (see :func:`_probe_emit`)."""
    global _emit_loses_true
    if _emit_loses_true is None:
        with _emit_lock:
            if _emit_loses_true is None:
                _emit_loses_true = _probe_emit()
    result = signal.emit(*args)
    if _emit_loses_true and result is True:
        _incref(True)
    return result


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
    "emit",
    "enum_value",
    "exec_",
]
