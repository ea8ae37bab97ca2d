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

import importlib
import os
import sys
from typing import Any, List, Tuple

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


def enum_value(value: Any) -> int:
    """The integer behind a Qt enum value, whichever binding made it (or an int already)."""
    value = getattr(value, "value", value)
    return int(value)


__all__ = ["BINDING", "QT_MAJOR", "QAction", "QtCore", "QtGui", "QtWidgets", "Signal", "Slot", "enum_value", "exec_"]
