"""What Nuke runs at start-up: :func:`init` from init.py, :func:`install` from menu.py.

Both are cheap and never raise: a broken plugin must not stop Nuke, ``nuke -t``
or a render farm from starting. ``init`` (every session) also registers the
script load / close callbacks of the batch lifecycle, by functions that import
it only when a script opens or closes. ``install`` checks ``nuke.GUI``, then registers
the docked panel (by an expression that imports its class, so Qt is imported
only when the panel opens) and adds the menus. Each step is guarded on its own, so a missing Qt
binding still leaves the node and its menu usable.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, List

log = logging.getLogger(__name__)

PANEL_CLASS = "nuke_comfy_cluster.ui.panel.ClusterPanel"
#: What Nuke evaluates (in __main__) when it builds the panel. A bare dotted path only
#: resolves if ui.panel was imported before; this imports it then, so start-up needs no Qt.
PANEL_WIDGET = "__import__({!r}, fromlist=[{!r}]).{}".format(*PANEL_CLASS.rsplit(".", 1), PANEL_CLASS.rsplit(".", 1)[1])
PANEL_TITLE = "ComfyUI Cluster"
PANEL_ID = "uk.co.nuke_comfy_cluster.ClusterPanel"
MENU_NAME = "ComfyUI Cluster"
NODE_COMMAND = "ComfyUI Cluster"
VENDOR_DIR = "site-packages"

#: menu command labels -> functions in .actions
COMMANDS = (
    ("ComfyUI Cluster Node", "create_node"),
    ("Server Panel", "open_panel"),
    ("Edit Servers...", "open_config_editor"),
    ("Refresh Server Status", "refresh_status"),
)


def plugin_root() -> str:
    """The folder holding ``nuke_comfy_cluster/`` (a checkout or the installed plugin)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def init() -> List[str]:
    """For init.py: make the vendored dependencies importable and register the script
    callbacks. Returns the paths added.

    Appended, not prepended: packages the host already has (Nuke's own, a studio's)
    keep winning, and ours only fill what is missing.
    """
    added = []
    vendored = os.path.join(plugin_root(), VENDOR_DIR)
    if os.path.isdir(vendored) and vendored not in sys.path:
        sys.path.append(vendored)
        added.append(vendored)
    register_callbacks()
    return added


def on_script_load() -> None:
    from . import lifecycle

    lifecycle.on_script_load()


def on_script_close() -> None:
    from . import lifecycle

    lifecycle.on_script_close()


def register_callbacks() -> bool:
    """onScriptLoad (unfinished batches offer Resume) and onScriptClose (keep or cancel what
    still renders), in every session: a terminal session closing its script must not drop its
    batches either. Registering twice keeps one of each (Nuke's _addCallback)."""
    try:
        import nuke
    except ImportError:
        return False  # plain Python (tests, the installer): nothing to register with
    try:
        nuke.addOnScriptLoad(on_script_load)
        nuke.addOnScriptClose(on_script_close)
    except Exception:  # noqa: BLE001 - log and keep Nuke starting
        log.exception("ComfyUI Cluster: cannot register the script callbacks")
        return False
    return True


def _command(name: str) -> Any:
    def run() -> Any:
        from . import actions

        return getattr(actions, name)()

    run.__name__ = name
    run.__qualname__ = "ncc_" + name
    return run


def register_panel(create: bool = False) -> Any:
    """Register the docked panel; with ``create``, also return a new, undocked panel."""
    import nukescripts

    # also adds the Pane menu entry, and lets saved workspaces restore the panel by id
    return nukescripts.panels.registerWidgetAsPanel(PANEL_WIDGET, PANEL_TITLE, PANEL_ID, create)


def add_menus() -> None:
    import nuke

    from .icon import icon_path

    icon = icon_path()
    toolbar = nuke.toolbar("Nodes").addMenu(MENU_NAME, icon=icon)
    toolbar.addCommand(NODE_COMMAND, _command("create_node"), icon=icon)
    menu = nuke.menu("Nuke").addMenu(MENU_NAME)
    for label, name in COMMANDS:
        menu.addCommand(label, _command(name), icon=icon if name == "create_node" else "")


def install() -> bool:
    """For menu.py: panel and menus in an interactive session. True when all went in.

    Running it twice is harmless: Nuke replaces menu commands of the same name.
    """
    try:
        import nuke
    except ImportError:
        log.warning("ComfyUI Cluster: not running inside Nuke, nothing to install")
        return False
    if not getattr(nuke, "GUI", False):
        return False  # terminal and render sessions get the node's plumbing only
    ok = True
    for step in (register_panel, add_menus):
        try:
            step()
        except Exception:  # noqa: BLE001 - log and keep Nuke starting
            log.exception("ComfyUI Cluster: %s failed", step.__name__)
            ok = False
    return ok
