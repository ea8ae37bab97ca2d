"""A small, explicit fake of ``nuke`` and ``nukescripts`` for the Nuke host tests.

Only what the plugin uses is here, and it is strict where Nuke is fragile:

- anything not implemented raises :class:`Missing` (no MagicMock: a call the fake
  does not know is a test failure, not a silent success);
- nodes, knobs, menus, ``execute`` and ``message`` must be used on the main thread
  (:class:`OffMainThread` otherwise), ``ProgressTask`` only from another thread;
  ``executeInMainThread`` queues calls that the test runs with :meth:`FakeNuke.pump`;
- a deleted node raises ``ValueError`` like Nuke ("not attached to a node");
- every call is recorded in :attr:`FakeNuke.calls`.

Foundry semantics it models, each with the source it follows ("DG" is the Python
developer guide on learn.foundry.com, "panels.py" Foundry's ``nukescripts/panels.py``):

- a node's ``knobChanged`` runs for programmatic ``setValue`` and ``setInput`` too, but
  only while its properties panel is open, with dummy ``showPanel`` / ``hidePanel`` /
  ``inputChange`` knobs (DG nuke.addKnobChanged 13.2 and 17.1); ``addUpdateUI``
  callbacks run at idle time whether a panel is open or not (DG nuke.addUpdateUI);
- knob scripts share one ``__main__``-like namespace, and a Group's own knob scripts
  run with the Group as the current context (assumed: see :meth:`FakeNuke.run_script`);
- ``PythonPanel.addToPane()`` docks only into the given pane or ``nuke.thisPane()``,
  which exists only while Nuke runs a Pane-menu command or restores a layout; the
  widget is built once per panel (panels.py addToPane / create / WidgetKnob.makeUI);
  ``restorePanel`` swallows every error and returns None (panels.py restorePanel);
  ``getPaneFor`` finds a pane by a built-in panel name or a panel id (DG nuke.getPaneFor);
- ``allNodes(filter, group, recurseGroups)``, ``selectedNodes()`` inputs first,
  ``selectedNode()`` the selected node no other selected node uses as input, else
  ``ValueError`` (DG nuke.allNodes, nuke.selectedNodes 14.0, nuke.selectedNode 13.1);
- group contexts: ``with group:``, ``thisGroup``, ``lastHitGroup`` (DG Group.begin/end,
  nuke.lastHitGroup 16.0); a node connects only to nodes of its own group (assumed);
- ``File_Knob.setValue`` assigns the string only; ``fromUserText("path first-last")``
  parses the range and reads the file's format (DG nuke.File_Knob);
- ``execute`` renders at the script's proxy scale, into the Write's ``proxy`` file when
  one is set, and every view unless ``views`` is given (DG nuke.execute; Write node
  reference: "executes all renders at the currently active scale");
- ``String_Knob.value()`` and what a ``Text_Knob`` or a label shows are TCL-evaluated:
  ``[...]`` commands, ``$variables`` and backslash escapes; ``getText()`` is the raw text
  (DG String_Knob.value / getText; EvalString_Knob.evaluate);
- ``Knob.setEnabled`` / ``enabled``: a disabled knob is greyed out and the artist cannot
  use it (Python reference nuke.Knob; NDK "Knob flags": DISABLED); :meth:`FakeNuke.press`
  refuses a disabled button;
- saving writes every knob of every node, user knobs added with ``addKnob`` included,
  hidden (``INVISIBLE``) ones too: only ``DO_NOT_WRITE`` keeps a knob out of the script
  (NDK "Knob flags": DO_NOT_WRITE "disables writing knob data to the script file",
  INVISIBLE "disables panel and Viewer widgets"); the enabled state is saved with the
  knob's flags (assumed);
- ``addOnScriptLoad`` callbacks run "when any script is loaded, immediately after the
  onCreate for the root", not for new scripts; ``addOnScriptClose`` callbacks run "when
  the user exits NUKE or closes a script, and by the scriptClear() function", before the
  nodes go; both default to ``nodeClass='Root'`` and run with the root as
  ``thisNode()``; adding the same callable twice keeps one (DG Callbacks; Foundry's
  ``nuke_internal/callbacks.py`` _addCallback);
- ``nuke.ask(prompt)`` shows a Yes/No dialog and returns True for Yes (DG nuke.ask), on
  the main thread only; being a modal dialog it runs queued main-thread calls while it
  is open (Qt's QDialog::exec runs a local event loop; assumed for nuke.ask); without a
  GUI it fails (assumed: a terminal session has no dialog to show).

``execute`` on a Write "renders" by writing a small PNG per frame whose colour
encodes (upstream node, frame, view), so tests can tell which frame reached which prompt.
"""

from __future__ import annotations

import builtins
import json
import os
import queue
import re
import struct
import sys
import threading
import time
import types
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

STARTLINE = 0x1000
INVISIBLE = 0x400
NO_ANIMATION = 0x100

FULL_SIZE = 4  # pixels of a rendered frame at full resolution
PROXY_SIZE = 2  # ... and in proxy mode (the fake's proxy scale is 0.5)
#: knobChanged nesting deeper than this is a runaway (Nuke would hang or crash)
MAX_CALLBACK_DEPTH = 20


class Missing(NotImplementedError):
    """The plugin used something this fake does not implement."""


class OffMainThread(RuntimeError):
    """Nuke's API was used from the wrong thread."""


class TclError(ValueError):
    """A TCL expression in a knob did not evaluate."""


