"""The Nuke host: the only package that imports ``nuke`` / ``nukescripts``, always inside functions.

::

    startup     what init.py / menu.py call: vendored path, panel registration, menus
    actions     the few functions knob scripts and menu commands call (never raise into Nuke)
    node        the ComfyUI Cluster node: knobs, knob callbacks, reading its settings
    inputs      rendering node inputs with a temporary Write; mapping them onto each server
    submit      the submit flow: a worker thread per run, ProgressTask, main-thread marshalling
    resume      Resume on the node: the batch back from the ledger, followed like a submit
    lifecycle   script load (Resume offered) and close / quit (keep or cancel what renders)
    reads       Read nodes for finished sequences (planned off the main thread, built on it)
    messages    status lines and error texts for the node (pure Python)
    icon        the toolbar icon, drawn as a PNG with the standard library
    installer   ``python -m nuke_comfy_cluster install / uninstall``

Importing any of these does no work and does not need Nuke.
"""
