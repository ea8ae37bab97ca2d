"""Per-frame and per-iteration prompts from one API-format workflow.

Frame tokens in any string input: ``%04d`` / ``%d`` (printf style),
``{frame}`` / ``{frame:04d}``; and ``####`` (Nuke style, width = number of #) in
paths and file names (inputs like ``image`` / ``filename_prefix``, or values with a
path separator or a file extension), so "#1" in prompt text stays as written. Seeds for
iterations come from (base seed, frame, iteration) only — never from the server
that runs them — so any server reproduces the same frame.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .errors import WorkflowError

Workflow = Dict[str, Any]

SEED_INPUTS = ("seed", "noise_seed")
MAX_SEED = 2**53 - 1  # what ComfyUI's JSON (JavaScript numbers) keeps exactly

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%(0?)(\d*)d")
_BRACES = re.compile(r"\{frame(?::(0?)(\d+)d)?\}")


#: inputs whose ``#`` runs are frame tokens even without a path separator
PATH_INPUTS = ("image", "filename_prefix", "path", "file", "filename", "directory", "video", "folder")
_PATHLIKE = re.compile(r"[/\\]|\.[A-Za-z0-9]{2,5}$")


def hashes_are_frames(key: str, value: str) -> bool:
    """``#`` is a frame token in paths and file names, not in prompt text ("#1 best")."""
    return key.lower() in PATH_INPUTS or bool(_PATHLIKE.search(value))


def substitute_frame(text: str, frame: int, hashes: bool = True) -> str:
    """Replace every frame token in ``text`` by ``frame`` (``#`` runs only when ``hashes``)."""

    def pad(width: int) -> str:
        sign = "-" if frame < 0 else ""
        return sign + str(abs(frame)).zfill(max(width - len(sign), 1))

    if hashes:
        text = _HASHES.sub(lambda m: pad(len(m.group(0))), text)
    text = _PRINTF.sub(
        lambda m: pad(int(m.group(2) or 0)) if m.group(1) else str(frame).rjust(int(m.group(2) or 0)), text
    )
    text = _BRACES.sub(lambda m: pad(int(m.group(2))) if m.group(2) else str(frame), text)
    return text


def has_frame_token(text: str) -> bool:
    return bool(_HASHES.search(text) or _PRINTF.search(text) or _BRACES.search(text))


def derive_seed(base_seed: int, frame: Optional[int], iteration: int) -> int:
    """A deterministic seed for (base seed, frame, iteration); iteration 0 of no frame is the base seed."""
    if frame is None and iteration == 0:
        return base_seed % (MAX_SEED + 1)
    key = "{}:{}:{}".format(base_seed, "" if frame is None else frame, iteration).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & MAX_SEED


def validate_workflow(workflow: Any, origin: str = "workflow") -> Workflow:
    """Check the API-format shape ({node_id: {class_type, inputs}}) before anything is sent."""
    if not isinstance(workflow, dict) or not workflow:
        raise WorkflowError(
            f"{origin} is not an API-format ComfyUI workflow (expected an object of nodes; "
            "use 'Save (API Format)' in ComfyUI)"
        )
    if "nodes" in workflow and "links" in workflow:
        raise WorkflowError(f"{origin} is a UI-format workflow; export it with 'Save (API Format)'")
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"{origin}: node {node_id!r} has no class_type", node_id=str(node_id))
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"{origin}: node {node_id!r} inputs is not an object", node_id=str(node_id))
    return workflow


def frame_prompt(workflow: Workflow, frame: int) -> Workflow:
    """A copy of ``workflow`` with frame tokens in string inputs replaced."""
    prompt = copy.deepcopy(workflow)
    for node in prompt.values():
        inputs = node.get("inputs", {})
        for key, value in list(inputs.items()):
            if isinstance(value, str) and has_frame_token(value):
                inputs[key] = substitute_frame(value, frame, hashes_are_frames(key, value))
    return prompt


def seeded_prompt(workflow: Workflow, base_seed: int, frame: Optional[int], iteration: int) -> Workflow:
    """A copy with every literal ``seed`` / ``noise_seed`` input set from (base, frame, iteration)."""
    prompt = copy.deepcopy(workflow)
    seed = derive_seed(base_seed, frame, iteration)
    for node in prompt.values():
        inputs = node.get("inputs", {})
        for key in SEED_INPUTS:
            value = inputs.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                inputs[key] = seed
    return prompt


@dataclass(frozen=True)
class WorkflowInput:
    node_id: str
    class_type: str
    input: str
    value: Any


def find_inputs(workflow: Workflow) -> Dict[str, List[WorkflowInput]]:
    """The workflow's LoadImage inputs, SaveImage prefixes and seeds (for the Nuke node's lists)."""
    found: Dict[str, List[WorkflowInput]] = {"load_image": [], "save_image": [], "seed": []}
    for node_id, node in sorted(workflow.items(), key=lambda kv: str(kv[0])):
        class_type = node.get("class_type", "")
        inputs = node.get("inputs", {})
        if class_type.startswith("LoadImage") and "image" in inputs:
            found["load_image"].append(WorkflowInput(str(node_id), class_type, "image", inputs["image"]))
        if class_type in ("SaveImage", "SaveEXR", "SaveImageExtended") or "filename_prefix" in inputs:
            found["save_image"].append(
                WorkflowInput(str(node_id), class_type, "filename_prefix", inputs.get("filename_prefix"))
            )
        for key in SEED_INPUTS:
            if key in inputs and isinstance(inputs[key], int) and not isinstance(inputs[key], bool):
                found["seed"].append(WorkflowInput(str(node_id), class_type, key, inputs[key]))
    return found