def _on_main(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise OffMainThread(
            f"{what} called from thread {threading.current_thread().name!r}: use nuke.executeInMainThread"
        )


class Strict:
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise Missing(f"fake nuke: {type(self).__name__}.{name} is not implemented")


def _strict_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def __getattr__(attr: str) -> Any:  # noqa: N807 - PEP 562 module hook
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise Missing(f"fake nuke: {name}.{attr} is not implemented")

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


def png_bytes(rgb: Tuple[int, int, int], size: int = FULL_SIZE) -> bytes:
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from a PNG header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def frame_colour(source: str, frame: int, view: str = "") -> Tuple[int, int, int]:
    """The colour the fake renders for ``source`` at ``frame`` (in ``view``; "" is the first view)."""
    return frame % 256, (frame // 256) % 256, zlib.crc32((source + ("@" + view if view else "")).encode()) % 256


# --------------------------------------------------------------------------- TCL

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_ESCAPES = {"n": "\n", "t": "\t"}


def tcl_evaluate(text: str, node: Optional[Node]) -> str:
    """What Nuke makes of ``text`` in an evaluated string knob: escapes, ``$vars``, ``[commands]``."""
    out: List[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        elif c == "[":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                if text[j] == "\\":
                    j += 2
                    continue
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise TclError(f"missing close-bracket in {text!r}")
            out.append(_tcl_command(tcl_evaluate(text[i + 1 : j - 1], node), node))
            i = j
        elif c == "$" and _VARIABLE.match(text, i):
            raise TclError(f'can\'t read "{_VARIABLE.match(text, i).group(1)}": no such variable')  # type: ignore[union-attr]
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tcl_command(command: str, node: Optional[Node]) -> str:
    words = command.split()
    if len(words) == 2 and words[0] == "value" and node is not None:
        owner_name, _, knob_name = words[1].rpartition(".")
        owner = node if not owner_name or owner_name == "this" else node._fake.api_toNode(owner_name)
        knob = owner.knob(knob_name) if owner is not None else None
        if knob is None:
            raise TclError(f"no such knob {words[1]}")
        return str(knob.value())
    raise TclError(f'invalid command name "{words[0] if words else ""}"')


# --------------------------------------------------------------------------- knobs


class Format(Strict):
    def __init__(self, width: int, height: int, name: str = "") -> None:
        self._w, self._h, self._name = width, height, name

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h

    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<Format {self._w}x{self._h} {self._name}>"


class Knob(Strict):
    kind = "Knob"

    def __init__(self, name: str, label: Optional[str] = None, value: Any = "") -> None:
        self._name = name
        self._label = name if label is None else label
        self._value = value
        self._flags: set = set()
        self._tooltip = ""
        self._enabled = True
        self.node: Optional[Node] = None

    def _touch(self, what: str) -> None:
        _on_main(f"Knob.{what}")
        if self.node is not None:
            self.node._check(what)

    def Class(self) -> str:  # noqa: N802 - Nuke's name
        return self.kind

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def value(self) -> Any:
        self._touch("value")
        return self._value

    def evaluate(self) -> str:
        self._touch("evaluate")
        return str(self._value)

    def _coerce(self, value: Any) -> Any:
        return value

    def setValue(self, value: Any) -> bool:  # noqa: N802
        self._touch("setValue")
        FakeNuke.current.record("Knob.setValue", self._name, value)
        self._value = self._coerce(value)
        self._changed()
        return True

    def _changed(self) -> None:
        # DG addKnobChanged: programmatic changes run knobChanged too (while the panel is open)
        if self.node is not None and self.node._panel_open:
            self.node._fake.knob_changed(self.node, self)

    def setFlag(self, flag: int) -> None:  # noqa: N802
        self._touch("setFlag")
        self._flags.add(flag)

    def clearFlag(self, flag: int) -> None:  # noqa: N802
        self._touch("clearFlag")
        self._flags.discard(flag)

    def getFlag(self, flag: int) -> bool:  # noqa: N802
        return flag in self._flags

    def setTooltip(self, text: str) -> None:  # noqa: N802
        self._touch("setTooltip")
        self._tooltip = text

    def setEnabled(self, enabled: bool) -> None:  # noqa: N802
        self._touch("setEnabled")
        FakeNuke.current.record("Knob.setEnabled", self._name, bool(enabled))
        self._enabled = bool(enabled)

    def enabled(self) -> bool:
        self._touch("enabled")
        return self._enabled


class Int_Knob(Knob):  # noqa: N801
    kind = "Int_Knob"

    def __init__(self, name: str, label: Optional[str] = None) -> None:
        super().__init__(name, label, 0)

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Int_Knob {self._name}: expected a number, got {value!r}")
        return int(value)


class Boolean_Knob(Knob):  # noqa: N801
    kind = "Boolean_Knob"

    def __init__(self, name: str, label: Optional[str] = None) -> None:
        super().__init__(name, label, False)

    def _coerce(self, value: Any) -> Any:
        return bool(value)


class String_Knob(Knob):  # noqa: N801
    """``value()`` is TCL-evaluated, ``getText()`` is what was typed (DG String_Knob)."""

    kind = "String_Knob"

    def __init__(self, name: str, label: Optional[str] = None, text: str = "") -> None:
        super().__init__(name, label, text)

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"{self.kind} {self._name}: expected text, got {value!r}")
        return value

    def value(self) -> str:
        self._touch("value")
        return tcl_evaluate(self._value, self.node)

    def getText(self) -> str:  # noqa: N802
        self._touch("getText")
        return self._value

    def evaluate(self) -> str:
        self._touch("evaluate")
        return tcl_evaluate(self._value, self.node)


class File_Knob(String_Knob):  # noqa: N801
    """``value()`` is the string as set; ``evaluate()`` substitutes; ``fromUserText`` reads the file."""

    kind = "File_Knob"

    def value(self) -> str:
        self._touch("value")
        return self._value

    def fromUserText(self, text: str) -> None:  # noqa: N802
        self._touch("fromUserText")
        FakeNuke.current.record("File_Knob.fromUserText", self._name, text)
        match = re.match(r"^(.*\S)\s+(-?\d+)-(-?\d+)$", text)
        path, first, last = (match.group(1), int(match.group(2)), int(match.group(3))) if match else (text, None, None)
        self._value = self._coerce(path)
        self._changed()
        node = self.node
        if node is None or node._class != "Read" or first is None or last is None:
            return
        for name, value in (("first", first), ("last", last), ("origfirst", first), ("origlast", last)):
            node[name].setValue(value)
        frame_file = path.replace("####", f"{first:04d}")
        try:
            with open(frame_file, "rb") as f:
                width, height = png_size(f.read(24))
        except (OSError, ValueError):
            return  # Nuke keeps the format it had when the file cannot be read
        node["format"].setValue(Format(width, height))


class Text_Knob(Knob):  # noqa: N801
    """A read-only line of the panel; what it shows is TCL-evaluated (see :meth:`FakeNuke.shown`)."""

    kind = "Text_Knob"

    def __init__(self, name: str, label: Optional[str] = None, text: str = "") -> None:
        super().__init__(name, label, text)

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"Text_Knob {self._name}: expected text, got {value!r}")
        return value


class Format_Knob(Knob):  # noqa: N801
    kind = "Format_Knob"

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, Format):
            raise TypeError(f"Format_Knob {self._name}: expected a Format, got {value!r}")
        return value


class Tab_Knob(Knob):  # noqa: N801
    kind = "Tab_Knob"

    def __init__(self, name: str, label: Optional[str] = None) -> None:
        super().__init__(name, label, None)


class PyScript_Knob(Knob):  # noqa: N801
    kind = "PyScript_Knob"

    def __init__(self, name: str, label: Optional[str] = None, command: str = "") -> None:
        super().__init__(name, label, command)

    def execute(self) -> None:
        self._touch("execute")
        FakeNuke.current.record("PyScript_Knob.execute", self._name)
        if self._value:
            FakeNuke.current.run_script(self._value, self.node, self)


class Enumeration_Knob(Knob):  # noqa: N801
    kind = "Enumeration_Knob"

    def __init__(self, name: str, label: Optional[str] = None, values: Optional[List[str]] = None) -> None:
        values = list(values or [])
        super().__init__(name, label, values[0] if values else "")
        self._values = values

    def values(self) -> List[str]:
        self._touch("values")
        return list(self._values)

    def setValues(self, values: List[str]) -> None:  # noqa: N802
        self._touch("setValues")
        FakeNuke.current.record("Enumeration_Knob.setValues", self._name, list(values))
        self._values = [str(v) for v in values]
        if self._value not in self._values:
            self._value = self._values[0] if self._values else ""

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return self._values[value]
        if value not in self._values:
            raise ValueError(f"Enumeration_Knob {self._name}: {value!r} is not one of {self._values}")
        return value


