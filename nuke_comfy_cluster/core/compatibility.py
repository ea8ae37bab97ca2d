"""Can this server run this workflow? Checked before sending, from ``GET /object_info/{class}``.

Real clusters are not uniform: a custom node, a checkpoint or a LoRA is missing on
one box. ComfyUI refuses such a prompt (400) only when it arrives; asking first lets
the dispatcher leave the server out of the batch, with the reason, before anything
renders. The check mirrors ComfyUI 0.3.39's own validation (``execution.py``
``validate_prompt`` / ``validate_inputs``), so it refuses exactly what the server
would refuse:

- every node's ``class_type`` must exist (``/object_info/{class}`` answers ``{}``
  for an unknown class), for every node of the prompt;
- for the nodes an output node depends on (ComfyUI validates nothing else), every
  required input must be given, and every literal value of a combo input (an input
  whose type, the first element of its spec, is a list: ``ckpt_name``,
  ``lora_name``, ``vae_name``, ``sampler_name``...) must be among the choices.
  Inputs the server checks by itself and that we fill at submit time are skipped:
  uploadable ones (``image_upload``, ``video_upload``...) and ``remote`` combos.
  ``["COMBO", {"options": [...]}]`` specs are not checked by ComfyUI 0.3.39, so not here.

Only the classes a workflow uses are fetched (never the multi-megabyte
``/object_info``), in parallel over servers, each server within a deadline. Answers
are cached per server (:class:`ObjectInfoCache`, held by the server object). The
cache is dropped when the server may have restarted, which is when its websocket
reconnects (a restart always drops every socket) or when a poll sees it answer again
after being unreachable (the pool does both). ComfyUI's restart marks are weak
otherwise: the ``sid`` of the first ``status`` is our own clientId, the queue
``number`` resets only once a prompt is posted, and ``/system_stats`` carries no
boot id. Model lists change without a restart (a checkpoint copied in), so a
negative answer from the cache is fetched again before a server is refused, and a
positive one is trusted for :data:`CACHE_MAX_AGE_S`.

Call :func:`check_servers` off the UI thread and off the dispatcher's loop thread.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote

from .errors import ClusterError, WorkflowError, user_message

#: how long check_servers waits for every server together (a hung server costs this once)
DEFAULT_DEADLINE_S = 4.0
#: a cached class answer older than this is fetched again
CACHE_MAX_AGE_S = 600.0
#: a cached answer that would refuse a server is fetched again when older than this
RECHECK_NEGATIVE_AFTER_S = 2.0

# what an input holds, for the reasons a user reads ("no checkpoint x", not "no ckpt_name x")
_NOUNS = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "vae_name": "VAE",
    "control_net_name": "ControlNet model",
    "unet_name": "diffusion model",
    "clip_name": "CLIP model",
    "clip_name1": "CLIP model",
    "clip_name2": "CLIP model",
    "clip_name3": "CLIP model",
    "style_model_name": "style model",
    "gligen_name": "GLIGEN model",
    "hypernetwork_name": "hypernetwork",
    "config_name": "model config",
    "sampler_name": "sampler",
    "scheduler": "scheduler",
}
_UPSCALE_LOADERS = {"UpscaleModelLoader"}


class CompatState(str, Enum):
    COMPATIBLE = "compatible"
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"  # could not ask in time: not refused, the submit will tell


@dataclass(frozen=True)
class Problem:
    """One thing a server lacks for a workflow."""

    kind: str  # "missing_node" | "value_not_in_list" | "missing_input" | "invalid_workflow"
    text: str  # "no node ControlNetApplyAdvanced", "no checkpoint flux1-dev.safetensors"
    node_id: Optional[str] = None
    class_type: Optional[str] = None
    input_name: Optional[str] = None
    value: Any = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "node_id": self.node_id,
            "class_type": self.class_type,
            "input": self.input_name,
            "value": self.value
            if isinstance(self.value, (str, int, float, bool)) or self.value is None
            else repr(self.value),
        }


@dataclass(frozen=True)
class Compatibility:
    """The verdict for one server and one workflow."""

    server: str
    state: CompatState
    problems: Tuple[Problem, ...] = ()
    error: Optional[str] = None  # why it could not be checked (UNKNOWN)
    checked_at: float = 0.0

    @property
    def compatible(self) -> bool:
        return self.state is CompatState.COMPATIBLE

    @property
    def usable(self) -> bool:
        """Worth sending frames to: compatible, or not known to be incompatible."""
        return self.state is not CompatState.INCOMPATIBLE

    @property
    def reasons(self) -> Tuple[str, ...]:
        """Sentences naming the server: ``gpu3: no node ControlNetApplyAdvanced``."""
        if self.state is CompatState.UNKNOWN:
            return (f"{self.server}: could not check the workflow ({self.error or 'no answer'})",)
        return tuple(f"{self.server}: {p.text}" for p in self.problems)

    def to_json(self) -> Dict[str, Any]:
        return {
            "server": self.server,
            "state": self.state.value,
            "reasons": list(self.reasons),
            "problems": [p.to_json() for p in self.problems],
            "error": self.error,
        }


# -- what a workflow needs ---------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """The node classes a workflow uses and the nodes (id -> (class, inputs)) to validate."""

    classes: Tuple[str, ...]
    nodes: Tuple[Tuple[str, str, Mapping[str, Any]], ...]
    problems: Tuple[Problem, ...] = ()  # the workflow's own (same on every server)


def _prompts(workflow: Any) -> List[Mapping[str, Any]]:
    if isinstance(workflow, Mapping) and isinstance(workflow.get("prompt"), Mapping):
        workflow = workflow["prompt"]  # a POST /prompt body
    if isinstance(workflow, Mapping):
        if isinstance(workflow.get("nodes"), list) and "links" in workflow:
            raise WorkflowError(
                "This is a ComfyUI UI workflow (the editor's File > Save); export it with "
                "'Save (API Format)' to render it on the cluster"
            )
        return [workflow]
    if isinstance(workflow, Sequence) and not isinstance(workflow, (str, bytes)) and workflow:
        return [p for w in workflow for p in _prompts(w)]
    raise WorkflowError(f"A workflow must be a JSON object of nodes (API format), not {type(workflow).__name__}")


def workflow_requirements(workflow: Any) -> Requirements:
    """Classes and nodes of an API-format workflow (or a list of them: the frames of a batch).

    Raises :class:`WorkflowError` for something that is no API-format workflow at all."""
    classes: Dict[str, None] = {}
    nodes: Dict[Tuple[str, str, str], Tuple[str, str, Mapping[str, Any]]] = {}
    problems: List[Problem] = []
    for prompt in _prompts(workflow):
        for raw_id, node in prompt.items():
            node_id = str(raw_id)
            class_type = node.get("class_type") if isinstance(node, Mapping) else None
            if not isinstance(class_type, str) or not class_type:
                problems.append(
                    Problem("invalid_workflow", f"node {node_id} has no class_type (not an API-format node)", node_id)
                )
                continue
            classes.setdefault(class_type)
            inputs = node.get("inputs")
            if not isinstance(inputs, Mapping):
                inputs = {}
            # the frames of a batch differ in a few literals: validate each distinct node once
            key = (node_id, class_type, repr(sorted((str(k), repr(v)) for k, v in inputs.items())))
            nodes.setdefault(key, (node_id, class_type, inputs))
    unique = {(p.kind, p.node_id): p for p in problems}
    return Requirements(tuple(classes), tuple(nodes.values()), tuple(unique.values()))


# -- the per-server cache ------------------------------------------------------------------

_MISSING = object()


class ObjectInfoCache:
    """One server's answers to ``/object_info/{class}``: class -> spec, or missing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[str, Tuple[Any, float]] = {}
        self._generation = 0
        self.invalidations = 0

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """The server may have restarted (or had nodes/models installed): forget everything."""
        with self._lock:
            self._entries.clear()
            self._generation += 1
            self.invalidations += 1

    def get(self, class_type: str, now: float) -> Tuple[bool, Any, float]:
        """(known, spec or None when the class is missing, fetched_at)."""
        with self._lock:
            entry = self._entries.get(class_type)
        if entry is None or now - entry[1] > CACHE_MAX_AGE_S:
            return False, None, 0.0
        spec, at = entry
        return True, (None if spec is _MISSING else spec), at

    def put(self, class_type: str, spec: Optional[Mapping[str, Any]], at: float, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # fetched before an invalidation: may describe the old server
            self._entries[class_type] = (_MISSING if spec is None else spec, at)


def _cache_of(server: Any) -> ObjectInfoCache:
    cache = getattr(server, "object_info", None)
    if not isinstance(cache, ObjectInfoCache):
        cache = ObjectInfoCache()
        try:
            server.object_info = cache
        except AttributeError:
            pass
    return cache


def parse_class_info(body: Any, class_type: str) -> Optional[Mapping[str, Any]]:
    """``GET /object_info/{class}`` -> the class spec, or None when the server lacks the class.

    Raises ValueError for a body not shaped as ComfyUI answers."""
    if not isinstance(body, Mapping):
        raise ValueError("object_info is not a JSON object")
    if not body:
        return None  # ComfyUI answers {} for a class it does not have
    spec = body.get(class_type)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("input", {}), Mapping):
        raise ValueError(f"object_info has no entry for {class_type}")
    return spec


