"""Setup vs per-frame split from two frames' prompts and the executing marks."""

from __future__ import annotations

from nuke_comfy_cluster.core.node_timing import split_times, static_nodes
from nuke_comfy_cluster.core.templating import frame_prompt

WF = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": "%d", "model": ["1", 0], "positive": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
}


def test_static_nodes_are_the_ones_no_frame_changes_and_not_downstream_of_one():
    prompts = [frame_prompt(WF, 1), frame_prompt(WF, 2)]
    assert static_nodes(prompts) == {"1", "2"}  # the sampler varies; the save is downstream of it


def test_a_single_prompt_takes_loaders_as_setup():
    assert static_nodes([WF]) == {"1"}


def test_split_times_cold_and_warm():
    static = frozenset({"1", "2"})
    marks = [("1", 10.0), ("2", 14.0), ("3", 14.5), ("4", 15.5)]
    assert split_times(marks, 15.6, static, []) == (4.5, True)
    warm = [("3", 20.0), ("4", 21.0)]
    assert split_times(warm, 21.1, static, ["1", "2"]) == (0.0, False)
    assert split_times([], 1.0, frozenset(), []) == (None, None)