class Script_Knob(Knob):
    """The hidden ``knobChanged`` knob of a Group: Python run on every knob change (raw, not TCL)."""

    kind = "String_Knob"


_KNOB_CLASSES_DEFINED = (
    Int_Knob,
    Boolean_Knob,
    String_Knob,
    File_Knob,
    Text_Knob,
    Format_Knob,
    Tab_Knob,
    PyScript_Knob,
    Enumeration_Knob,
    Script_Knob,
)


# --------------------------------------------------------------------------- nodes


class Node(Strict):
    def __init__(self, fake: FakeNuke, cls: str, parent: Optional[Group], knobs: List[Knob]) -> None:
        self._fake = fake
        self._class = cls
        self._name = ""
        self._parent = parent
        self._alive = True
        self._knobs: Dict[str, Knob] = {}
        self._inputs: Dict[int, Node] = {}
        self._x = self._y = 0
        self._selected = False
        self._panel_open = False
        self._user_knobs: List[str] = []  # added with addKnob: saved as user knobs
        self.channels_list = ["rgba.red", "rgba.green", "rgba.blue"]
        for knob in [String_Knob("label"), *knobs]:
            self._attach(knob)

    def _attach(self, knob: Knob) -> None:
        knob.node = self
        self._knobs[knob.name()] = knob

    def _check(self, what: str) -> None:
        _on_main(f"Node.{what}")
        if not self._alive:
            raise ValueError("A PythonObject is not attached to a node")

    def __repr__(self) -> str:
        return f"<fake {self._class} {self._name}>"

    def Class(self) -> str:  # noqa: N802
        self._check("Class")
        return self._class

    def name(self) -> str:
        self._check("name")
        return self._name

    def fullName(self) -> str:  # noqa: N802
        self._check("fullName")
        parent = self._parent
        if parent is None or isinstance(parent, Root):
            return self._name
        return parent.fullName() + "." + self._name

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:  # noqa: N802, N803
        self._check("setName")
        self._fake.record("Node.setName", self._name, name)
        siblings = {n._name for n in (self._parent._children if self._parent else []) if n is not self}
        final = name
        if final in siblings:
            if not uncollide:
                raise ValueError(f"name {name} is already used")
            # like Nuke: Read1 -> Read2, Foo -> Foo1
            base = name.rstrip("0123456789")
            n = int(name[len(base) :]) + 1 if len(base) < len(name) else 1
            while f"{base}{n}" in siblings:
                n += 1
            final = f"{base}{n}"
        self._name = final

    def knob(self, name: str) -> Optional[Knob]:
        self._check("knob")
        return self._knobs.get(name)

    def knobs(self) -> Dict[str, Knob]:
        self._check("knobs")
        return dict(self._knobs)

    def __getitem__(self, name: str) -> Knob:
        self._check("__getitem__")
        if name not in self._knobs:
            raise NameError(f"knob {name} does not exist")
        return self._knobs[name]

    def addKnob(self, knob: Knob) -> None:  # noqa: N802
        self._check("addKnob")
        if knob.name() in self._knobs:
            raise ValueError(f"{self._name} already has a knob {knob.name()}")
        self._fake.record("Node.addKnob", self._name, knob.name(), knob.Class())
        self._attach(knob)
        self._user_knobs.append(knob.name())

    def maxInputs(self) -> int:  # noqa: N802
        return 1

    def input(self, i: int) -> Optional[Node]:
        self._check("input")
        node = self._inputs.get(i)
        return node if node is not None and node._alive else None

    def setInput(self, i: int, node: Optional[Node]) -> bool:  # noqa: N802
        self._check("setInput")
        if i >= self.maxInputs():
            return False
        if node is not None and node._parent is not self._parent:
            # a node graph is one group: an input can only come from the same group
            self._fake.record("Node.setInput refused", self._name, i, node._name)
            return False
        self._fake.record("Node.setInput", self._name, i, node._name if node else None)
        if node is None:
            self._inputs.pop(i, None)
        else:
            self._inputs[i] = node
        if self._panel_open:
            self._fake.knob_changed(self, Knob("inputChange"))
        return True

    def firstFrame(self) -> int:  # noqa: N802
        self._check("firstFrame")
        upstream = self.input(0)
        return upstream.firstFrame() if upstream is not None else int(self._fake.root_node["first_frame"].value())

    def lastFrame(self) -> int:  # noqa: N802
        self._check("lastFrame")
        upstream = self.input(0)
        return upstream.lastFrame() if upstream is not None else int(self._fake.root_node["last_frame"].value())

    def format(self) -> Format:
        self._check("format")
        own = self._knobs.get("format")
        if own is not None:
            return own._value
        upstream = self.input(0)
        return upstream.format() if upstream is not None else self._fake.root_node["format"].value()

    def channels(self) -> List[str]:
        self._check("channels")
        return list(self.channels_list)

    def xpos(self) -> int:
        self._check("xpos")
        return self._x

    def ypos(self) -> int:
        self._check("ypos")
        return self._y

    def setXYpos(self, x: int, y: int) -> None:  # noqa: N802
        self._check("setXYpos")
        self._x, self._y = int(x), int(y)

    def setSelected(self, selected: bool) -> None:  # noqa: N802
        self._check("setSelected")
        self._selected = bool(selected)

    def isSelected(self) -> bool:  # noqa: N802
        self._check("isSelected")
        return self._selected


class Read(Node):
    def __init__(self, fake: FakeNuke, parent: Optional[Group]) -> None:
        on_error = Enumeration_Knob("on_error", "missing frames", ["error", "black", "checkerboard", "nearest frame"])
        fmt = Format_Knob("format", "format", fake.root_node["format"].value())
        knobs = [
            File_Knob("file"),
            Int_Knob("first"),
            Int_Knob("last"),
            Int_Knob("origfirst"),
            Int_Knob("origlast"),
            fmt,
            on_error,
        ]
        super().__init__(fake, "Read", parent, knobs + [PyScript_Knob("reload", "Reload", "")])

    def maxInputs(self) -> int:  # noqa: N802
        return 0

    def firstFrame(self) -> int:  # noqa: N802
        return int(self["first"].value())

    def lastFrame(self) -> int:  # noqa: N802
        return int(self["last"].value())


class Write(Node):
    FILE_TYPES = ("png", "exr", "jpeg", "tiff")

    def __init__(self, fake: FakeNuke, parent: Optional[Group]) -> None:
        file_type = Enumeration_Knob("file_type", "file type", [""] + list(self.FILE_TYPES))
        datatype = Enumeration_Knob("datatype", "data type", ["8 bit", "16 bit"])
        channels = Enumeration_Knob("channels", "channels", ["rgb", "rgba", "alpha", "all"])
        files = [File_Knob("file"), File_Knob("proxy")]
        super().__init__(fake, "Write", parent, files + [file_type, datatype, channels])


