"""The config editor's text pane: the servers' JSON, with problems marked at their line and column.

The text is the source of truth of the editor (the user's layout and ``"_comment"``
keys survive a save); the table pane only shows and edits its decoded entries.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ..core.config import ConfigIssue
from .qt import QtCore, QtGui, QtWidgets, Signal, emit

Qt = QtCore.Qt

#: the marks of problems, shared with the table pane and the issue list
ERROR_BG = QtGui.QColor(214, 69, 65, 70)
WARNING_BG = QtGui.QColor(224, 161, 0, 60)
ERROR_FG = "#d64541"
WARNING_FG = "#c98a00"
OK_FG = "#3aa655"


class ConfigTextPane(QtWidgets.QWidget):
    """A plain text editor for the JSON and the cursor's line and column below it.

    ``edited`` is emitted for the user's typing only, not for :meth:`set_text`.
    """

    edited = Signal()

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._syncing = False
        self.editor = QtWidgets.QPlainTextEdit(self)
        self.editor.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.editor.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setTabChangesFocus(False)
        self.editor.cursorPositionChanged.connect(self._cursor_moved)
        self.editor.textChanged.connect(self._text_changed)
        self.position = QtWidgets.QLabel(self)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.position)

    # -- text ------------------------------------------------------------------------------
    def text(self) -> str:
        return self.editor.toPlainText()

    def set_text(self, text: str, undoable: bool = True) -> None:
        """Replace the whole text; as one undoable edit (cursor kept) unless ``undoable`` is False."""
        self._syncing = True
        try:
            if undoable:
                cursor = QtGui.QTextCursor(self.editor.document())
                position = self.editor.textCursor().position()
                cursor.beginEditBlock()
                cursor.select(QtGui.QTextCursor.SelectionType.Document)
                cursor.insertText(text)
                cursor.endEditBlock()
                keep = self.editor.textCursor()
                keep.setPosition(min(position, len(text)))
                self.editor.setTextCursor(keep)
            else:
                self.editor.setPlainText(text)
        finally:
            self._syncing = False

    def _text_changed(self) -> None:
        if not self._syncing:
            emit(self.edited)

    # -- problems --------------------------------------------------------------------------
    def issue_position(self, issue: ConfigIssue) -> Tuple[Optional[int], Optional[int]]:
        """(line, column), 1-based: a field's own line when it can be found below its entry."""
        if issue.line is None:
            return None, None
        if issue.column is not None or not issue.field:
            return issue.line, issue.column
        needle = f'"{issue.field}"'
        block = self.editor.document().findBlockByNumber(issue.line - 1)
        depth = 0
        while block.isValid():
            text = block.text()
            col = text.find(needle)
            if col >= 0:
                return block.blockNumber() + 1, col + 1
            depth += text.count("{") - text.count("}")
            if depth <= 0 and block.blockNumber() >= issue.line:
                break  # past the end of this entry
            block = block.next()
        return issue.line, None

    def mark_issues(self, issues: Sequence[ConfigIssue]) -> None:
        """Tint each problem's line; underline its column when it is known."""
        selections = []
        doc = self.editor.document()
        for issue in issues:
            line, column = self.issue_position(issue)
            if line is None:
                continue
            block = doc.findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            colour = ERROR_BG if issue.level == "error" else WARNING_BG
            whole = QtWidgets.QTextEdit.ExtraSelection()
            whole.format.setBackground(colour)
            whole.format.setProperty(QtGui.QTextFormat.Property.FullWidthSelection, True)
            whole.format.setToolTip(issue.message)
            whole.cursor = QtGui.QTextCursor(block)
            selections.append(whole)
            if column is not None:
                spot = QtWidgets.QTextEdit.ExtraSelection()
                spot.format.setUnderlineStyle(QtGui.QTextCharFormat.UnderlineStyle.WaveUnderline)
                spot.format.setUnderlineColor(QtGui.QColor(ERROR_FG if issue.level == "error" else WARNING_FG))
                spot.format.setBackground(colour.darker(110))
                cursor = QtGui.QTextCursor(block)
                cursor.movePosition(
                    QtGui.QTextCursor.MoveOperation.Right,
                    QtGui.QTextCursor.MoveMode.MoveAnchor,
                    min(column - 1, max(0, block.length() - 1)),
                )
                cursor.movePosition(QtGui.QTextCursor.MoveOperation.Right, QtGui.QTextCursor.MoveMode.KeepAnchor, 1)
                spot.cursor = cursor
                selections.append(spot)
        self.editor.setExtraSelections(selections)

    def error_selections(self) -> List[Any]:
        return list(self.editor.extraSelections())

    # -- cursor ----------------------------------------------------------------------------
    def go_to(self, line: int, column: int = 1) -> None:
        block = self.editor.document().findBlockByNumber(max(0, line - 1))
        cursor = QtGui.QTextCursor(block)
        cursor.movePosition(
            QtGui.QTextCursor.MoveOperation.Right,
            QtGui.QTextCursor.MoveMode.MoveAnchor,
            max(0, min(column - 1, block.length() - 1)),
        )
        self.editor.setTextCursor(cursor)
        self.editor.setFocus()

    def _cursor_moved(self) -> None:
        cursor = self.editor.textCursor()
        self.position.setText(f"Line {cursor.blockNumber() + 1}, column {cursor.positionInBlock() + 1}")
