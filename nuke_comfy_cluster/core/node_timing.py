"""Which part of a frame's time is setup (model loads) and which is the frame's own work.

ComfyUI skips a node whose inputs did not change since the last prompt on that
server (``execution_cached``). The nodes that are the same in every frame of a
batch (checkpoint, LoRA and ControlNet loaders, text encoders, ...) therefore run
only when a server is cold for the workflow; the nodes that depend on a frame
token or a seed run every frame. The client knows which is which by comparing
two frames' prompts, and times each node from the ``executing`` messages it is
sent (node by node, to the submitting client only), so it can learn setup and
per-frame cost apart.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple


def _links(node: Any) -> List[str]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return []
    return [str(v[0]) for v in inputs.values() if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)]


def static_nodes(prompts: Iterable[Dict[str, Any]]) -> FrozenSet[str]:
    """Nodes identical in every given prompt and fed only by such nodes (the setup part).

    With a single prompt nothing is known to vary: loaders (class names with
    "Loader") are taken as setup, as they are in every workflow people render.
    """
    prompts = list(prompts)
    if not prompts:
        return frozenset()
    first = prompts[0]
    ids = [str(k) for k in first if isinstance(first[k], dict)]
    if len(prompts) == 1:
        return frozenset(i for i in ids if "loader" in str(first[i].get("class_type", "")).lower())
    varying: Set[str] = {i for i in ids if any(p.get(i) != first[i] for p in prompts[1:])}
    # anything downstream of a varying node varies too
    changed = True
    while changed:
        changed = False
        for i in ids:
            if i not in varying and any(src in varying for src in _links(first[i])):
                varying.add(i)
                changed = True
    return frozenset(i for i in ids if i not in varying)


def split_times(
    marks: List[Tuple[str, float]], ended_at: float, static: FrozenSet[str], cached: Iterable[str]
) -> Tuple[Optional[float], Optional[bool]]:
    """``(setup seconds, cold)`` of one prompt from its ``executing`` marks (node, time).

    ``cold`` is True when a static node ran (was not cached), False when every static
    node was cached, None when the workflow has no static node. The setup seconds are
    the time the static nodes that ran took (None when no node was timed).
    """
    if not static:
        return None, None
    cached_set = set(str(c) for c in cached)
    ran = {node for node, _ in marks}
    cold = bool((static & ran) - cached_set) or (not marks and not static <= cached_set)
    if not marks:
        return None, cold
    setup = 0.0
    for k, (node, at) in enumerate(marks):
        end = marks[k + 1][1] if k + 1 < len(marks) else ended_at
        if node in static:
            setup += max(0.0, end - at)
    return setup, cold
