"""Differential conformance: the same small workflows on the simulator and on real ComfyUI 0.3.39,
compared as a client sees them (status codes, bodies, websocket messages and their order,
execution_cached, /history and /queue shapes, file names and pixels).

Ids, timestamps, queue numbers and client ids are normalised; everything else must be
equal, or it is a difference listed in the simulator's docs (nuke_comfy_cluster/sim/__init__.py,
"Known differences") and asserted here as such, so a change on either side shows up.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest
import requests

from nuke_comfy_cluster.sim.png import png_first_pixel, solid_png
from nuke_comfy_cluster.sim.process import SimProcess
from nuke_comfy_cluster.sim.testkit import WsRecorder, key_shape, wait_idle

from .helpers import png_text, sampler_workflow, unique

pytestmark = [pytest.mark.real, pytest.mark.integration, pytest.mark.timeout(600)]

T = 10
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Target(NamedTuple):
    name: str
    url: str
    ws_url: str
    input_dir: Path
    output_dir: Path


@pytest.fixture(scope="module")
def sim():
    # the real fleet's "fast" box has one checkpoint, a.safetensors, and no ImageBlur failure
    args = ["--models", "a.safetensors", "--fail-class", "ImageBlur"]
    with SimProcess(seconds=0.2, name="conformance", extra_args=args) as proc:
        yield proc


@pytest.fixture
def pair(fleet, sim) -> Tuple[Target, Target]:
    wait_idle(sim.url)
    real = fleet["fast"]
    return (
        Target("sim", sim.url, sim.ws_url, Path(sim.input_dir), Path(sim.output_dir)),
        Target("real", real.url, real.ws_url, real.input_dir, real.output_dir),
    )


def norm(value: Any, key: str = "") -> Any:
    """Ids, times and numbers that differ between any two servers, replaced by placeholders."""
    if key in ("timestamp",):
        return "<ts>"
    if key in ("number",) and isinstance(value, (int, float)):
        return "<n>"
    if key in ("sid", "client_id"):
        return "<client>"
    if key == "errors" and isinstance(value, list):
        # real ComfyUI validates a node's inputs in set order (random per process): see the sim's docs
        return sorted((norm(v) for v in value), key=lambda e: json.dumps(e, sort_keys=True))
    if isinstance(value, dict):
        return {k: norm(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uuid>", value)
    return value


def ws_kinds(messages: List[Dict[str, Any]]) -> List[str]:
    return [m["type"] for m in messages]


class Run(NamedTuple):
    post: Dict[str, Any]
    messages: List[Dict[str, Any]]
    history: Dict[str, Any]


def run(target: Target, prompt: Dict[str, Any], ws: WsRecorder, extra: Optional[Dict[str, Any]] = None) -> Run:
    ws.clear()
    body: Dict[str, Any] = {"prompt": prompt, "client_id": ws.client_id}
    if extra:
        body["extra_data"] = extra
    response = requests.post(target.url + "/prompt", json=body, timeout=T)
    assert response.status_code == 200, (target.name, response.text)
    prompt_id = response.json()["prompt_id"]
    ws.wait_done(prompt_id, 60)
    history = requests.get(f"{target.url}/history/{prompt_id}", timeout=T).json()[prompt_id]
    history["prompt"][0] = "<n>"  # the queue number: how many prompts this server has seen
    return Run(response.json(), ws.snapshot(), history)


def both(pair, fn: Callable[[Target, WsRecorder], Any]) -> Tuple[Any, Any]:
    results = []
    for target in pair:
        with WsRecorder(target.ws_url, f"conf-{uuid.uuid4().hex[:8]}") as ws:
            ws.wait_for(lambda m: m["type"] == "status")
            results.append(fn(target, ws))
    return results[0], results[1]


def image_workflow(colour: int, prefix: str, width: int = 16, batch: int = 1) -> Dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": 8, "batch_size": batch, "color": colour},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def view(target: Target, image: Dict[str, str]) -> Tuple[int, str, str, Optional[Tuple[int, int, int]]]:
    response = requests.get(target.url + "/view", params=image, timeout=T)
    pixel = png_first_pixel(response.content) if response.status_code == 200 else None
    return (
        response.status_code,
        response.headers.get("Content-Type", ""),
        response.headers.get("Content-Disposition", ""),
        pixel,
    )


# ---- 400 bodies ---------------------------------------------------------------------------------


def test_rejections_match(pair, fleet):
    from nuke_comfy_cluster.sim.testkit import load_workflow

    existing = "conf_in.png"
    for target in pair:
        (target.input_dir / existing).write_bytes(solid_png(8, 8, (9, 9, 9)))
    cases = {
        "bad input": load_workflow("invalid_input"),
        "value not in list": {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "zzz.safetensors"}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
        },
        "combo mismatch": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {
                "class_type": "ImageScale",
                "inputs": {"image": ["1", 0], "upscale_method": "bogus", "width": 8, "height": 8, "crop": "disabled"},
            },
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        },
        "missing input file": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "no_such_file.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        },
        "no outputs": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}},
        "missing class_type": {"1": {"inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}},
        "link type mismatch": {
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        },
        "required input missing": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
    }
    differences = []
    for name, prompt in cases.items():
        answers = []
        for target in pair:
            response = requests.post(target.url + "/prompt", json={"prompt": copy.deepcopy(prompt)}, timeout=T)
            answers.append((response.status_code, response.headers.get("Content-Type"), norm(response.json())))
        if answers[0] != answers[1]:
            differences.append((name, answers[0], answers[1]))
    assert differences == [], json.dumps(differences, indent=1)[:6000]

    for target in pair:  # no prompt at all; malformed JSON
        response = requests.post(target.url + "/prompt", json={"client_id": "x"}, timeout=T)
        assert response.status_code == 400 and response.json()["error"]["type"] == "no_prompt", target.name
    malformed = [requests.post(t.url + "/prompt", data=b'{"prompt": {', timeout=T) for t in pair]
    assert [(r.status_code, r.headers["Content-Type"], r.text) for r in malformed][0] == [
        (r.status_code, r.headers["Content-Type"], r.text) for r in malformed
    ][1]


def test_missing_node_body_matches_a_server_without_the_custom_node(pair, fleet):
    # the real box started with --disable-all-custom-nodes; the simulator has no NccTest* classes either
    prompt = sampler_workflow("m", 0.1, 0.1)
    sim_answer = requests.post(pair[0].url + "/prompt", json={"prompt": prompt}, timeout=T)
    real_answer = requests.post(fleet["bare"].url + "/prompt", json={"prompt": prompt}, timeout=T)
    assert (sim_answer.status_code, sim_answer.json()) == (real_answer.status_code, real_answer.json())
    assert real_answer.json()["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NccTestLoader does not exist.",
        "details": "Node ID '#1'",
        "extra_info": {},
    }
    assert requests.get(fleet["bare"].url + "/object_info/NccTestSampler", timeout=T).json() == {}


# ---- a run: messages, history, files ------------------------------------------------------------


def test_success_run_messages_history_and_files_match(pair):
    prefix = f"{unique('conf')}/%width%x%height%/img"

    def scenario(target, ws):
        result = run(target, image_workflow(0x336699, prefix, width=24, batch=2), ws)
        images = result.history["outputs"]["3"]["images"]
        return result, images, [view(target, image) for image in images]

    (sim_run, sim_images, sim_views), (real_run, real_images, real_views) = both(pair, scenario)
    assert ws_kinds(sim_run.messages) == ws_kinds(real_run.messages)
    assert norm(sim_run.messages) == norm(real_run.messages)
    assert key_shape(sim_run.post) == key_shape(real_run.post)
    assert norm(sim_run.history) == norm(real_run.history)
    assert sim_images == real_images  # file naming: subfolder with %width%x%height%, counters per batch
    assert [v[:3] for v in sim_views] == [v[:3] for v in real_views]  # status, Content-Type, Content-Disposition
    # pixels: ComfyUI computes in float32 and SaveImage truncates, so a channel may be 1 lower (known)
    assert sim_views[0][3] == (0xFF - 0x33, 0xFF - 0x66, 0xFF - 0x99)
    for sim_view, real_view in zip(sim_views, real_views):
        assert all(0 <= s - r <= 1 for s, r in zip(sim_view[3], real_view[3])), (sim_view, real_view)


def test_cache_semantics_match(pair):
    prefix = unique("cache")

    def scenario(target, ws):
        seen = []
        for prompt in (
            image_workflow(0x010203, prefix),  # cold
            image_workflow(0x010203, prefix),  # identical: everything cached, no new file
            image_workflow(0x010203, prefix + "b"),  # only SaveImage changed
            image_workflow(0x040506, prefix),  # another prompt evicts ...
            image_workflow(0x010203, prefix),  # ... so the first one runs again
        ):
            result = run(target, prompt, ws)
            cached = next(m for m in result.messages if m["type"] == "execution_cached")["data"]["nodes"]
            seen.append((cached, ws_kinds(result.messages), result.history["outputs"]))
        return seen

    sim_seen, real_seen = both(pair, scenario)
    assert sim_seen == real_seen
    assert [cached for cached, _, _ in real_seen] == [[], ["1", "2", "3"], ["1", "2"], [], []]


def test_runtime_error_oom_matches(pair, fleet):
    def scenario(target, ws):
        if target.name == "sim":
            prompt = {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
                "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "oom"}},
            }
        else:
            prompt = sampler_workflow(unique("oom"), 0.1, 0.1, tag="oom")
        return run(target, prompt, ws)

    sim_run, real_run = both(pair, scenario)
    # the test nodes report progress before failing; ImageBlur does not: compare the rest
    assert [k for k in ws_kinds(sim_run.messages) if k != "progress"] == [
        k for k in ws_kinds(real_run.messages) if k != "progress"
    ]
    sim_error, real_error = (
        next(m for m in r.messages if m["type"] == "execution_error")["data"] for r in (sim_run, real_run)
    )
    assert set(sim_error) == set(real_error)
    assert sim_error["exception_type"] == real_error["exception_type"] == "torch.OutOfMemoryError"
    assert real_error["exception_message"].startswith("CUDA out of memory.")
    assert sim_error["exception_message"].startswith("CUDA out of memory.")
    assert (
        (sim_error["node_id"], sim_error["executed"])
        == (real_error["node_id"], real_error["executed"])
        == (
            "2",
            ["1"],
        )
    )
    assert key_shape(norm(sim_run.history)) == key_shape(norm(real_run.history))
    assert sim_run.history["status"]["status_str"] == real_run.history["status"]["status_str"] == "error"


# ---- queue, interrupt, delete -------------------------------------------------------------------


def _busy_prompt(target: Target, tag: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A prompt that runs ~3 s with progress: the test sampler on real, a KSampler on the simulator."""
    if target.name == "real":
        return sampler_workflow(unique("busy"), 3.0, 0.0, tag=tag), {}
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": abs(hash(tag)) % 1000,
                "steps": 3,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["4", 0],
                "negative": ["4", 0],
                "latent_image": ["2", 0],
                "denoise": 1.0,
            },
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": tag, "clip": ["1", 1]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "busy"}},
    }
    return prompt, {"sim_seconds": 3.0}


