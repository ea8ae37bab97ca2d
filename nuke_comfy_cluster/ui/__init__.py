"""Qt user interface: the cluster panel, its config editor, and a standalone window.

Modules (Qt comes only through :mod:`.qt`, the binding shim)::

    qt            PySide6 / PySide2 shim: QtCore, QtGui, QtWidgets, Signal, QAction, exec_
    workers       QThread tasks and the bridges turning core callbacks into queued signals
    server_table  the live server table model and its delegate
    jobs_view     batches and jobs with progress, cancel, retry and errors
    config_editor the JSON / table editor with validation, backups, import and export
    panel         ClusterPanel, the widget Nuke docks
    standalone    the panel in its own window (``python -m nuke_comfy_cluster panel``)

Importing this package imports nothing else.
"""