class Group(Node):
    def __init__(self, fake: FakeNuke, parent: Optional[Group], cls: str = "Group") -> None:
        super().__init__(fake, cls, parent, [Script_Knob("knobChanged")])
        self._children: List[Node] = []

    def maxInputs(self) -> int:  # noqa: N802
        return sum(1 for n in self._children if n._class == "Input" and n._alive)

    def nodes(self) -> List[Node]:
        self._check("nodes")
        return [n for n in self._children if n._alive]

    def begin(self) -> Group:
        self._check("begin")
        self._fake.context.append(self)
        return self

    def end(self) -> None:
        self._check("end")
        if self._fake.context[-1] is not self:
            raise RuntimeError(f"end() of {self._name} does not match begin()")
        self._fake.context.pop()

    def __enter__(self) -> Group:
        return self.begin()

    def __exit__(self, *exc: Any) -> None:
        self.end()


class Root(Group):
    def __init__(self, fake: FakeNuke) -> None:
        super().__init__(fake, None, "Root")
        self._name = "root"
        knobs = (
            Int_Knob("first_frame"),
            Int_Knob("last_frame"),
            File_Knob("name"),
            Boolean_Knob("proxy"),
            Format_Knob("format", "full size format", Format(1920, 1080, "HD_1080")),
        )
        for knob in knobs:
            self._attach(knob)
        self._knobs["first_frame"]._value = 1
        self._knobs["last_frame"]._value = 100


class Nodes(Strict):
    """``nuke.nodes.<Class>(**knobs)``: only the classes the plugin creates."""

    def __init__(self, fake: FakeNuke) -> None:
        self._fake = fake

    def __getattr__(self, cls: str) -> Callable[..., Node]:
        if cls not in ("Group", "Input", "Output", "Write", "Read"):
            return Strict.__getattr__(self, cls)

        def create(**knobs: Any) -> Node:
            return self._fake.create(cls, **knobs)

        return create


# --------------------------------------------------------------------------- menus


class MenuItem(Strict):
    def __init__(self, name: str, command: Any, icon: str, shortcut: str) -> None:
        self._name, self.command, self._icon, self.shortcut = name, command, icon, shortcut

    def name(self) -> str:
        return self._name

    def icon(self) -> str:
        return self._icon

    def invoke(self) -> Any:
        _on_main("MenuItem.invoke")
        if callable(self.command):
            return self.command()
        exec(compile(self.command, f"<menu {self._name}>", "exec"), FakeNuke.current.script_globals)  # noqa: S102
        return None


def _check_icon(icon: Optional[str]) -> str:
    if icon and os.path.isabs(icon) and not os.path.isfile(icon):
        raise FileNotFoundError(f"icon {icon} does not exist")
    return icon or ""


class Menu(Strict):
    def __init__(self, name: str, icon: str = "") -> None:
        self._name = name
        self._icon = icon
        self._items: List[Any] = []

    def name(self) -> str:
        return self._name

    def icon(self) -> str:
        return self._icon

    def items(self) -> List[Any]:
        return list(self._items)

    def _find(self, name: str) -> Optional[Any]:
        return next((i for i in self._items if i.name() == name), None)

    def findItem(self, path: str) -> Optional[Any]:  # noqa: N802
        head, _, rest = path.partition("/")
        item = self._find(head)
        if rest:
            return item.findItem(rest) if isinstance(item, Menu) else None
        return item

    def addMenu(self, name: str, icon: Optional[str] = None, tooltip: str = "", index: int = -1) -> Menu:  # noqa: N802
        _on_main("Menu.addMenu")
        FakeNuke.current.record("Menu.addMenu", self._name, name, icon)
        existing = self._find(name)
        if isinstance(existing, Menu):
            return existing
        menu = Menu(name, _check_icon(icon))
        self._items.append(menu)
        return menu

    def addCommand(  # noqa: N802
        self,
        name: str,
        command: Any = None,
        shortcut: str = "",
        icon: Optional[str] = None,
        tooltip: str = "",
        index: int = -1,
        readonly: bool = False,
        shortcutContext: int = 0,  # noqa: N803
        tag: int = 0,
    ) -> MenuItem:
        _on_main("Menu.addCommand")
        FakeNuke.current.record("Menu.addCommand", self._name, name, icon)
        head, _, rest = name.partition("/")
        if rest:
            return self.addMenu(head).addCommand(rest, command, shortcut, icon)
        item = MenuItem(name, command, _check_icon(icon), shortcut)
        existing = self._find(name)
        if existing is not None:
            self._items[self._items.index(existing)] = item  # Nuke replaces a command of the same name
        else:
            self._items.append(item)
        return item


# --------------------------------------------------------------------------- progress


class TaskRecord:
    """What one ProgressTask showed; ``cancel()`` is the artist pressing its cancel button."""

    def __init__(self, title: str, thread: str) -> None:
        self.title = title
        self.thread = thread
        self.progress: List[int] = []
        self.messages: List[str] = []
        self.cancelled = False
        self.closed = False

    def cancel(self) -> None:
        self.cancelled = True


class ProgressTask(Strict):
    def __init__(self, title: str) -> None:
        if threading.current_thread() is threading.main_thread():
            raise OffMainThread("ProgressTask created on the main thread: Nuke would freeze until it ends")
        self._record = TaskRecord(title, threading.current_thread().name)
        FakeNuke.current.tasks.append(self._record)
        FakeNuke.current.record("ProgressTask", title)

    def _off_main(self, what: str) -> None:
        if threading.current_thread() is threading.main_thread():
            raise OffMainThread(f"ProgressTask.{what} on the main thread")

    def setProgress(self, value: int) -> None:  # noqa: N802
        self._off_main("setProgress")
        if not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"setProgress wants an int 0-100, got {value!r}")
        self._record.progress.append(value)

    def setMessage(self, text: str) -> None:  # noqa: N802
        self._off_main("setMessage")
        self._record.messages.append(str(text))

    def isCancelled(self) -> bool:  # noqa: N802
        return self._record.cancelled

    def __del__(self) -> None:
        self._record.closed = True


# --------------------------------------------------------------------------- panes and panels


class FakePane(Strict):
    """A pane of Nuke's layout (a ``Dock``): its built-in panels by name, and the Python panels added.

    When a panel's widget is a real QWidget, the pane holds it in a QStackedWidget
    (:attr:`stack`), one tab per panel, the newest in front.
    """

    def __init__(self, names: List[str]) -> None:
        self.names = list(names)
        self.panels: List[FakePanel] = []
        self.stack: Any = None

    def __repr__(self) -> str:
        return f"<fake pane {self.names[0] if self.names else '?'}>"

    def add(self, panel: FakePanel) -> None:
        _on_main("Dock.add")
        FakeNuke.current.record("Dock.add", self.names[0] if self.names else "", panel.id)
        if panel.pane is not None:
            panel.pane.panels.remove(panel)
        panel.pane = self
        self.panels.append(panel)
        widget = panel.widget
        if widget is not None and hasattr(widget, "parentWidget"):
            from nuke_comfy_cluster.ui.qt import QtWidgets

            if self.stack is None:
                self.stack = QtWidgets.QStackedWidget()
            self.stack.addWidget(widget)
            self.stack.setCurrentWidget(widget)


