# ComfyUI Cluster for Nuke: runs in every session (GUI, nuke -t, render farm).
# Only makes the vendored dependencies importable; the menus come from menu.py.
try:
    from nuke_comfy_cluster.nuke_host import startup as _ncc_startup

    _ncc_startup.init()
except Exception:  # keep Nuke starting even if the plugin is broken
    import traceback

    traceback.print_exc()
