"""Per-server compatibility of a workflow: the pure check against real ComfyUI object_info
captures, and check_servers against simulators that lack a node or a checkpoint."""

from __future__ import annotations

import copy
import json
import time

import pytest
import requests

from nuke_comfy_cluster.core import compatibility as compat
from nuke_comfy_cluster.core.compatibility import (
    CompatState,
    check_servers,
    find_problems,
    parse_class_info,
    workflow_requirements,
)
from nuke_comfy_cluster.core.errors import WorkflowError
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.core.server import ComfyUIServer
from tests.conftest import load_capture, sim_configs, wait_until

# a real text-to-image graph: every loader and combo is on the path to the output
WF = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim_sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["1", 0],
            "positive": ["2", 0],
            "negative": ["3", 0],
            "latent_image": ["4", 0],
            "seed": 1,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    },
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "ImageInvert", "inputs": {"image": ["6", 0]}},
    "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "compat"}},
}


@pytest.fixture(scope="module")
def real_specs():
    """class -> spec, as a real ComfyUI 0.3.39 answers /object_info."""
    return load_capture("object_info_all.json")["body_json"]


def _specs_for(real_specs, workflow, drop=()):
    reqs = workflow_requirements(workflow)
    return reqs, {c: (None if c in drop else real_specs.get(c)) for c in reqs.classes}


# -- the pure check, against real ComfyUI's object_info ------------------------------------


def test_real_object_info_shapes_parse(captures):
    saved = json.loads((captures / "object_info_SaveImage.json").read_text())["body_json"]
    assert parse_class_info(saved, "SaveImage")["output_node"] is True
    unknown = json.loads((captures / "object_info_unknown_class.json").read_text())["body_json"]
    assert parse_class_info(unknown, "NoSuchNodeClass") is None
    with pytest.raises(ValueError):
        parse_class_info({"Other": {}}, "SaveImage")
    with pytest.raises(ValueError):
        parse_class_info(["not", "an", "object"], "SaveImage")


def test_missing_checkpoint_and_sampler_named_as_a_user_reads_them(real_specs):
    wf = copy.deepcopy(WF)
    wf["1"]["inputs"]["ckpt_name"] = "flux1-dev.safetensors"  # the capture's server has no checkpoint at all
    wf["5"]["inputs"]["sampler_name"] = "no_such_sampler"
    reqs, specs = _specs_for(real_specs, wf)
    texts = sorted(p.text for p in find_problems(reqs, specs))
    assert texts == ["no checkpoint flux1-dev.safetensors", "no sampler no_such_sampler"]


def test_missing_node_class_is_named_once(real_specs):
    wf = copy.deepcopy(WF)
    wf["9"] = {"class_type": "ImageInvert", "inputs": {"image": ["7", 0]}}
    reqs, specs = _specs_for(real_specs, wf, drop={"ImageInvert"})
    problems = [p for p in find_problems(reqs, specs) if p.kind == "missing_node"]
    assert [(p.text, p.class_type) for p in problems] == [("no node ImageInvert", "ImageInvert")]


