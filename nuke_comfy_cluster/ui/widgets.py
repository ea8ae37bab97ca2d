"""Small widgets for a panel that must fit a narrow dock: an eliding label and the config banner."""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from .qt import QtCore, QtGui, QtWidgets, Signal, emit

Qt = QtCore.Qt


#: a folder path in a message: the one line keeps the file's name (the details have it whole)
_FOLDERS = re.compile(r"(?<![\w:/.\\])(?:[A-Za-z]:|\\)?(?:[\\/][^\s\\/\"':]+)+[\\/](?=[^\s\\/]+)")


def _short_paths(text: str) -> str:
    return _FOLDERS.sub("", text)


class ElidedLabel(QtWidgets.QLabel):
    """One line that shrinks with its dock: the text is cut with "…" and shown whole as a
    tooltip. ``text()`` returns the whole text. A plain QLabel is as wide as its text,
    which would hold the whole panel at that width."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._full = ""
        self._tip = ""
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setWordWrap(False)

    def setText(self, text: str) -> None:  # noqa: N802
        if text == self._full:
            return
        self._full = text
        self._elide()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """What is drawn (cut to the width)."""
        return super().text()

    def set_tooltip(self, tip: str) -> None:
        """A tooltip of its own; without one the whole text is the tooltip when it is cut."""
        self._tip = tip
        self._elide()

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        return QtCore.QSize(self.fontMetrics().horizontalAdvance("…") * 4, hint.height())

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width())
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width) if width else self._full
        if shown != super().text():
            super().setText(shown)
        tip = self._tip or (self._full if shown != self._full else "")
        if tip != self.toolTip():
            self.setToolTip(tip)


class ConfigBanner(QtWidgets.QFrame):
    """Where the configuration came from, and what is wrong with it.

    One line (the first problem, or the source when there is none); a click shows every
    problem and the source below it, a second click folds them away again.
    """

    expanded_changed = Signal(bool)

    STYLES = {
        "info": "",
        "warning": "ConfigBanner { background: rgba(224, 161, 0, 45); border: 1px solid rgba(224, 161, 0, 160); border-radius: 3px; }",
        "error": "ConfigBanner { background: rgba(214, 69, 65, 55); border: 1px solid rgba(214, 69, 65, 190); border-radius: 3px; }",
    }

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.level = "info"
        self._state: Any = None
        self._expanded = False
        self.toggle = QtWidgets.QToolButton(self)
        self.toggle.setAutoRaise(True)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setToolTip("Show every configuration message")
        self.toggle.clicked.connect(self.toggle_details)
        self.label = ElidedLabel(self)
        self.details = QtWidgets.QLabel(self)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setVisible(False)
        line = QtWidgets.QHBoxLayout()
        line.setContentsMargins(0, 0, 0, 0)
        line.setSpacing(4)
        line.addWidget(self.toggle)
        line.addWidget(self.label, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 6, 2)
        layout.setSpacing(2)
        layout.addLayout(line)
        layout.addWidget(self.details)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    @property
    def expanded(self) -> bool:
        return self._expanded

    @property
    def has_details(self) -> bool:
        return bool(self.details.text())

    def set_state(self, notice: str, warnings: Sequence[str], errors: Sequence[str]) -> None:
        state = (notice, tuple(warnings), tuple(errors))
        if state == self._state:
            return  # a style sheet change re-polishes the banner: only when needed
        self._state = state
        level = "error" if errors else "warning" if warnings else "info"
        self.level = level
        self.setStyleSheet(self.STYLES[level])
        notice = notice or "No configuration loaded"
        problems = ["Error: " + e for e in errors] + ["Warning: " + w for w in warnings]
        if problems:
            first = _short_paths(" ".join(problems[0].split()))
            more = len(problems) - 1
            headline = first + (f"  (+{more} more)" if more else "")
            details = "\n".join(problems + [notice])
        else:
            headline, details = notice, ""
        self.label.setText(headline)
        self.label.set_tooltip("Click for details" if details else "")
        self.details.setText(details)
        self.toggle.setVisible(bool(details))
        if not details:
            self.set_expanded(False)
        self.setToolTip("\n".join(problems + [notice]))

    def set_expanded(self, expanded: bool) -> None:
        expanded = bool(expanded) and self.has_details
        if expanded == self._expanded:
            return
        self._expanded = expanded
        self.details.setVisible(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        emit(self.expanded_changed, expanded)

    def toggle_details(self) -> None:
        self.set_expanded(not self._expanded)

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.toggle_details()
        super().mouseReleaseEvent(event)

    def text(self) -> str:
        """Everything the banner holds, folded or not."""
        return "\n".join(t for t in (self.label.text(), self.details.text()) if t)
