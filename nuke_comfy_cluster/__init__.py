"""Run ComfyUI from Foundry Nuke on a cluster of servers.

Layers (dependencies point down only)::

    nuke_host   the only code that imports nuke / nukescripts (inside functions)
    ui          Qt widgets through one binding shim (ui/qt.py)
    core        pure Python + requests + websocket-client
    sim         a ComfyUI-protocol server for tests, demo and benchmarks

Importing this package does no work: no threads, sockets or environment reads.
"""

__version__ = "0.1.0"
