from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuke_comfy_cluster.core.errors import WorkflowError
from nuke_comfy_cluster.core.templating import (
    derive_seed,
    find_inputs,
    frame_prompt,
    seeded_prompt,
    substitute_frame,
    validate_workflow,
)


@pytest.mark.parametrize(
    "text, frame, expected",
    [
        ("plate.####.exr", 7, "plate.0007.exr"),
        ("plate.##.exr", 1001, "plate.1001.exr"),
        ("plate.%04d.exr", 12, "plate.0012.exr"),
        ("plate.%d.exr", 12, "plate.12.exr"),
        ("plate.{frame}.exr", 3, "plate.3.exr"),
        ("plate.{frame:05d}.exr", 3, "plate.00003.exr"),
        ("no token", 3, "no token"),
        ("a_####_b_%03d", 5, "a_0005_b_005"),
    ],
)
def test_frame_tokens(text, frame, expected):
    assert substitute_frame(text, frame) == expected


WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "/shots/in/plate.####.png"}},
    "2": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "model": ["9", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "out/shot_%04d"}},
}


def test_frame_prompt_substitutes_strings_only_and_copies():
    p = frame_prompt(WORKFLOW, 1001)
    assert p["1"]["inputs"]["image"] == "/shots/in/plate.1001.png"
    assert p["3"]["inputs"]["filename_prefix"] == "out/shot_1001"
    assert p["2"]["inputs"]["model"] == ["9", 0]
    assert WORKFLOW["1"]["inputs"]["image"].endswith("####.png")  # original untouched


def test_hashes_in_prompt_text_are_not_frame_tokens():
    wf = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a #1 best shot, %04d", "clip": ["9", 1]}},
        "2": {"class_type": "Custom", "inputs": {"path": "plates/p_##", "note": "take ## of {frame}"}},
    }
    p = frame_prompt(wf, 7)
    assert p["1"]["inputs"]["text"] == "a #1 best shot, 0007"
    assert p["2"]["inputs"]["path"] == "plates/p_07"
    assert p["2"]["inputs"]["note"] == "take ## of 7"


def test_seeds_depend_on_base_frame_iteration_only():
    a = seeded_prompt(WORKFLOW, 42, 1001, 3)["2"]["inputs"]["seed"]
    b = seeded_prompt(WORKFLOW, 42, 1001, 3)["2"]["inputs"]["seed"]
    c = seeded_prompt(WORKFLOW, 42, 1001, 4)["2"]["inputs"]["seed"]
    d = seeded_prompt(WORKFLOW, 42, 1002, 3)["2"]["inputs"]["seed"]
    assert a == b == derive_seed(42, 1001, 3)
    assert len({a, c, d}) == 3
    assert derive_seed(42, None, 0) == 42


@given(st.integers(min_value=0, max_value=2**64), st.one_of(st.none(), st.integers(-10**6, 10**6)), st.integers(0, 10**4))
def test_seed_is_a_valid_comfy_seed(base, frame, iteration):
    seed = derive_seed(base, frame, iteration)
    assert 0 <= seed < 2**53


def test_find_inputs_lists_load_save_and_seed():
    found = find_inputs(WORKFLOW)
    assert [i.node_id for i in found["load_image"]] == ["1"]
    assert [i.node_id for i in found["save_image"]] == ["3"]
    assert [(i.node_id, i.input) for i in found["seed"]] == [("2", "seed")]


@pytest.mark.parametrize("bad", [None, [], {}, {"nodes": [], "links": []}, {"1": {"inputs": {}}}, {"1": "x"}])
def test_validate_workflow_refuses_non_api_format(bad):
    with pytest.raises(WorkflowError):
        validate_workflow(bad)
