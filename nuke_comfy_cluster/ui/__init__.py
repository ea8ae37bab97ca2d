"""Qt user interface: the cluster panel, its config editor, and a standalone window.

Modules (Qt comes only through :mod:`.qt`, the binding shim)::

    qt            PySide6 / PySide2 shim: QtCore, QtGui, QtWidgets, Signal, QAction, exec_
    workers       QThread tasks and the bridges turning core callbacks into queued signals
    server_texts  what the table says about a server (state, why not used), no Qt
    server_table  the live server table model
    server_view   its widget: sorting, priority spin box, columns that fit a narrow dock
    jobs_view     batches and jobs with progress, cancel, retry and errors
    progress_bar  the jobs' progress bars, legible in any palette
    widgets       an eliding label and the one-line configuration banner
    config_editor the server editor dialog, assembled from:
      config_table  the table pane (one row per entry, Add / Duplicate / Remove / Test)
      config_text   the JSON pane (problems marked at line and column)
      config_files  where Save writes; save, backup, restore, import, export
    panel         ClusterPanel, the widget Nuke docks
    standalone    the panel in its own window (``python -m nuke_comfy_cluster panel``)

Importing this package imports nothing else.
"""
