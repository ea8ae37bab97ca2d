"""Pure-Python core: configuration, servers, pool, HTTP, websocket, dispatch.

Never imports Qt or nuke (tests/test_layering.py proves it).
"""