def test_queue_progress_interrupt_and_delete_match(pair):
    def scenario(target, ws):
        posted = []
        for tag in ("q1", "q2", "q3"):
            prompt, extra = _busy_prompt(target, tag)
            body = {"prompt": prompt, "client_id": ws.client_id, "extra_data": extra}
            posted.append(requests.post(target.url + "/prompt", json=body, timeout=T).json()["prompt_id"])
        ws.wait_for(lambda m: m["type"] == "progress", 30)
        queue = requests.get(target.url + "/queue", timeout=T).json()
        remaining = requests.get(target.url + "/prompt", timeout=T).json()
        deleted = requests.post(target.url + "/queue", json={"delete": [posted[2]]}, timeout=T)
        after_delete = requests.get(target.url + "/queue", timeout=T).json()
        interrupted = requests.post(target.url + "/interrupt", timeout=T)
        ws.wait_done(posted[0], 30)
        ws.wait_for(lambda m: m["type"] == "execution_start" and m["data"]["prompt_id"] == posted[1], 30)
        requests.post(target.url + "/interrupt", timeout=T)
        ws.wait_done(posted[1], 30)
        history = requests.get(f"{target.url}/history/{posted[0]}", timeout=T).json()[posted[0]]
        gone = requests.get(f"{target.url}/history/{posted[2]}", timeout=T).json()
        progress = next(m for m in ws.snapshot() if m["type"] == "progress")["data"]
        interrupt_msg = next(m for m in ws.snapshot() if m["type"] == "execution_interrupted")["data"]
        shapes = {
            "queue": key_shape(_strip_prompts(queue)),
            "queue_lengths": (len(queue["queue_running"]), len(queue["queue_pending"])),
            "after_delete": (len(after_delete["queue_running"]), len(after_delete["queue_pending"])),
            "remaining": remaining,
            "delete": (deleted.status_code, deleted.content),
            "interrupt": (interrupted.status_code, interrupted.content),
            "progress": sorted(progress),
            "interrupted": sorted(interrupt_msg),
            "history_status": (history["status"]["status_str"], history["status"]["completed"]),
            "history_message_kinds": [k for k, _ in history["status"]["messages"]],
            "deleted_history": gone,
        }
        return shapes

    sim_shapes, real_shapes = both(pair, scenario)
    assert sim_shapes == real_shapes
    assert real_shapes["queue_lengths"] == (1, 2) and real_shapes["after_delete"] == (1, 1)