class FakePanel(Strict):
    """What ``registerWidgetAsPanel`` builds: a PythonPanel wrapping the widget class, resolved like Nuke does."""

    def __init__(self, widget: str, name: str, panel_id: str) -> None:
        self.widget_expression = widget
        self.title = name
        self.id = panel_id
        self.widget: Any = None
        self.pane: Optional[FakePane] = None
        self.floating = False

    def widget_class(self) -> Any:
        # Nuke evaluates "<widget>" inside a PyCustom_Knob script, in __main__'s namespace
        return eval(self.widget_expression, dict(vars(sys.modules["__main__"])))  # noqa: S307

    def create(self) -> None:
        # panels.py: create() builds the widget once (WidgetKnob.makeUI); later calls keep it
        if self.widget is None:
            self.widget = self.widget_class()()
            FakeNuke.current.widgets_built.append(self.widget)

    def addToPane(self, pane: Optional[FakePane] = None) -> FakePanel:  # noqa: N802
        _on_main("PythonPanel.addToPane")
        self.create()
        # panels.py: the given pane, else nuke.thisPane(), else nowhere (built but never shown)
        target = pane if pane is not None else FakeNuke.current.api_thisPane()
        if target is not None:
            target.add(self)
        return self

    def show(self) -> None:
        _on_main("PythonPanel.show")
        self.create()
        self.floating = True


# --------------------------------------------------------------------------- saving


_KNOB_CLASSES: Dict[str, type] = {cls.__name__: cls for cls in _KNOB_CLASSES_DEFINED}


def _dump_value(value: Any) -> Any:
    if isinstance(value, Format):
        return {"format": [value.width(), value.height(), value.name()]}
    return value


def _load_value(value: Any) -> Any:
    if isinstance(value, dict) and "format" in value:
        return Format(*value["format"])
    return value


def _dump_knobs(node: Node) -> Dict[str, Any]:
    return {
        name: {"value": _dump_value(k._value), "flags": sorted(k._flags), "enabled": k._enabled}
        for name, k in node._knobs.items()
    }


def _load_knobs(node: Node, knobs: Dict[str, Any]) -> None:
    for name, saved in knobs.items():
        knob = node._knobs[name]
        knob._value = _load_value(saved["value"])
        knob._flags = set(saved["flags"])
        knob._enabled = saved["enabled"]


def _dump_node(node: Node) -> Dict[str, Any]:
    user = []
    for name in node._user_knobs:
        knob = node._knobs[name]
        entry: Dict[str, Any] = {"type": type(knob).__name__, "name": name, "label": knob._label}
        if isinstance(knob, Enumeration_Knob):
            entry["values"] = list(knob._values)
        user.append(entry)
    entry = {
        "class": node._class,
        "name": node._name,
        "xy": [node._x, node._y],
        "inputs": {str(i): n._name for i, n in node._inputs.items() if n._alive},
        "user": user,
        "knobs": _dump_knobs(node),
    }
    if isinstance(node, Group):
        entry["children"] = [_dump_node(n) for n in node._children if n._alive]
    return entry


# --------------------------------------------------------------------------- the fake


