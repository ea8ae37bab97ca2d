"""Test-only ComfyUI nodes for nuke_comfy_cluster's real-ComfyUI tier (tests/real).

GPU work is emulated by sleeping, never by CPU work: on a 2-core machine shared
by several servers, CPU-bound nodes make every timing meaningless. Per-server
settings come from the environment the test harness gives each server:

NCC_TEST_SPEED   work is divided by this (default 1.0): a "faster GPU"
NCC_TEST_OOM     "1": NccTestSampler raises torch's CUDA out-of-memory error
                 (so does a sampler whose ``tag`` is "oom", on any server)
NCC_TEST_LOG     a file: every node run appends one JSON line, so a test sees
                 what actually ran (and what ComfyUI's cache skipped)

Copied into the built ComfyUI's custom_nodes/ by tests/real/conftest.py.
"""

import hashlib
import json
import os
import time

import comfy.model_management
import comfy.utils
import torch


def _speed():
    try:
        return max(1e-3, float(os.environ.get("NCC_TEST_SPEED", "1")))
    except ValueError:
        return 1.0


def _log(kind, **fields):
    path = os.environ.get("NCC_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(fields, kind=kind, t=time.time())) + "\n")


def _work(seconds, steps):
    """Sleep ``seconds`` in ``steps`` slices, with progress, honouring /interrupt."""
    steps = max(1, int(steps))
    bar = comfy.utils.ProgressBar(steps)
    for _ in range(steps):
        comfy.model_management.throw_exception_if_processing_interrupted()
        time.sleep(seconds / steps)
        bar.update(1)
    comfy.model_management.throw_exception_if_processing_interrupted()


def tag_colour(tag):
    """The RGB colour NccTestSampler paints for ``tag`` (tests compute it too)."""
    digest = hashlib.sha1(str(tag).encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


class NccTestLoader:
    """A model loader stand-in: takes ``seconds / speed`` each time it actually runs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ("STRING", {"default": "model-a"}),
                "seconds": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 600.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("NCC_MODEL",)
    FUNCTION = "load"
    CATEGORY = "ncc_test"

    def load(self, model_name, seconds):
        _log("load", model=model_name)
        _work(seconds / _speed(), 1)
        return ({"name": model_name},)


class NccTestSampler:
    """A sampler stand-in: ``seconds / speed`` in ``steps`` progress steps; paints a solid image
    whose colour derives from ``tag`` (a frame token makes each frame's content checkable)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("NCC_MODEL",),
                "tag": ("STRING", {"default": "0"}),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0, "step": 0.01}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 1000}),
                "width": ("INT", {"default": 8, "min": 1, "max": 4096}),
                "height": ("INT", {"default": 8, "min": 1, "max": 4096}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sample"
    CATEGORY = "ncc_test"

    def sample(self, model, tag, seconds, steps, width, height):
        _log("sample", model=model["name"], tag=tag)
        if os.environ.get("NCC_TEST_OOM") == "1" or tag == "oom":
            _work(seconds / _speed() / 2, 1)
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 4.50 GiB. GPU 0 has a total capacity of 7.79 GiB of "
                "which 1.12 GiB is free. (emulated by nuke_comfy_cluster's test node)"
            )
        _work(seconds / _speed(), steps)
        r, g, b = tag_colour(tag)
        image = torch.empty((1, height, width, 3), dtype=torch.float32)
        # +0.5: SaveImage truncates 255 * value to an integer
        image[..., 0], image[..., 1], image[..., 2] = (r + 0.5) / 255.0, (g + 0.5) / 255.0, (b + 0.5) / 255.0
        return (image,)


NODE_CLASS_MAPPINGS = {"NccTestLoader": NccTestLoader, "NccTestSampler": NccTestSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"NccTestLoader": "NCC test loader", "NccTestSampler": "NCC test sampler"}
