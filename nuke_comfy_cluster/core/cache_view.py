"""What a server's node cache will hold when our next prompt starts there.

ComfyUI keeps the outputs of the nodes of the last prompt it ran (the classic
cache) and skips a node whose inputs did not change. The expensive ones are the
loaders (checkpoint, LoRA, upscale model, ControlNet, text encoders), and their
inputs are the same in every frame of a workflow, so whether a prompt of ours will
pay a model load depends on one thing: the loaders of the prompt that runs just
before it. That is the tail of the server's queue (the pending item with the
highest number; ComfyUI runs them lowest first), or with nothing queued, the last
prompt it ran.

``GET /queue`` carries the full prompts of every client, so the client can see it;
it is fetched only when the server's queue length changes (the websocket pushes
that), never on a timer, and only for batches whose workflow has loaders.

The loaders of a prompt are its nodes whose class name says "Loader" (ComfyUI's
own and the custom nodes' convention), taken with their literal inputs (links are
left out: a LoRA loader's model input is another loader). A prompt that holds all
of our loaders with the same inputs leaves the server warm for us; its loaders'
hash names whose models are there (:func:`setup_owner`), which is stable over all
frames of one workflow.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, FrozenSet, Iterable, List, Optional, Tuple

from .scheduler import SOMEONE

__all__ = ["loader_items", "setup_owner", "queue_tail", "CacheView"]

LoaderItem = Tuple[str, str]  # (class_type, literal inputs as canonical JSON)
#: seconds a server must have been seen with nothing queued before the models left there
#: are nobody's to keep (between two frames of another artist it is empty for a moment)
IDLE_FREE_S = 1.0


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def loader_items(prompt: Any) -> FrozenSet[LoaderItem]:
    """The loader nodes of an API prompt, each as (class_type, its literal inputs)."""
    if not isinstance(prompt, dict):
        return frozenset()
    out = set()
    for node in prompt.values():
        if not isinstance(node, dict):
            continue
        cls = node.get("class_type")
        if not isinstance(cls, str) or "loader" not in cls.lower():
            continue
        inputs = node.get("inputs")
        literal = {str(k): v for k, v in inputs.items() if not _is_link(v)} if isinstance(inputs, dict) else {}
        try:
            out.add((cls, json.dumps(literal, sort_keys=True, default=str)))
        except (TypeError, ValueError):
            continue
    return frozenset(out)


def setup_owner(items: FrozenSet[LoaderItem]) -> Optional[str]:
    """A short stable id of a set of loaders (None when there is none)."""
    if not items:
        return None
    text = "\n".join(f"{c}\t{i}" for c, i in sorted(items))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def queue_tail(running: List[Any], pending: List[Any]) -> Optional[List[Any]]:
    """The item a prompt sent now would run after: the last pending one, else the running one."""
    items = [i for i in pending if isinstance(i, list) and len(i) >= 3 and isinstance(i[0], (int, float))]
    if items:
        return max(items, key=lambda i: i[0])
    items = [i for i in running if isinstance(i, list) and len(i) >= 3]
    return items[-1] if items else None


def _ended(entry: Any) -> Optional[float]:
    """When a ``/history`` entry's prompt ended: its last status message's timestamp (ms)."""
    status = entry.get("status") if isinstance(entry, dict) else None
    messages = status.get("messages") if isinstance(status, dict) else None
    stamps = [
        m[1].get("timestamp") for m in messages or () if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)
    ]
    stamps = [t for t in stamps if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return max(stamps) / 1000.0 if stamps else None


class CacheView:
    """One server's cache as last seen by this client: the loaders of its queue's tail.

    Made and read on the dispatcher's loop thread; :meth:`fetch` runs on an I/O worker
    and hands its answer back to :meth:`seen` through the loop.
    """

    __slots__ = ("length_seen", "fetching", "seen_at", "tail_items", "tail_batch", "known", "empty_since")

    def __init__(self) -> None:
        self.length_seen: Optional[int] = None  # queue length when last fetched
        self.fetching = False
        self.seen_at = 0.0  # time.time() of the fetch
        self.tail_items: FrozenSet[LoaderItem] = frozenset()
        self.tail_batch: Optional[str] = None  # our batch id when the tail is one of ours
        self.known = False  # a fetch has answered
        self.empty_since: Optional[float] = None  # time.time() of the first look that found nothing queued

    def wants_fetch(self, queue_length: int) -> bool:
        return not self.fetching and queue_length != self.length_seen

    @staticmethod
    def fetch(server: Any) -> Tuple[Optional[Any], float, Optional[float]]:
        """The tail item (or the last prompt run when nothing is queued), when it was seen,
        and with nothing queued, when the last prompt ended (the server's clock, time.time()).

        Network; raises the connection's errors. ``server`` is a ComfyUIServer.
        """
        at = time.time()
        running, pending = server.update_queue_detail()
        tail = queue_tail(running, pending)
        if tail is not None:
            return tail, at, None
        body = server.connection.get_json("history", params={"max_items": 1})
        entry = list(body.values())[-1] if isinstance(body, dict) and body else None
        item = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(item, list) or len(item) < 3:
            return None, at, None
        return item, at, _ended(entry)

    def seen(self, tail: Optional[List[Any]], at: float, queue_length: int, ended: Optional[float] = None) -> None:
        self.fetching = False
        if queue_length > 0:
            self.empty_since = None
        elif self.empty_since is None:
            # idle since its last prompt ended (a server clock ahead of ours counts from now)
            self.empty_since = at if ended is None else min(at, ended)
        self.length_seen = queue_length
        self.seen_at = at
        self.known = True
        if tail is None:
            self.tail_items = frozenset()
            self.tail_batch = None
            return
        self.tail_items = loader_items(tail[2])
        extra = tail[3] if len(tail) > 3 and isinstance(tail[3], dict) else {}
        batch = extra.get("ncc_batch")
        self.tail_batch = batch if isinstance(batch, str) else None

    def failed(self, queue_length: int) -> None:
        """The look failed: the state stays as it was; look again at the next change."""
        self.fetching = False
        self.length_seen = queue_length

    def warm_for(
        self, batch_id: str, ours: FrozenSet[LoaderItem], sent_since: Iterable[float], now: Optional[float] = None
    ) -> Tuple[Optional[bool], Optional[str]]:
        """(warm, cache owner) for a prompt of this batch sent now (see :class:`ServerLoad`).

        ``sent_since``: when our prompts still on that server were sent (time.time());
        one sent after the fetch is behind everything the fetch saw. The owner is None
        when nobody's models are there to keep: none at all, or the server has been
        idle for :data:`IDLE_FREE_S` (``now``, time.time()).
        """
        mine = setup_owner(ours)
        if mine is None:
            return None, None
        if any(t >= self.seen_at for t in sent_since):
            return True, mine
        if self.known and self.fetching:
            # its queue changed since the look and the new look is on its way: someone
            # else's prompt arrived, maybe another workflow's; not ours to claim blindly
            return False, SOMEONE
        if not self.known:
            # not looked yet (the batch's first plan): a new batch's models are taken as
            # not loaded, which is what a first look shows almost always
            return False, None
        if self.tail_batch == batch_id or (self.tail_items and ours <= self.tail_items):
            return True, mine
        idle = self.empty_since is not None and (time.time() if now is None else now) - self.empty_since >= IDLE_FREE_S
        if not self.tail_items or idle:
            # nothing there (a server that never ran anything, or a prompt without loaders),
            # or left idle: cold for us, but nobody's models to keep
            return False, None
        return False, setup_owner(self.tail_items)