class FakeNuke:
    """One fake Nuke session: modules, node graph, menus, panes, main-thread queue, records."""

    current: FakeNuke

    def __init__(self, gui: bool = True) -> None:
        FakeNuke.current = self
        self.calls: List[Tuple[str, tuple, str]] = []
        self.tasks: List[TaskRecord] = []
        self.messages: List[str] = []
        self.main_queue: queue.Queue[Tuple[Callable[..., Any], tuple, dict, str]] = queue.Queue()
        self.marshalled: List[Tuple[str, str]] = []  # (function, calling thread)
        self.menus: Dict[str, Menu] = {}
        self.panels: Dict[str, Callable[[], Any]] = {}
        self.registered_widgets: List[Tuple[str, str, str]] = []
        self.widgets_built: List[Any] = []
        self.plugin_paths: List[str] = []
        self.current_frame = 1
        self.views = ["main"]
        self.root_node = Root(self)
        self.context: List[Group] = [self.root_node]
        self.last_hit_group: Optional[Group] = None  # the Group whose node graph the artist clicked last
        self.panes = [FakePane(["Properties.1"]), FakePane(["DAG.1"]), FakePane(["Viewer.1"])]
        self._this_pane: Optional[FakePane] = None
        self._this: List[Tuple[Optional[Node], Optional[Knob]]] = []
        self._update_ui: List[Tuple[Callable[..., Any], tuple, dict, str]] = []
        self._running_init = 0
        self._script_callbacks: Dict[str, List[Tuple[Callable[..., Any], tuple, dict]]] = {"load": [], "close": []}
        #: what the artist will answer to the next ``nuke.ask`` dialogs, in order
        self.answers: List[bool] = []
        self.asked: List[str] = []  # every question shown
        # knob scripts and menu strings all run here, like Nuke's __main__ (no names handed in:
        # the plugin's scripts must import what they use)
        self.script_globals: Dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.nuke = self._build_nuke(gui)
        self.nukescripts, self.panels_module = self._build_nukescripts()

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args, threading.current_thread().name))

    def called(self, name: str) -> List[tuple]:
        return [args for call, args, _ in self.calls if call == name]

    # -- modules ---------------------------------------------------------------------------
    def _build_nuke(self, gui: bool) -> types.ModuleType:
        m = _strict_module("nuke")
        m.GUI = gui
        m.STARTLINE, m.INVISIBLE, m.NO_ANIMATION = STARTLINE, INVISIBLE, NO_ANIMATION
        for cls in (
            Int_Knob,
            Boolean_Knob,
            String_Knob,
            File_Knob,
            Text_Knob,
            Tab_Knob,
            PyScript_Knob,
            Enumeration_Knob,
        ):
            setattr(m, cls.__name__, self._knob_factory(cls))
        m.ProgressTask = ProgressTask
        m.nodes = Nodes(self)
        for name in (
            "root",
            "toNode",
            "allNodes",
            "selectedNodes",
            "selectedNode",
            "thisGroup",
            "lastHitGroup",
            "delete",
            "frame",
            "views",
            "execute",
            "executeInMainThread",
            "message",
            "thisNode",
            "thisKnob",
            "addUpdateUI",
            "menu",
            "toolbar",
            "getPaneFor",
            "thisPane",
            "pluginAddPath",
            "pluginPath",
            "addOnScriptLoad",
            "addOnScriptClose",
            "removeOnScriptLoad",
            "removeOnScriptClose",
            "ask",
        ):
            setattr(m, name, getattr(self, "api_" + name))
        return m

    def _knob_factory(self, cls: type) -> Callable[..., Knob]:
        def make(*args: Any, **kw: Any) -> Knob:
            _on_main(cls.__name__)
            return cls(*args, **kw)

        make.__name__ = cls.__name__
        return make

    def _build_nukescripts(self) -> Tuple[types.ModuleType, types.ModuleType]:
        ns = _strict_module("nukescripts")
        panels = _strict_module("nukescripts.panels")
        panels.registerWidgetAsPanel = self.api_registerWidgetAsPanel
        panels.restorePanel = self.api_restorePanel
        ns.panels = panels
        return ns, panels

    def install(self, monkeypatch: Any) -> None:
        monkeypatch.setitem(sys.modules, "nuke", self.nuke)
        monkeypatch.setitem(sys.modules, "nukescripts", self.nukescripts)
        monkeypatch.setitem(sys.modules, "nukescripts.panels", self.panels_module)

    # -- graph -----------------------------------------------------------------------------
    def create(self, cls: str, **knobs: Any) -> Node:
        _on_main("nuke.nodes." + cls)
        parent = self.context[-1]
        self.record("nuke.nodes." + cls, parent._name, tuple(sorted(knobs)))
        node: Node
        if cls == "Group":
            node = Group(self, parent)
        elif cls == "Read":
            node = Read(self, parent)
        elif cls == "Write":
            node = Write(self, parent)
        else:
            node = Node(self, cls, parent, [])
        name = knobs.pop("name", None)
        parent._children.append(node)
        node.setName(name or cls + "1")
        for key, value in knobs.items():
            node[key].setValue(value)
        return node

    def _walk(self, path: str) -> Optional[Node]:
        node: Optional[Node] = self.context[-1]
        for part in path.split("."):
            if not isinstance(node, Group):
                return None
            node = next((n for n in node._children if n._alive and n._name == part), None)
        return node

    def api_root(self) -> Root:
        _on_main("nuke.root")
        return self.root_node

    def api_toNode(self, name: str) -> Optional[Node]:  # noqa: N802
        # relative to the current context unless it starts with "root." (DG nuke.toNode)
        _on_main("nuke.toNode")
        if name == "root":
            return self.root_node
        if name.startswith("root."):
            return self._walk_from_root(name[5:])
        return self._walk(name)

    def _walk_from_root(self, path: str) -> Optional[Node]:
        self.context.append(self.root_node)
        try:
            return self._walk(path)
        finally:
            self.context.pop()

    def api_allNodes(  # noqa: N802
        self,
        filter: Optional[str] = None,
        group: Optional[Group] = None,
        recurseGroups: bool = False,  # noqa: A002, N803
    ) -> List[Node]:
        _on_main("nuke.allNodes")
        found: List[Node] = []

        def walk(parent: Group) -> None:
            for n in parent._children:
                if not n._alive:
                    continue
                if filter is None or n._class == filter:
                    found.append(n)
                if recurseGroups and isinstance(n, Group):
                    walk(n)

        walk(group or self.context[-1])
        return found

    def api_selectedNodes(self, filter: Optional[str] = None) -> List[Node]:  # noqa: A002, N802
        # "in 'useful' order where inputs are done before the final node" (DG nuke.selectedNodes)
        _on_main("nuke.selectedNodes")
        selected = [n for n in self.context[-1]._children if n._alive and n._selected]
        ordered: List[Node] = []

        def visit(node: Node) -> None:
            if node in ordered:
                return
            for upstream in node._inputs.values():
                if upstream in selected:
                    visit(upstream)
            ordered.append(node)

        for node in selected:
            visit(node)
        return [n for n in ordered if filter is None or n._class == filter]

    def api_selectedNode(self) -> Node:  # noqa: N802
        # the selected node no other selected node uses as input (DG nuke.selectedNode)
        _on_main("nuke.selectedNode")
        selected = self.api_selectedNodes()
        outputs = [n for n in selected if not any(n in other._inputs.values() for other in selected)]
        if not outputs:
            raise ValueError("No node selected")
        return outputs[-1]

    def api_thisGroup(self) -> Group:  # noqa: N802
        return self.context[-1]

    def api_lastHitGroup(self) -> Group:  # noqa: N802
        return self.last_hit_group if self.last_hit_group is not None else self.context[-1]

    def api_delete(self, node: Node) -> None:
        _on_main("nuke.delete")
        self.record("nuke.delete", node._name)
        node._check("delete")
        node._alive = False

    def api_frame(self) -> int:
        _on_main("nuke.frame")
        return self.current_frame

    def api_views(self) -> List[str]:
        return list(self.views)

    # -- rendering -------------------------------------------------------------------------
    def api_execute(
        self,
        node: Node,
        first: int,
        last: int,
        incr: int = 1,
        views: Optional[List[str]] = None,
        continueOnError: bool = False,  # noqa: N803
    ) -> None:
        _on_main("nuke.execute")
        self.record("nuke.execute", node.name(), first, last, incr)
        if node.Class() != "Write":
            raise Missing("fake nuke: execute only renders Write nodes")
        upstream = node.input(0)
        if upstream is None:
            raise RuntimeError(f"{node.name()}: no input connected")
        if node["file_type"].value() != "png":
            raise Missing("fake nuke: only renders png")
        unknown = [v for v in views or () if v not in self.views]
        if unknown:
            raise ValueError(f"no view {unknown[0]!r} in this script (views: {self.views})")
        proxy = bool(self.root_node["proxy"].value())
        pattern = node["proxy"].value() if proxy and node["proxy"].value() else node["file"].value()
        self.record("nuke.execute views", tuple(views) if views is not None else None, proxy)
        for view in views if views is not None else self.views:
            for frame in range(first, last + 1, incr):
                path = pattern.replace("####", f"{frame:04d}").replace("%V", view).replace("%v", view[:1])
                if not os.path.isdir(os.path.dirname(path)):
                    raise RuntimeError(f"{node.name()}: Can't write {path}: No such file or directory")
                colour = frame_colour(upstream.name(), frame, "" if view == self.views[0] else view)
                with open(path, "wb") as f:
                    f.write(png_bytes(colour, PROXY_SIZE if proxy else FULL_SIZE))

    # -- threads ---------------------------------------------------------------------------
    def api_executeInMainThread(
        self, call: Callable[..., Any], args: tuple = (), kwargs: Optional[dict] = None
    ) -> None:  # noqa: N802
        if not isinstance(args, tuple):
            raise TypeError("executeInMainThread args must be a tuple")
        thread = threading.current_thread().name
        self.marshalled.append((getattr(call, "__name__", repr(call)), thread))
        self.main_queue.put((call, args, dict(kwargs or {}), thread))

    def pump(self, until: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        """Be Nuke's main thread: run queued calls until ``until()`` holds (bounded)."""
        _on_main("pump")
        deadline = time.monotonic() + timeout
        while True:
            while True:
                try:
                    call, args, kwargs, _ = self.main_queue.get_nowait()
                except queue.Empty:
                    break
                call(*args, **kwargs)
            if until():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake nuke: {what} not reached in {timeout} s")
            try:
                call, args, kwargs, _ = self.main_queue.get(timeout=0.02)
            except queue.Empty:
                continue
            call(*args, **kwargs)

    def api_message(self, text: str) -> None:
        _on_main("nuke.message")
        self.record("nuke.message", text)
        self.messages.append(text)

    # -- callbacks -------------------------------------------------------------------------
    def api_thisNode(self) -> Node:  # noqa: N802
        if not self._this or self._this[-1][0] is None:
            raise RuntimeError("nuke.thisNode() outside a node callback")
        return self._this[-1][0]  # type: ignore[return-value]

    def api_thisKnob(self) -> Knob:  # noqa: N802
        if not self._this or self._this[-1][1] is None:
            raise RuntimeError("nuke.thisKnob() outside a knob callback")
        return self._this[-1][1]  # type: ignore[return-value]

    def api_addUpdateUI(  # noqa: N802
        self,
        call: Callable[..., Any],
        args: tuple = (),
        kwargs: Optional[dict] = None,
        nodeClass: str = "*",  # noqa: N803
    ) -> None:
        self._update_ui.append((call, tuple(args), dict(kwargs or {}), nodeClass))

    def idle(self) -> None:
        """Nuke's idle time: every addUpdateUI callback on every node of its class, panels open or not."""
        _on_main("idle")
        for call, args, kwargs, cls in self._update_ui:
            for node in self.api_allNodes(group=self.root_node, recurseGroups=True):
                if cls in ("*", node._class):
                    self._this.append((node, None))
                    try:
                        call(*args, **kwargs)
                    finally:
                        self._this.pop()

    def run_script(self, script: str, node: Optional[Node], knob: Optional[Knob]) -> None:
        """Run a knob script in the shared script namespace.

        The context is the node's own Group for a Group's knobs, else the node's
        parent: an assumption (not documented by Foundry) chosen because it is the
        stricter one: code that relies on running in root breaks here.
        """
        if len(self._this) >= MAX_CALLBACK_DEPTH:
            raise RecursionError(f"fake nuke: knob callbacks nested {MAX_CALLBACK_DEPTH} deep (a runaway knobChanged)")
        context = node if isinstance(node, Group) else (node._parent if node is not None else None)
        self._this.append((node, knob))
        if context is not None:
            self.context.append(context)
        try:
            exec(compile(script, "<knob script>", "exec"), self.script_globals)  # noqa: S102
        finally:
            if context is not None:
                self.context.pop()
            self._this.pop()

    def press(self, node: Node, knob_name: str) -> None:
        """The artist clicks a button knob (a greyed-out one cannot be clicked)."""
        knob = node[knob_name]
        if not isinstance(knob, PyScript_Knob):
            raise TypeError(f"{knob_name} is not a button")
        if not knob._enabled:
            raise RuntimeError(f"{knob_name} is disabled: the artist cannot click it")
        knob.execute()

    def knob_changed(self, node: Node, knob: Knob) -> None:
        script = node.knob("knobChanged")
        if script is not None and script._value:
            self.run_script(script._value, node, knob)

    def open_properties(self, node: Node) -> None:
        """The artist opens the node's properties panel (knobChanged gets a ``showPanel`` knob)."""
        node._panel_open = True
        self.knob_changed(node, Knob("showPanel"))

    def close_properties(self, node: Node) -> None:
        self.knob_changed(node, Knob("hidePanel"))
        node._panel_open = False

    def user_set(self, node: Node, knob_name: str, value: Any) -> None:
        """The artist edits a knob, in the properties panel (opened for it if need be)."""
        if not node._panel_open:
            self.open_properties(node)
        node[knob_name].setValue(value)

    def user_connect(self, node: Node, index: int, upstream: Optional[Node]) -> None:
        """The artist drags a pipe (knobChanged hears of it only while the panel is open)."""
        node.setInput(index, upstream)

    def shown(self, knob: Knob) -> str:
        """What the panel (or the DAG, for a label) shows for a text knob: its TCL-evaluated text."""
        return tcl_evaluate(knob._value, knob.node)

    # -- scripts: callbacks, questions, save / load / close ------------------------------------
    def _add_script_callback(self, kind: str, call: Any, args: Any, kwargs: Any, nodeClass: str) -> None:  # noqa: N803
        # callbacks.py _addCallback: a callable, args made a tuple, kwargs a dict; the same entry once
        if not callable(call):
            raise ValueError("call must be a callable")
        if nodeClass != "Root":
            raise Missing(f"fake nuke: script callbacks for nodeClass {nodeClass!r}")
        args = args if isinstance(args, tuple) else (args,)
        if not isinstance(kwargs, dict):
            raise ValueError("kwargs must be a dictionary")
        entries = self._script_callbacks[kind]
        entry = (call, args, kwargs)
        if entry in entries:
            entries.remove(entry)
        entries.append(entry)

    def api_addOnScriptLoad(self, call: Any, args: Any = (), kwargs: Any = None, nodeClass: str = "Root") -> None:  # noqa: N802, N803
        self._add_script_callback("load", call, args, {} if kwargs is None else kwargs, nodeClass)

    def api_addOnScriptClose(self, call: Any, args: Any = (), kwargs: Any = None, nodeClass: str = "Root") -> None:  # noqa: N802, N803
        self._add_script_callback("close", call, args, {} if kwargs is None else kwargs, nodeClass)

    def _remove_script_callback(self, kind: str, call: Any, args: Any, kwargs: Any) -> None:
        entry = (call, args if isinstance(args, tuple) else (args,), kwargs)
        if entry in self._script_callbacks[kind]:
            self._script_callbacks[kind].remove(entry)

    def api_removeOnScriptLoad(self, call: Any, args: Any = (), kwargs: Any = None, nodeClass: str = "Root") -> None:  # noqa: N802, N803
        self._remove_script_callback("load", call, args, {} if kwargs is None else kwargs)

    def api_removeOnScriptClose(self, call: Any, args: Any = (), kwargs: Any = None, nodeClass: str = "Root") -> None:  # noqa: N802, N803
        self._remove_script_callback("close", call, args, {} if kwargs is None else kwargs)

    def script_callbacks(self, kind: str) -> List[Callable[..., Any]]:
        return [call for call, _, _ in self._script_callbacks[kind]]

    def _run_script_callbacks(self, kind: str) -> None:
        _on_main("script callbacks")
        self._this.append((self.root_node, None))
        try:
            for call, args, kwargs in list(self._script_callbacks[kind]):
                call(*args, **kwargs)
        finally:
            self._this.pop()

    def api_ask(self, prompt: str) -> bool:
        _on_main("nuke.ask")
        if not self.nuke.GUI:
            raise RuntimeError("fake nuke: nuke.ask in a session without GUI (nobody could answer)")
        self.record("nuke.ask", prompt)
        self.asked.append(prompt)
        if not self.answers:
            raise AssertionError(f"fake nuke: the test did not say what the artist answers to: {prompt!r}")
        answer = self.answers.pop(0)
        # a modal dialog runs a local event loop: calls queued for the main thread run meanwhile
        self._drain_main_queue()
        return bool(answer)

    def _drain_main_queue(self) -> None:
        while True:
            try:
                call, args, kwargs, _ = self.main_queue.get_nowait()
            except queue.Empty:
                return
            call(*args, **kwargs)

    def save_script(self, path: str) -> str:
        """File > Save As: every node with every knob (user knobs and hidden ones too) into ``path``."""
        _on_main("nuke.scriptSaveAs")
        self.root_node._knobs["name"]._value = path
        data = {"root": _dump_knobs(self.root_node), "nodes": [_dump_node(n) for n in self.root_node.nodes()]}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        self.record("save_script", path)
        return path

    def close_script(self) -> None:
        """File > Close (and scriptClear): onScriptClose callbacks, then every node goes."""
        _on_main("nuke.scriptClose")
        self.record("close_script")
        self._run_script_callbacks("close")

        def kill(group: Group) -> None:
            for n in group._children:
                n._alive = False
                if isinstance(n, Group):
                    kill(n)

        kill(self.root_node)
        self.root_node = Root(self)
        self.context = [self.root_node]
        self.last_hit_group = None

    def quit(self) -> None:
        """The artist quits Nuke: the script is closed (onScriptClose runs); the process then ends."""
        self.record("quit")
        self.close_script()

    def load_script(self, path: str) -> None:
        """File > Open into this session: the current script is closed, the nodes are made, then onScriptLoad."""
        _on_main("nuke.scriptOpen")
        self.close_script()
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        _load_knobs(self.root_node, data["root"])
        self.root_node._knobs["name"]._value = path
        for entry in data["nodes"]:
            self._load_node(entry, self.root_node)
        self._connect(data["nodes"], self.root_node)
        self.record("load_script", path)
        self._run_script_callbacks("load")

    def _load_node(self, entry: Dict[str, Any], parent: Group) -> Node:
        self.context.append(parent)
        try:
            node = self.create(entry["class"], name=entry["name"])
        finally:
            self.context.pop()
        node._x, node._y = entry["xy"]
        for user in entry["user"]:
            knob = _KNOB_CLASSES[user["type"]](user["name"], user["label"])
            node._attach(knob)
            node._user_knobs.append(user["name"])
            if "values" in user:
                knob._values = list(user["values"])
        _load_knobs(node, entry["knobs"])
        for child in entry.get("children", ()):
            self._load_node(child, node)  # type: ignore[arg-type]
        if entry.get("children"):
            self._connect(entry["children"], node)  # type: ignore[arg-type]
        return node

    def _connect(self, entries: List[Dict[str, Any]], parent: Group) -> None:
        by_name = {n._name: n for n in parent._children if n._alive}
        for entry in entries:
            node = by_name[entry["name"]]
            for index, upstream in entry["inputs"].items():
                node._inputs[int(index)] = by_name[upstream]

    # -- menus and panels ------------------------------------------------------------------
    def api_menu(self, name: str) -> Menu:
        _on_main("nuke.menu")
        if name not in ("Nuke", "Pane", "Nodes", "Node Graph", "Properties", "Viewer"):
            raise Missing(f"fake nuke: menu {name!r}")
        return self.menus.setdefault(name, Menu(name))

    def api_toolbar(self, name: str) -> Menu:
        _on_main("nuke.toolbar")
        if name != "Nodes":
            raise Missing(f"fake nuke: toolbar {name!r}")
        return self.api_menu("Nodes")

    def api_getPaneFor(self, name: str) -> Optional[FakePane]:  # noqa: N802
        _on_main("nuke.getPaneFor")
        for pane in self.panes:
            if name in pane.names or any(p.id == name for p in pane.panels):
                return pane
        return None

    def api_thisPane(self) -> Optional[FakePane]:  # noqa: N802
        return self._this_pane

    def pane_menu(self, title: str, pane: str = "Properties.1") -> Any:
        """The artist picks ``title`` from the content menu of the pane holding ``pane``."""
        item = self.menus["Pane"].findItem(title)
        if item is None:
            raise KeyError(f"no Pane menu entry {title!r}")
        self._this_pane = self.api_getPaneFor(pane)
        try:
            return item.invoke()
        finally:
            self._this_pane = None

    def close_panel(self, panel_id: str) -> None:
        """The artist closes a docked panel's tab."""
        pane = self.api_getPaneFor(panel_id)
        if pane is None:
            raise KeyError(f"panel {panel_id} is not docked")
        for panel in [p for p in pane.panels if p.id == panel_id]:
            pane.panels.remove(panel)
            panel.pane = None
            if hasattr(panel.widget, "close"):
                panel.widget.close()

    def api_registerWidgetAsPanel(self, widget: str, name: str, panel_id: str, create: bool = False) -> Any:  # noqa: N802
        _on_main("registerWidgetAsPanel")
        self.record("registerWidgetAsPanel", widget, name, panel_id)
        if not isinstance(widget, str):
            raise TypeError("registerWidgetAsPanel wants the widget's dotted class path as a string")
        self.registered_widgets.append((widget, name, panel_id))

        def add_panel() -> FakePanel:
            return FakePanel(widget, name, panel_id).addToPane()

        # panels.py: a Pane menu entry and a restorable id, both running addPanel()
        self.api_menu("Pane").addCommand(name, add_panel)
        self.panels[panel_id] = add_panel
        return FakePanel(widget, name, panel_id) if create else None

    def api_restorePanel(self, panel_id: str) -> Any:  # noqa: N802
        _on_main("restorePanel")
        self.record("restorePanel", panel_id)
        try:
            return self.panels[panel_id]()
        except Exception:  # noqa: BLE001 - panels.py: a bare except, a print, and None
            print("Can't restore panel '", panel_id, "' because it hasn't been registered.")
            return None

    # -- start-up --------------------------------------------------------------------------
    def api_pluginAddPath(self, path: str, addToSysPath: bool = True) -> None:  # noqa: N802, N803
        self.record("pluginAddPath", path)
        path = os.path.abspath(path)
        if path in self.plugin_paths:
            self.plugin_paths.remove(path)
        self.plugin_paths.insert(0, path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)
        init = os.path.join(path, "init.py")
        if self._running_init and os.path.isfile(init):
            self.run_file(init)  # Nuke runs a plugin folder's init.py when an init.py adds it

    def api_pluginPath(self) -> List[str]:  # noqa: N802
        return list(self.plugin_paths)

    def run_file(self, path: str) -> Dict[str, Any]:
        """Run an init.py / menu.py the way Nuke does (``nuke`` already imported)."""
        is_init = os.path.basename(path) == "init.py"
        self._running_init += is_init
        try:
            namespace = {"__name__": "__main__", "nuke": self.nuke}
            with open(path, encoding="utf-8") as f:
                exec(compile(f.read(), path, "exec"), namespace)  # noqa: S102
            return namespace
        finally:
            self._running_init -= is_init

    def start_session(self, nuke_dir: str) -> None:
        """Nuke's start-up: the user's init.py (and the plugins it adds), then every menu.py."""
        init = os.path.join(nuke_dir, "init.py")
        if os.path.isfile(init):
            self.run_file(init)
        if self.nuke.GUI:
            for path in list(reversed(self.plugin_paths)) + [nuke_dir]:
                menu = os.path.join(path, "menu.py")
                if os.path.isfile(menu):
                    self.run_file(menu)