def fetch_class_info(server: Any, class_type: str, timeout_s: float) -> Optional[Mapping[str, Any]]:
    """Ask one server about one class (network; raises ClusterError / ValueError)."""
    step = max(0.1, timeout_s)
    body = server.connection.get_json(
        "object_info/" + quote(class_type, safe=""), timeout=(min(3.05, step), step), total=step
    )
    return parse_class_info(body, class_type)


# -- the check ------------------------------------------------------------------------------


def _noun(class_type: str, input_name: str) -> str:
    if class_type in _UPSCALE_LOADERS and input_name == "model_name":
        return "upscale model"
    return _NOUNS.get(input_name, "")


def _inputs_of(spec: Mapping[str, Any]) -> Iterable[Tuple[str, str, Any]]:
    inputs = spec.get("input") if isinstance(spec.get("input"), Mapping) else {}
    for category in ("required", "optional"):
        group = inputs.get(category)
        if isinstance(group, Mapping):
            for name, input_spec in group.items():
                yield category, str(name), input_spec


def _validated_nodes(reqs: Requirements, specs: Mapping[str, Optional[Mapping[str, Any]]]) -> Set[str]:
    """The node ids an output node depends on: the only ones ComfyUI validates inputs of."""
    by_id: Dict[str, List[Mapping[str, Any]]] = {}
    todo: List[str] = []
    for node_id, class_type, inputs in reqs.nodes:
        by_id.setdefault(node_id, []).append(inputs)
        spec = specs.get(class_type)
        if spec is not None and spec.get("output_node") is True:
            todo.append(node_id)
    seen: Set[str] = set()
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        for inputs in by_id.get(node_id, ()):
            for value in inputs.values():
                if isinstance(value, list) and len(value) == 2:
                    todo.append(str(value[0]))
    return seen