def _strip_prompts(queue: Dict[str, Any]) -> Dict[str, Any]:
    # the two servers run different busy workflows: compare the item structure, not the prompts
    return {k: [item[:2] + ["<prompt>"] + item[3:] for item in items] for k, items in queue.items()}


# ---- uploads, /view, info routes ----------------------------------------------------------------


def test_upload_and_view_match(pair):
    name, prefix = f"{unique('up')}.png", unique("ld")
    one, two = solid_png(8, 8, (1, 2, 3)), solid_png(8, 8, (4, 5, 6))

    def scenario(target, ws):
        def upload(data, **form):
            files = {"image": (name, data, "image/png")}
            response = requests.post(target.url + "/upload/image", files=files, data=form, timeout=T)
            return response.status_code, response.json() if response.status_code == 200 else response.text

        answers = [
            upload(one),
            upload(one),  # same bytes: same name
            upload(two),  # other bytes: renamed "name (1).png"
            upload(two, overwrite="true"),
            upload(one, subfolder="sub/dir"),
            upload(one, type="temp"),
        ]
        views = [
            view(target, {"filename": name, "type": "input"}),
            view(target, {"filename": name, "subfolder": "sub/dir", "type": "input"}),
            view(target, {"filename": "nope.png", "type": "input"}),
            view(target, {"filename": "../" + name, "type": "input"}),
            view(target, {"filename": name, "subfolder": "../..", "type": "input"}),
        ]
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": f"sub/dir/{name}"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        }
        result = run(target, prompt, ws, extra={"extra_pnginfo": {"ncc": {"job": "j1"}}})
        image = result.history["outputs"]["3"]["images"][0]
        text = png_text(requests.get(target.url + "/view", params=image, timeout=T).content)
        return answers, views, ws_kinds(result.messages), view(target, image)[3], text

    sim_result, real_result = both(pair, scenario)
    assert sim_result[:4] == real_result[:4]
    assert real_result[3] == (254, 253, 252)
    # the PNG holds the prompt as executed: LoadImage carries "is_changed" (the file's sha256)
    sim_text, real_text = sim_result[4], real_result[4]
    assert sorted(sim_text) == sorted(real_text) == ["ncc", "prompt"]
    assert json.loads(sim_text["prompt"]) == json.loads(real_text["prompt"])
    assert sim_text["prompt"] == real_text["prompt"]  # byte for byte, key order included
    assert json.loads(real_text["prompt"])["1"]["is_changed"] == [hashlib.sha256(one).hexdigest()]
    assert json.loads(sim_text["ncc"]) == json.loads(real_text["ncc"]) == {"job": "j1"}


