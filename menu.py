# ComfyUI Cluster for Nuke: the docked panel, the node toolbar entry and the menu commands.
# install() checks nuke.GUI and logs instead of raising, so Nuke always starts.
try:
    import nuke_comfy_cluster.nuke_host.startup as _ncc_startup

    _ncc_startup.install()
except Exception:  # keep Nuke starting even if the plugin is broken
    import traceback

    traceback.print_exc()
