"""Queue and history of the simulated server, shaped like ComfyUI's PromptQueue.

Items are ``(number, prompt_id, prompt, extra_data, outputs_to_execute)``
tuples kept in a heap, so ``GET /queue`` returns pending items in heap order
(not sorted) and execution follows ascending ``number``, as a real server does.
Everything lives in memory: a restarted simulator starts empty.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

#: ComfyUI keeps this many finished prompts.
MAX_HISTORY = 10000

QueueItem = Tuple[Any, str, Dict[str, Any], Dict[str, Any], List[str]]


class PromptQueue:
    """Pending heap, running set and history; ``on_change`` fires on every queue change."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._heap: List[QueueItem] = []
        self._running: Dict[int, QueueItem] = {}
        self._task_counter = 0
        self._history: OrderedDict[str, Dict[str, Any]] = OrderedDict()
        self._wakeup: Optional[asyncio.Event] = None
        #: Next ``number`` handed out by POST /prompt; restarts at 0 per process.
        self.number = 0

    def _event(self) -> asyncio.Event:
        # Created lazily so the queue can be built before an event loop runs.
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    def next_number(self, front: bool) -> int:
        number = self.number
        self.number += 1
        return -number if front else number

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, item)
        self._event().set()
        self._on_change()

    async def get(self) -> Tuple[QueueItem, int]:
        """Wait for the lowest-numbered pending item and mark it running."""
        while not self._heap:
            event = self._event()
            event.clear()
            await event.wait()
        item = heapq.heappop(self._heap)
        task_id = self._task_counter
        self._task_counter += 1
        self._running[task_id] = item
        self._on_change()
        return item, task_id

    def task_done(self, task_id: int, history_result: Dict[str, Any], status: Dict[str, Any]) -> None:
        item = self._running.pop(task_id)
        if len(self._history) >= MAX_HISTORY:
            self._history.popitem(last=False)
        entry: Dict[str, Any] = {"prompt": item, "outputs": {}, "status": status}
        entry.update(history_result)
        self._history[item[1]] = entry
        self._on_change()

    def current(self) -> Tuple[List[QueueItem], List[QueueItem]]:
        return list(self._running.values()), list(self._heap)

    def remaining(self) -> int:
        return len(self._heap) + len(self._running)

    def wipe(self) -> None:
        self._heap = []
        self._on_change()

    def delete_pending(self, prompt_id: str) -> bool:
        """Remove one pending prompt; a running or unknown id is ignored (no status sent)."""
        for index, item in enumerate(self._heap):
            if item[1] == prompt_id:
                self._heap.pop(index)
                heapq.heapify(self._heap)
                self._on_change()
                return True
        return False

    def history(
        self, prompt_id: Optional[str] = None, max_items: Optional[int] = None, offset: int = -1
    ) -> Dict[str, Any]:
        if prompt_id is not None:
            entry = self._history.get(prompt_id)
            return {} if entry is None else {prompt_id: entry}
        out: Dict[str, Any] = {}
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        for index, (key, entry) in enumerate(self._history.items()):
            if index >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def wipe_history(self) -> None:
        self._history.clear()

    def delete_history(self, prompt_id: str) -> None:
        self._history.pop(prompt_id, None)