def test_only_what_comfyui_itself_validates(real_specs):
    wf = copy.deepcopy(WF)
    wf["1"]["inputs"]["ckpt_name"] = next(
        iter(real_specs["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]), "x"
    )
    # a loader on no path to an output: ComfyUI never validates it, so neither do we
    wf["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "absent.safetensors"}}
    # an uploadable combo (LoadImage) is filled at submit time; a COMBO-with-options is not checked by 0.3.39
    wf["21"] = {"class_type": "LoadImage", "inputs": {"image": "frame_0001.png"}}
    wf["22"] = {"class_type": "ImageInvert", "inputs": {"image": ["21", 0]}}
    wf["23"] = {"class_type": "SaveImage", "inputs": {"images": ["22", 0], "filename_prefix": "x"}}
    wf["24"] = {"class_type": "StringTrim", "inputs": {"string": "a", "mode": "Sideways"}}
    reqs, specs = _specs_for(real_specs, wf)
    problems = find_problems(reqs, specs)
    # the captured server has no checkpoint, so only node 1's value can be wrong: nothing else is judged
    assert all(p.node_id == "1" for p in problems), problems


def test_required_input_missing_is_a_problem(real_specs):
    wf = copy.deepcopy(WF)
    del wf["5"]["inputs"]["scheduler"]
    reqs, specs = _specs_for(real_specs, wf)
    kinds = {(p.kind, p.input_name) for p in find_problems(reqs, specs) if p.node_id == "5"}
    assert ("missing_input", "scheduler") in kinds


def test_value_wrapper_and_links_like_comfyui(real_specs):
    wf = copy.deepcopy(WF)
    wf["5"]["inputs"]["sampler_name"] = {"__value__": "euler"}
    reqs, specs = _specs_for(real_specs, wf)
    assert not [p for p in find_problems(reqs, specs) if p.node_id == "5"]
    wf["5"]["inputs"]["sampler_name"] = {"__value__": "nope"}
    reqs, specs = _specs_for(real_specs, wf)
    assert [p.text for p in find_problems(reqs, specs) if p.node_id == "5"] == ["no sampler nope"]


def test_workflow_shapes():
    assert workflow_requirements({"prompt": WF}).classes == workflow_requirements(WF).classes
    frames = [copy.deepcopy(WF) for _ in range(3)]
    for i, f in enumerate(frames):
        f["5"]["inputs"]["seed"] = i
    reqs = workflow_requirements(frames)
    assert len([n for n in reqs.nodes if n[0] == "5"]) == 3 and len(reqs.classes) == 7
    with pytest.raises(WorkflowError, match="API Format"):
        workflow_requirements({"nodes": [], "links": []})
    with pytest.raises(WorkflowError, match="JSON object"):
        workflow_requirements("not a workflow")
    reqs = workflow_requirements({"1": {"inputs": {}}})
    assert [p.kind for p in reqs.problems] == ["invalid_workflow"]


# -- check_servers against simulators ---------------------------------------------------------


def test_check_servers_agrees_with_what_each_server_accepts(start_sims):
    (ok,) = start_sims([1.0], seconds=0.05)
    (no_node,) = start_sims([1.0], seconds=0.05, extra_args=["--without-nodes", "ImageInvert"])
    (no_model,) = start_sims([1.0], seconds=0.05, extra_args=["--models", "flux1-dev.safetensors"])
    servers = [ComfyUIServer(c) for c in sim_configs([ok, no_node, no_model])]
    results = check_servers(servers, WF)
    assert results["sim0"].state is CompatState.COMPATIBLE
    assert results["sim1"].reasons == ("sim1: no node ImageInvert",)
    assert results["sim2"].reasons == ("sim2: no checkpoint sim_sd15.safetensors",)
    assert compat.summary(results).startswith("rendering on 1 of 3 servers: sim1: no node ImageInvert")
    # the verdict is the server's own: each accepts exactly when found compatible
    for proc, name in ((ok, "sim0"), (no_node, "sim1"), (no_model, "sim2")):
        answer = requests.post(proc.url + "/prompt", json={"prompt": WF, "client_id": "t"}, timeout=5)
        assert (answer.status_code == 200) == results[name].compatible, (name, answer.text)
    # only the classes the workflow uses were asked, never the whole /object_info
    counts = servers[0].connection.request_counts
    assert counts.get("GET object_info") == 7, counts
    for s in servers:
        s.close()


def test_no_server_can_run_it_fails_before_anything_renders(start_sims):
    procs = start_sims([1.0, 1.0], seconds=0.05, extra_args=["--without-nodes", "ImageInvert"])
    servers = [ComfyUIServer(c) for c in sim_configs(procs)]
    started = time.monotonic()
    results = check_servers(servers, WF)
    error = compat.no_server_error(results)
    assert time.monotonic() - started < 5.0
    assert error is not None and "sim0: no node ImageInvert" in str(error) and "sim1" in str(error)
    assert error.node_id == "7" and error.node_type == "ImageInvert"
    for s in servers:
        s.close()


def test_hung_server_is_unknown_within_the_deadline(start_sims):
    ok, hung = start_sims([1.0, 1.0], seconds=0.05)
    hung.sigstop()
    servers = [ComfyUIServer(c) for c in sim_configs([ok, hung])]
    started = time.monotonic()
    results = check_servers(servers, WF, deadline=1.5)
    elapsed = time.monotonic() - started
    assert results["sim0"].compatible
    assert results["sim1"].state is CompatState.UNKNOWN and results["sim1"].usable
    assert elapsed < 4.0, elapsed  # the deadline, not the hung server's timeouts
    hung.sigcont()
    for s in servers:
        s.close()


def test_answers_are_cached_and_a_refusal_is_asked_again(start_sims, monkeypatch):
    (ok,) = start_sims([1.0], seconds=0.05)
    (no_model,) = start_sims([1.0], seconds=0.05, extra_args=["--models", "other.safetensors"])
    servers = [ComfyUIServer(c) for c in sim_configs([ok, no_model])]
    check_servers(servers, WF)
    before = [dict(s.connection.request_counts) for s in servers]
    monkeypatch.setattr(compat, "RECHECK_NEGATIVE_AFTER_S", -1.0)  # every cached refusal is old
    results = check_servers(servers, WF)
    assert results["sim0"].compatible and not results["sim1"].usable
    assert servers[0].connection.request_counts == before[0]  # all from the cache
    # the refusing server was asked again, for the one class it refused on only
    asked = servers[1].connection.request_counts["GET object_info"] - before[1]["GET object_info"]
    assert asked == 1
    servers[0].object_info.invalidate()
    check_servers(servers, WF)
    assert servers[0].connection.request_counts["GET object_info"] == 2 * before[0]["GET object_info"]
    for s in servers:
        s.close()


def test_a_restart_seen_by_the_pool_drops_the_cache(start_sims):
    (proc,) = start_sims([1.0], seconds=0.05)
    pool = ComfyUIServerPool(sim_configs([proc]), status_ttl=0.5)
    pool.start()
    try:
        server = pool.servers[0]
        assert wait_until(lambda: server.live, 10)
        check_servers([server], WF)
        known, _spec, _at = server.object_info.get("KSampler", time.time())
        assert known
        dropped = server.object_info.invalidations
        proc.restart()
        assert wait_until(lambda: server.object_info.invalidations > dropped, 15)
        assert not server.object_info.get("KSampler", time.time())[0]
    finally:
        pool.close()