def test_absolute_input_path_matches(pair, tmp_path):
    # LoadImage takes an absolute path too (what a client on a shared drive sends)
    picture = tmp_path / "abs.png"
    picture.write_bytes(solid_png(8, 8, (30, 60, 90)))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": str(picture)}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": unique("abs")}},
    }

    def scenario(target, ws):
        response = requests.post(target.url + "/prompt", json={"prompt": prompt, "client_id": ws.client_id}, timeout=T)
        if response.status_code != 200:
            return response.status_code, norm(response.json()), None
        ws.wait_done(response.json()["prompt_id"], 60)
        entry = requests.get(f"{target.url}/history/{response.json()['prompt_id']}", timeout=T).json()
        outputs = next(iter(entry.values()))["outputs"]
        return response.status_code, None, view(target, outputs["3"]["images"][0])[3] if outputs else None

    sim_result, real_result = both(pair, scenario)
    assert sim_result == real_result


def test_info_routes_match(pair):
    routes = [
        "/object_info/SaveImage",
        "/object_info/CheckpointLoaderSimple",
        "/object_info/EmptyImage",
        "/object_info/NoSuchNode",
        "/models/checkpoints",
        "/history/no-such-id",
        "/embeddings",
    ]
    for route in routes:
        answers = [requests.get(t.url + route, timeout=T) for t in pair]
        assert [(a.status_code, a.json()) for a in answers][0] == [(a.status_code, a.json()) for a in answers][1], route
    shapes = [key_shape(requests.get(t.url + "/system_stats", timeout=T).json()) for t in pair]
    assert shapes[0]["system"].keys() <= shapes[1]["system"].keys()
    assert shapes[0]["devices"] == shapes[1]["devices"]
    prompts = [requests.get(t.url + "/prompt", timeout=T).json() for t in pair]
    assert prompts[0] == prompts[1] == {"exec_info": {"queue_remaining": 0}}
    unknown = [requests.get(t.url + "/no/such/route", timeout=T) for t in pair]
    assert [u.status_code for u in unknown] == [404, 404]
