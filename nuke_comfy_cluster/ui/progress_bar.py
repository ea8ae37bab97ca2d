"""The jobs view's progress bars: drawn in the state's colour, their text legible on both parts."""

from __future__ import annotations

from typing import Any, Dict, Optional

from .qt import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

#: what a bar reads: its fraction (None: no bar, the text only) and the job or batch state
ProgressRole = int(Qt.ItemDataRole.UserRole) + 11
StateRole = int(Qt.ItemDataRole.UserRole) + 13

STATE_COLOURS: Dict[str, str] = {
    "pending": "#a0a0a0",
    "submitted": "#5b9bd5",
    "running": "#e0a100",
    "done": "#3aa655",
    "failed": "#d64541",
    "cancelled": "#8c8c8c",
}


def _luminance(colour: QtGui.QColor) -> float:
    """WCAG relative luminance."""

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast(a: QtGui.QColor, b: QtGui.QColor) -> float:
    """WCAG contrast ratio of two colours (1 to 21; text wants 4.5 or more)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_on(background: QtGui.QColor) -> QtGui.QColor:
    """Black or white, whichever reads better on ``background``."""
    black, white = QtGui.QColor(0, 0, 0), QtGui.QColor(255, 255, 255)
    return black if contrast(black, background) >= contrast(white, background) else white


def bar_colours(palette: QtGui.QPalette, state: Optional[str]) -> Any:
    """(track, chunk) colours of a progress bar: the chunk in the state's colour."""
    base = palette.color(QtGui.QPalette.ColorRole.Base)
    track = base.darker(118) if base.lightness() > 128 else base.lighter(160)
    chunk = QtGui.QColor(STATE_COLOURS.get(state or "", STATE_COLOURS["submitted"]))
    return track, chunk


class ProgressDelegate(QtWidgets.QStyledItemDelegate):
    """Draws a progress column (the view sets it for that column) as a bar in the state's colour, its text legible on both
    parts: dark or light, whichever contrasts, on the filled part and on the rest.

    A style's own progress bar (CE_ProgressBar) draws one text colour over both parts, and
    in a row 15 pixels high it is unreadable where it crosses the filled part.
    """

    def paint(self, painter: QtGui.QPainter, option: Any, index: QtCore.QModelIndex) -> None:
        value = index.data(ProgressRole)
        if value is None:
            super().paint(painter, option, index)
            return
        fraction = max(0.0, min(1.0, float(value)))
        widget = option.widget
        style = widget.style() if widget is not None else QtWidgets.QApplication.style()
        # the row's background and selection, as the other cells have them
        style.drawPrimitive(QtWidgets.QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, widget)
        rect = QtCore.QRectF(option.rect.adjusted(2, 1, -2, -1))
        track, chunk = bar_colours(option.palette, index.data(StateRole))
        filled = QtCore.QRectF(rect.x(), rect.y(), rect.width() * fraction, rect.height())
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        painter.save()
        try:
            painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(track)
            painter.drawRoundedRect(rect, 2.0, 2.0)
            if filled.width() > 0:
                painter.setBrush(chunk)
                painter.drawRoundedRect(filled, 2.0, 2.0)
            painter.setFont(option.font)
            align = Qt.AlignmentFlag.AlignCenter
            painter.setPen(readable_on(track))
            painter.setClipRect(QtCore.QRectF(filled.right(), rect.y(), rect.width() - filled.width(), rect.height()))
            painter.drawText(rect, int(align), text)
            if filled.width() > 0:
                painter.setPen(readable_on(chunk))
                painter.setClipRect(filled)
                painter.drawText(rect, int(align), text)
        finally:
            painter.restore()