def find_problems(reqs: Requirements, specs: Mapping[str, Optional[Mapping[str, Any]]]) -> List[Problem]:
    """What a server whose answers are ``specs`` (class -> spec, None = missing) would refuse.

    Only classes present in ``specs`` are judged (the rest were not answered)."""
    problems: List[Problem] = list(reqs.problems)
    seen_missing: Set[str] = set()
    for node_id, class_type, _inputs in reqs.nodes:
        if class_type in specs and specs[class_type] is None and class_type not in seen_missing:
            seen_missing.add(class_type)
            problems.append(Problem("missing_node", f"no node {class_type}", node_id, class_type))
    checked = _validated_nodes(reqs, specs)
    seen: Set[Tuple[str, str, str]] = set()
    for node_id, class_type, inputs in reqs.nodes:
        spec = specs.get(class_type)
        if spec is None or node_id not in checked:
            continue
        for category, name, input_spec in _inputs_of(spec):
            if not isinstance(input_spec, (list, tuple)) or not input_spec:
                continue
            kind = input_spec[0]
            extra = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], Mapping) else {}
            if name not in inputs:
                if category == "required" and (node_id, name, "") not in seen:
                    seen.add((node_id, name, ""))
                    problems.append(
                        Problem(
                            "missing_input",
                            f"node {node_id} ({class_type}) requires input '{name}', which the workflow does "
                            "not give (another version of this node?)",
                            node_id,
                            class_type,
                            name,
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, Mapping) and "__value__" in value:
                value = value["__value__"]
            elif isinstance(value, list):
                continue  # a link to another node's output, not a literal
            if not isinstance(kind, list):
                continue
            if "remote" in extra or any(str(k).endswith("_upload") for k in extra):
                continue  # filled or checked by the server itself at submit time
            try:
                present = value in kind
            except TypeError:
                present = False
            key = (class_type, name, repr(value))
            if present or key in seen:
                continue
            seen.add(key)
            noun = _noun(class_type, name)
            text = (
                f"no {noun} {value}"
                if noun
                else f"node {node_id} ({class_type}): {name} {value!r} is not among the server's choices"
            )
            problems.append(Problem("value_not_in_list", text, node_id, class_type, name, value))
    return problems


def _verdict(
    name: str, reqs: Requirements, specs: Mapping[str, Optional[Mapping[str, Any]]], error: Optional[str], now: float
) -> Compatibility:
    problems = find_problems(reqs, specs)
    if problems:
        return Compatibility(name, CompatState.INCOMPATIBLE, tuple(problems), checked_at=now)
    if error is not None or any(c not in specs for c in reqs.classes):
        return Compatibility(name, CompatState.UNKNOWN, error=error or "no answer in time", checked_at=now)
    return Compatibility(name, CompatState.COMPATIBLE, checked_at=now)


def check_servers(
    servers: Iterable[Any],
    workflow: Any,
    *,
    deadline: float = DEFAULT_DEADLINE_S,
) -> Dict[str, Compatibility]:
    """Compatibility of each server with ``workflow``, asked in parallel, within ``deadline``.

    ``servers`` are :class:`~.server.ComfyUIServer` objects (anything with ``name``,
    ``connection`` and an ``object_info`` cache). Never raises for server trouble: a
    server that does not answer in time is UNKNOWN. Raises :class:`WorkflowError` when
    ``workflow`` is no API-format workflow. Blocking: never call it on the UI thread or
    the dispatcher's loop thread.
    """
    reqs = workflow_requirements(workflow)
    servers = list(servers)
    started = time.monotonic()
    end = started + max(0.1, deadline)
    now = time.time()
    specs: Dict[str, Dict[str, Optional[Mapping[str, Any]]]] = {s.name: {} for s in servers}
    cached_at: Dict[Tuple[str, str], float] = {}
    errors: Dict[str, str] = {}
    lock = threading.Lock()

    def fetch(server: Any, class_type: str, generation: int) -> None:
        try:
            spec = fetch_class_info(server, class_type, end - time.monotonic())
        except ClusterError as e:
            with lock:
                errors.setdefault(server.name, user_message(e))
            return
        except ValueError as e:
            with lock:
                errors.setdefault(server.name, f"{server.name}: /object_info/{class_type}: {e}")
            return
        _cache_of(server).put(class_type, spec, time.time(), generation)
        with lock:
            specs[server.name][class_type] = spec

    def run(todo: List[Tuple[Any, str]]) -> None:
        if not todo:
            return
        pool = ThreadPoolExecutor(max_workers=min(16, len(todo)), thread_name_prefix="ncc-compat")
        try:
            futures = [pool.submit(fetch, s, c, _cache_of(s).generation) for s, c in todo]
            wait(futures, timeout=max(0.0, end - time.monotonic()))
        finally:
            pool.shutdown(wait=False)  # a late answer still fills the cache; nobody waits for it

    todo: List[Tuple[Any, str]] = []
    for server in servers:
        cache = _cache_of(server)
        for class_type in reqs.classes:
            known, spec, at = cache.get(class_type, now)
            if known:
                specs[server.name][class_type] = spec
                cached_at[(server.name, class_type)] = at
            else:
                todo.append((server, class_type))
    run(todo)
    # a refusal based on old cached answers is asked again: a model may have been copied in
    recheck: List[Tuple[Any, str]] = []
    for server in servers:
        with lock:
            mine = dict(specs[server.name])
        problems = find_problems(Requirements(reqs.classes, reqs.nodes), mine)
        for class_type in {p.class_type for p in problems if p.class_type}:
            at = cached_at.get((server.name, class_type))
            if at is not None and now - at > RECHECK_NEGATIVE_AFTER_S:
                # the cached answer stays the verdict if the new one does not come in time
                recheck.append((server, class_type))
    run(recheck)
    done = time.time()
    with lock:
        return {s.name: _verdict(s.name, reqs, dict(specs[s.name]), errors.get(s.name), done) for s in servers}


# -- telling the user ------------------------------------------------------------------------


def left_out(results: Mapping[str, Compatibility]) -> Dict[str, Tuple[str, ...]]:
    """Servers known to be unable to run the workflow -> their reasons."""
    return {name: c.reasons for name, c in results.items() if not c.usable}


def summary(results: Mapping[str, Compatibility]) -> str:
    """``rendering on 2 of 3 servers: gpu3: no node ControlNetApplyAdvanced`` (empty when all can)."""
    out = left_out(results)
    if not out:
        return ""
    usable = len(results) - len(out)
    reasons = "; ".join(r for rs in out.values() for r in rs)
    if usable == 0:
        return f"no server can run this workflow: {reasons}"
    return f"rendering on {usable} of {len(results)} servers: {reasons}"


def no_server_error(results: Mapping[str, Compatibility]) -> Optional[WorkflowError]:
    """The error to fail a batch with, before anything renders, when no server can run it."""
    if not results or any(c.usable for c in results.values()):
        return None
    first = next((p for c in results.values() for p in c.problems), None)
    return WorkflowError(
        "No server can run this workflow: " + "; ".join(r for c in results.values() for r in c.reasons),
        node_id=first.node_id if first else None,
        node_type=first.class_type if first else None,
        details={name: c.to_json() for name, c in results.items()},
    )


def format_matrix(results: Mapping[str, Compatibility]) -> List[str]:
    """Lines of the servers x workflow matrix for ``validate --workflow`` (one line per server)."""
    width = max((len(n) for n in results), default=0)
    lines = []
    for name, c in results.items():
        detail = ""
        if c.state is CompatState.INCOMPATIBLE:
            detail = "; ".join(p.text for p in c.problems)
        elif c.state is CompatState.UNKNOWN:
            detail = c.error or ""
        lines.append(f"{name:<{width}}  {c.state.value:<12}  {detail}".rstrip())
    return lines


__all__ = [
    "CompatState",
    "Compatibility",
    "ObjectInfoCache",
    "Problem",
    "Requirements",
    "check_servers",
    "fetch_class_info",
    "find_problems",
    "format_matrix",
    "left_out",
    "no_server_error",
    "parse_class_info",
    "summary",
    "workflow_requirements",
]
