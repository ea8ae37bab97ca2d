"""The one worker that runs queued prompts and emits ComfyUI's websocket messages.

Per prompt, in order: ``execution_start``, ``execution_cached``, then per node
``executing`` (+ ``progress`` for sampler-like nodes, ``executed`` for output
nodes), then ``execution_success`` / ``execution_error`` /
``execution_interrupted``; the queue's ``status`` broadcast; and last
``executing {node: null}``. Execution messages go to the submitting client
only; a prompt without ``client_id`` gets none, except the broadcast error /
interrupted message and ``progress`` (sent to everyone with ``node: null``),
exactly as ComfyUI 0.3.39 behaves.

``POST /interrupt`` takes effect at once, reported on the node that was
running (a real server reacts at its next check, 0-1.5 s later).

Time: a prompt takes ``seconds / speed`` x uniform(1 - jitter, 1 + jitter)
(``extra_data["sim_seconds"]`` overrides ``seconds`` for one prompt), shared
among the nodes that actually run by their weights. Cached nodes cost nothing.
A model loader (:data:`LOADERS`) that actually runs adds ``load_seconds / speed``
on top (the classic cache keeps only the last prompt's outputs, so a prompt with
another model evicts the loaded one and the next switch back pays again).

``fail_class``: the first node of that class that runs spends its share of the
time, then fails with a CUDA out-of-memory ``execution_error`` (the
exception type and message real ComfyUI reports for ``torch.OutOfMemoryError``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import struct
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from .nodes import (
    BEHAVIOURS,
    Dirs,
    NodeRuntimeError,
    RunContext,
    file_fingerprint,
    input_path,
    is_output_node,
)
from .png import solid_png
from .prompt_queue import PromptQueue, QueueItem

log = logging.getLogger("nuke_comfy_cluster.sim")

#: Longest stretch of simulated work credited per wake-up: a process frozen by
#: SIGSTOP must not finish its node the instant it is resumed.
_MAX_STEP = 0.25
_MAX_LAG = 0.5

#: Binary websocket event: PREVIEW_IMAGE, image type PNG (ComfyUI's encoding).
_PREVIEW_IMAGE = 1
_PNG = 2

Publish = Callable[[str, Dict[str, Any], Optional[str]], None]
PublishBinary = Callable[[bytes, Optional[str]], None]


#: Node classes whose run is a model load (``--load-seconds`` applies to them).
LOADERS = frozenset({"CheckpointLoaderSimple", "UpscaleModelLoader"})

#: What torch raises on a CUDA out-of-memory (``str(ex)``), as ComfyUI reports it.
OOM_TYPE = "torch.OutOfMemoryError"
OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 4.50 GiB. GPU 0 has a total capacity of 7.79 GiB of which "
    "1.12 GiB is free. Including non-PyTorch memory, this process has 6.65 GiB memory in use. Of the "
    "allocated memory 5.90 GiB is allocated by PyTorch, and 312.00 MiB is reserved by PyTorch but "
    "unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
    "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
_OOM_TRACEBACK = [
    '  File "/opt/comfyui/execution.py", line 349, in execute\n'
    "    output_data, output_ui, has_subgraph = get_output_data(obj, input_data_all, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb)\n",
    '  File "/opt/comfyui/execution.py", line 224, in get_output_data\n'
    "    return_values = _map_node_over_list(obj, input_data_all, obj.FUNCTION, allow_interrupt=True, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb)\n",
    '  File "/opt/comfyui/execution.py", line 196, in _map_node_over_list\n    process_inputs(input_dict, i)\n',
    '  File "/opt/comfyui/execution.py", line 185, in process_inputs\n'
    "    results.append(getattr(obj, func)(**inputs))\n",
]


class Timing(NamedTuple):
    speed: float = 1.0
    seconds: float = 1.0
    jitter: float = 0.0
    #: added (divided by speed) to every loader node that runs, i.e. is not cached
    load_seconds: float = 0.0


class _Interrupted(Exception):
    pass


class _CacheEntry(NamedTuple):
    outputs: Tuple[Any, ...]
    ui: Optional[Dict[str, Any]]


class Executor:
    """Runs prompts one at a time in ``number`` order; owns the output cache."""

    def __init__(
        self,
        queue: PromptQueue,
        publish: Publish,
        publish_binary: PublishBinary,
        flush: Callable[[], Awaitable[None]],
        dirs: Dirs,
        timing: Timing,
        rng: random.Random,
        cache_enabled: bool = True,
        previews: bool = False,
        exit_hook: Optional[Callable[[], bool]] = None,
        fail_class: str = "",
    ) -> None:
        self.queue = queue
        self.publish = publish
        self.publish_binary = publish_binary
        self.flush = flush
        self.dirs = dirs
        self.timing = timing
        self.rng = rng
        self.cache_enabled = cache_enabled
        self.previews = previews
        #: Returns True when the "exit_mid_prompt" fault is armed (and disarms it).
        self.exit_hook = exit_hook
        self.fail_class = fail_class
        self.client_id: Optional[str] = None
        self.last_node_id: Optional[str] = None
        self.last_prompt_id: Optional[str] = None
        self.running_prompt_id: Optional[str] = None
        self._interrupt: Optional[asyncio.Event] = None
        self._cache: Dict[str, _CacheEntry] = {}

    # ---- control ---------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Interrupt whatever runs now (0.3.39 takes no prompt id); idle: no effect."""
        self._event().set()

    def _event(self) -> asyncio.Event:
        if self._interrupt is None:
            self._interrupt = asyncio.Event()
        return self._interrupt

    async def run_forever(self) -> None:
        while True:
            item, task_id = await self.queue.get()
            prompt_id = item[1]
            self.last_prompt_id = self.running_prompt_id = prompt_id
            started = time.monotonic()
            try:
                success, history_result, messages = await self._execute(item)
            except Exception:  # noqa: BLE001 - a simulator bug must not kill the worker
                log.exception("simulator error while running %s", prompt_id)
                success, history_result, messages = False, {"outputs": {}, "meta": {}}, []
            self.running_prompt_id = None
            self.queue.task_done(
                task_id,
                history_result,
                {"status_str": "success" if success else "error", "completed": success, "messages": messages},
            )
            if self.client_id is not None:
                self.publish("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)
            log.info("Prompt %s executed in %.2f seconds", prompt_id, time.monotonic() - started)

    # ---- one prompt ------------------------------------------------------------------------

    def _duration(self, extra_data: Dict[str, Any]) -> float:
        seconds = self.timing.seconds
        override = extra_data.get("sim_seconds")
        if isinstance(override, (int, float)) and not isinstance(override, bool) and override >= 0:
            seconds = float(override)
        jitter = max(0.0, min(0.99, self.timing.jitter))
        factor = self.rng.uniform(1.0 - jitter, 1.0 + jitter) if jitter else 1.0
        return max(0.0, seconds / max(self.timing.speed, 1e-9) * factor)

    def _load_duration(self) -> float:
        return max(0.0, self.timing.load_seconds) / max(self.timing.speed, 1e-9)

    async def _execute(self, item: QueueItem) -> Tuple[bool, Dict[str, Any], List[Any]]:
        _number, prompt_id, prompt, extra_data, execute_outputs = item
        self._event().clear()
        self.client_id = extra_data.get("client_id")
        messages: List[Any] = []

        def add_message(event: str, data: Dict[str, Any], broadcast: bool) -> None:
            data = dict(data, timestamp=int(time.time() * 1000))
            messages.append([event, data])
            if self.client_id is not None or broadcast:
                self.publish(event, data, self.client_id)

        add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)

        signatures = _signatures(prompt, self.dirs)
        if not self.cache_enabled:
            self._cache.clear()
        # The classic cache keeps only what the current prompt can use.
        wanted = set(signatures.values())
        self._cache = {sig: entry for sig, entry in self._cache.items() if sig in wanted}
        cached_nodes = [node_id for node_id in prompt if signatures[node_id] in self._cache]
        add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        order_needed = _needed_nodes(prompt, execute_outputs, set(cached_nodes))
        to_run = [n for n in order_needed if n not in cached_nodes]
        weights = {n: BEHAVIOURS[prompt[n]["class_type"]].weight for n in to_run}
        total_weight = sum(weights.values()) or 1.0
        duration = self._duration(extra_data)

        values: Dict[str, Tuple[Any, ...]] = {}
        ui_outputs: Dict[str, Any] = {}
        meta: Dict[str, Any] = {}
        executed: List[str] = []
        ctx = RunContext(self.dirs, _as_executed(prompt, self.dirs), extra_data, self.rng)
        success = True
        exit_armed = bool(self.exit_hook and self.exit_hook())
        if exit_armed and not to_run:
            await self._crash()

        for node_id in _execution_order(prompt, order_needed, set(cached_nodes)):
            class_type = prompt[node_id]["class_type"]
            signature = signatures[node_id]
            if node_id in cached_nodes:
                entry = self._cache[signature]
                values[node_id] = entry.outputs
                if entry.ui is not None:
                    ui_outputs[node_id] = entry.ui
                    meta[node_id] = _meta(node_id)
                    if self.client_id is not None:
                        self.publish(
                            "executed",
                            {"node": node_id, "display_node": node_id, "output": entry.ui, "prompt_id": prompt_id},
                            self.client_id,
                        )
                continue
            if self.client_id is not None:
                self.last_node_id = node_id
                self.publish(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, self.client_id
                )
            if exit_armed:
                await self._crash()
            inputs = _resolve_inputs(prompt[node_id]["inputs"], values)
            behaviour = BEHAVIOURS[class_type]
            try:
                steps = behaviour.progress(inputs) if behaviour.progress else 0
                seconds = duration * weights[node_id] / total_weight
                if class_type in LOADERS:
                    seconds += self._load_duration()
                await self._work(seconds, steps, prompt_id)
                if class_type == self.fail_class:
                    raise NodeRuntimeError(OOM_TYPE, OOM_MESSAGE, list(_OOM_TRACEBACK))
                outputs, ui = await asyncio.get_running_loop().run_in_executor(None, behaviour.run, ctx, inputs)
            except _Interrupted:
                success = False
                add_message(
                    "execution_interrupted",
                    {"prompt_id": prompt_id, "node_id": node_id, "node_type": class_type, "executed": executed[::-1]},
                    broadcast=True,
                )
                break
            except NodeRuntimeError as ex:
                success = False
                add_message(
                    "execution_error", self._error_message(prompt_id, prompt, node_id, executed, inputs, ex), True
                )
                break
            except Exception as ex:  # noqa: BLE001 - any node failure is reported like ComfyUI does
                success = False
                error = NodeRuntimeError(type(ex).__name__, str(ex), [])
                add_message(
                    "execution_error", self._error_message(prompt_id, prompt, node_id, executed, inputs, error), True
                )
                break
            values[node_id] = outputs
            self._cache[signature] = _CacheEntry(outputs, ui)
            executed.append(node_id)
            if ui is not None:
                ui_outputs[node_id] = ui
                meta[node_id] = _meta(node_id)
                if self.client_id is not None:
                    self.publish(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                        self.client_id,
                    )
        else:
            add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        self.last_node_id = None
        return success, {"outputs": ui_outputs, "meta": meta}, messages

    def _error_message(
        self,
        prompt_id: str,
        prompt: Dict[str, Any],
        node_id: str,
        executed: List[str],
        inputs: Dict[str, Any],
        ex: NodeRuntimeError,
    ) -> Dict[str, Any]:
        return {
            "prompt_id": prompt_id,
            "node_id": node_id,
            "node_type": prompt[node_id]["class_type"],
            "executed": executed[::-1],
            "exception_message": ex.exception_message,
            "exception_type": ex.exception_type,
            "traceback": ex.traceback,
            "current_inputs": {k: [_format_value(v)] for k, v in inputs.items()},
            "current_outputs": list(prompt),
        }

    async def _work(self, seconds: float, steps: int, prompt_id: str) -> None:
        """Spend ``seconds`` of simulated work, sending ``steps`` progress messages."""
        slices = max(1, steps)
        for step in range(1, slices + 1):
            await self._sleep(seconds / slices)
            if steps:
                if self._event().is_set():
                    raise _Interrupted()
                node = self.last_node_id if self.client_id is not None else None
                self.publish(
                    "progress", {"value": step, "max": steps, "prompt_id": prompt_id, "node": node}, self.client_id
                )
                if self.previews:
                    self._send_preview(step)
        if self._event().is_set():
            raise _Interrupted()

    async def _sleep(self, seconds: float) -> None:
        event = self._event()
        remaining = seconds
        while remaining > 1e-6:
            if event.is_set():
                raise _Interrupted()
            step = min(remaining, _MAX_STEP)
            start = time.monotonic()
            try:
                await asyncio.wait_for(event.wait(), timeout=step)
            except asyncio.TimeoutError:
                pass
            elapsed = time.monotonic() - start
            # A frozen process (SIGSTOP) resumes where it stopped, as a real GPU job does.
            remaining -= min(elapsed, step + _MAX_LAG)
        if event.is_set():
            raise _Interrupted()

    def _send_preview(self, step: int) -> None:
        shade = (step * 37) % 256
        data = solid_png(8, 8, (shade, shade, shade))
        self.publish_binary(struct.pack(">II", _PREVIEW_IMAGE, _PNG) + data, self.client_id)

    async def _crash(self) -> None:
        log.warning("fault exit_mid_prompt: exiting now (os._exit(1))")
        try:
            await asyncio.wait_for(self.flush(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
        # Let the kernel hand the last frames to the clients before the sockets die.
        await asyncio.sleep(0.1)
        sys.stderr.flush()
        os._exit(1)


def _as_executed(prompt: Dict[str, Any], dirs: Dirs) -> Dict[str, Any]:
    """The prompt as ComfyUI's nodes see it (and SaveImage embeds it in the PNG): every node whose
    class has ``IS_CHANGED`` (here LoadImage: the file's sha256) carries ``"is_changed": [value]``.
    /history and /queue keep the prompt as it was sent."""
    out = dict(prompt)
    for node_id, node in prompt.items():
        if node.get("class_type") == "LoadImage":
            path = input_path(str(node.get("inputs", {}).get("image", "")), dirs)
            out[node_id] = dict(node, is_changed=[file_fingerprint(path)])
    return out


def _meta(node_id: str) -> Dict[str, Any]:
    return {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _resolve_inputs(inputs: Dict[str, Any], values: Dict[str, Tuple[Any, ...]]) -> Dict[str, Any]:
    out = {}
    for name, value in inputs.items():
        if _is_link(value):
            out[name] = values[value[0]][int(value[1])]
        else:
            out[name] = value
    return out


def _signatures(prompt: Dict[str, Any], dirs: Dirs) -> Dict[str, str]:
    """A hash per node of its class, constant inputs and ancestors: equal hash = cache hit."""
    memo: Dict[str, str] = {}

    def sig(node_id: str, depth: int = 0) -> str:
        if node_id in memo:
            return memo[node_id]
        if depth > 10000:
            raise RecursionError("cycle in prompt")
        node = prompt[node_id]
        parts: List[Any] = [node["class_type"]]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if _is_link(value) and value[0] in prompt:
                parts.append([name, "link", sig(value[0], depth + 1), value[1]])
            else:
                parts.append([name, value])
        if node["class_type"] == "LoadImage":
            parts.append(file_fingerprint(input_path(str(node["inputs"].get("image", "")), dirs)))
        memo[node_id] = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        return memo[node_id]

    return {node_id: sig(node_id) for node_id in prompt}


def _needed_nodes(prompt: Dict[str, Any], outputs: List[str], cached: Set[str]) -> List[str]:
    """Outputs and their ancestors, not looking past cached nodes (their inputs are not needed)."""
    needed: List[str] = []
    seen: Set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        needed.append(node_id)
        if node_id in cached:
            continue
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value):
                stack.append(value[0])
    return needed


def _execution_order(prompt: Dict[str, Any], needed: List[str], cached: Set[str]) -> List[str]:
    """Topological order picking like ComfyUI's ``ux_friendly_pick_node``, prompt order otherwise."""
    needed_set = set(needed)
    deps: Dict[str, Set[str]] = {}
    for node_id in needed:
        if node_id in cached:
            deps[node_id] = set()
        else:
            deps[node_id] = {v[0] for v in prompt[node_id]["inputs"].values() if _is_link(v) and v[0] in needed_set}
    blocking: Dict[str, Set[str]] = {n: set() for n in needed}
    for node_id, node_deps in deps.items():
        for dep in node_deps:
            blocking[dep].add(node_id)
    position = {node_id: index for index, node_id in enumerate(prompt)}
    done: Set[str] = set()
    order: List[str] = []

    def is_output(node_id: str) -> bool:
        return is_output_node(prompt[node_id]["class_type"])

    while len(order) < len(needed):
        ready = sorted((n for n in needed if n not in done and deps[n] <= done), key=position.__getitem__)
        if not ready:
            raise ValueError("cycle in prompt")
        pick = next((n for n in ready if is_output(n)), None)
        if pick is None:
            pick = next((n for n in ready if any(is_output(b) for b in blocking[n])), None)
        if pick is None:
            pick = next((n for n in ready if any(is_output(c) for b in blocking[n] for c in blocking[b])), None)
        if pick is None:
            pick = ready[0]
        done.add(pick)
        order.append(pick)
    return order
