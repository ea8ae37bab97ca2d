"""What knob scripts and menu commands call: thin, and never raising into Nuke.

Artists see failures as the node's status line and a message box; the full
traceback goes to the log (Nuke's terminal / script editor output).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, List, Optional, Sequence

from ..core.errors import ClusterError, user_message
from . import node as node_knobs
from . import submit

log = logging.getLogger(__name__)

_dialogs: List[Any] = []  # keeps non-modal dialogs alive while they are open


def _message(text: str) -> None:
    import nuke

    nuke.message(text)


def _explain(exc: BaseException, what: str) -> str:
    if isinstance(exc, ClusterError):
        return user_message(exc)
    log.exception("ComfyUI Cluster: %s failed", what)
    return f"{what} failed: {type(exc).__name__}: {exc}"


def _this() -> Any:
    import nuke

    return nuke.thisNode()


# --------------------------------------------------------------------------- node buttons


def submit_this() -> Optional[submit.SubmitRun]:
    node = _this()
    try:
        return submit.submit_node(node)
    except Exception as e:  # noqa: BLE001 - shown to the artist instead
        text = _explain(e, "Submit")
        try:
            node_knobs.set_status(node, "Not submitted: " + text)
        except Exception:  # noqa: BLE001 - the message box below still explains
            log.exception("ComfyUI Cluster: cannot update the node's status")
        _message(f"{node.name()}: {text}")
        return None


def resume_this() -> Optional[Any]:
    node = _this()
    try:
        from . import resume

        return resume.resume_node(node)
    except Exception as e:  # noqa: BLE001 - shown to the artist instead
        text = _explain(e, "Resume")
        try:
            node_knobs.set_status(node, "Not resumed: " + text)
        except Exception:  # noqa: BLE001 - the message box below still explains
            log.exception("ComfyUI Cluster: cannot update the node's status")
        _message(f"{node.name()}: {text}")
        return None


def cancel_this() -> None:
    node = _this()
    try:
        if not submit.cancel_node(node):
            node_knobs.set_status(node, "Nothing to cancel: this node is not running")
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Cancel"))


def reload_this() -> None:
    try:
        node_knobs.reload_workflow(_this())
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Reloading the workflow"))


def refresh_servers_this() -> None:
    try:
        node_knobs.refresh_servers(_this())
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Refreshing the server list"))


def on_knob_changed() -> None:
    import nuke

    try:
        node, knob = nuke.thisNode(), nuke.thisKnob()
        node_knobs.knob_changed(node, knob)
        if knob.name() == "showPanel":
            from . import lifecycle

            lifecycle.check_nodes([node])  # an unfinished batch shows, with Resume, when the panel opens
    except Exception:  # noqa: BLE001 - knobChanged fires constantly: log, never pop up
        log.exception("ComfyUI Cluster: knobChanged failed")


# --------------------------------------------------------------------------- menu commands


def create_node() -> Any:
    try:
        return node_knobs.create_node()
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Creating the ComfyUI Cluster node"))
        return None


#: where the menu bar's Server Panel docks, the first of these panes the layout has
DOCK_BESIDE = ("Properties.1", "DAG.1", "Viewer.1")


def open_panel() -> Any:
    """Show the docked panel (the one the Pane menu opens); returns its widget.

    From the menu bar Nuke gives no current pane, and a panel added without one is
    built but never shown (``PythonPanel.addToPane``). So it docks into a named pane,
    and when the panel is already docked it is brought to the front, not built again.
    """
    import nuke

    from . import startup

    try:
        if nuke.getPaneFor(startup.PANEL_ID) is None:
            panel = startup.register_panel(create=True)
            pane = next((p for p in map(nuke.getPaneFor, DOCK_BESIDE) if p is not None), None)
            if pane is not None:
                panel.addToPane(pane)
            else:
                panel.show()  # a layout without any of those panes: a floating panel
        widget = _show_panel_widget()
        if widget is None:
            _message("The ComfyUI Cluster panel did not open: see the Script Editor output for why.")
        return widget
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Opening the ComfyUI Cluster panel"))
        return None


def _show_panel_widget() -> Any:
    """The live panel widget, made the visible tab of its pane; None when there is none."""
    from ..ui.panel import ClusterPanel
    from ..ui.qt import QtWidgets

    for widget in QtWidgets.QApplication.allWidgets():
        if isinstance(widget, ClusterPanel) and not widget.closed:
            child, parent = widget, widget.parentWidget()
            while parent is not None:  # a docked panel is a page of a stack, itself maybe a page
                if isinstance(parent, QtWidgets.QStackedWidget):
                    tabs = parent.parentWidget()
                    # a tab widget's own stack follows its tab bar: switch the tab, not the stack
                    target = tabs if isinstance(tabs, QtWidgets.QTabWidget) else parent
                    target.setCurrentWidget(child)
                child, parent = parent, parent.parentWidget()
            return widget
    return None


def open_config_editor() -> Any:
    """The server list editor, on the shared pool (saving reloads it)."""
    try:
        from ..ui.config_editor import ConfigEditorDialog
        from ..ui.qt import QtWidgets

        dialog = ConfigEditorDialog(submit.get_cluster().pool, parent=QtWidgets.QApplication.activeWindow())
        _dialogs[:] = [d for d in _dialogs if d.isVisible()] + [dialog]
        dialog.show()
        dialog.raise_()
        return dialog
    except Exception as e:  # noqa: BLE001
        _message(_explain(e, "Opening the server editor"))
        return None


def status_summary(snapshot: Any) -> str:
    lines = []
    for s in snapshot.servers:
        if not s.enabled:
            state = "disabled"
        elif s.status.reachable:
            latency = f" {s.latency_ms:.0f} ms" if s.latency_ms is not None else ""
            state = f"{s.status.value}, queue {s.queue_length}{latency}"
        else:
            state = "{}{}".format(s.status.value, ": " + s.last_error if s.last_error else "")
        lines.append(f"{s.name} ({s.url}): {state}")
    return "\n".join(lines) or "No server configured."


def _show_refresh(names: Sequence[str], text: str) -> None:
    for n in node_knobs.cluster_nodes():
        try:
            node_knobs.refresh_servers(n, names)
        except Exception:  # noqa: BLE001 - one odd node must not hide the summary
            log.exception("ComfyUI Cluster: cannot refresh %s", n.name())
    _message("ComfyUI Cluster servers\n\n" + text)


def refresh_status() -> threading.Thread:
    """Poll every server on a worker thread, then update the nodes' server lists and report."""

    def work() -> None:
        names: List[str] = []
        try:
            cluster = submit.get_cluster()
            names = [s.name for s in cluster.pool.servers]
            text = status_summary(cluster.pool.update_all_server_status(force=True))
        except Exception as e:  # noqa: BLE001
            text = _explain(e, "Refreshing the server status")
        submit.on_main(_show_refresh, names, text)

    thread = threading.Thread(target=work, name="ncc-refresh-status", daemon=True)
    thread.start()
    return thread
