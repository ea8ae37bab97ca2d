"""The ComfyUI simulator against the captures of a real ComfyUI 0.3.39 server.

Real simulator processes on 127.0.0.1, plain ``requests`` and ``websocket-client``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from nuke_comfy_cluster.sim.png import PNG_SIGNATURE, png_first_pixel, png_size, solid_png
from nuke_comfy_cluster.sim.process import SimProcess, start_cluster, stop_all
from nuke_comfy_cluster.sim.testkit import (
    WsRecorder,
    capture_messages,
    key_shape,
    load_capture,
    load_workflow,
    shape_of,
    uncached,
    wait_idle,
)

PROTO = Path(
    os.environ.get("COMFYUI_PROTOCOL_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "comfyui-protocol"
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

if not (PROTO / "captures").is_dir():  # the simulator's truth: missing is a failure, never a skip
    pytest.fail(f"protocol captures not found at {PROTO} (set COMFYUI_PROTOCOL_DIR)", pytrace=False)

T = 5  # generous HTTP timeout: other engineers' tests share the two cores


def capture(name: str) -> Any:
    return load_capture(name, PROTO)


def workflow(name: str, colour: Any = None) -> Dict[str, Any]:
    return load_workflow(name, colour, PROTO)


def ws_types(name: str) -> List[str]:
    return [m["type"] for m in capture_messages(name, PROTO)]


def post_prompt(sim: SimProcess, prompt: Dict[str, Any], client_id: Any = "rigA", **extra: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {"prompt": prompt}
    if client_id is not None:
        body["client_id"] = client_id
    body.update(extra)
    response = requests.post(sim.url + "/prompt", json=body, timeout=T)
    assert response.status_code == 200, response.text
    return response.json()


def run_messages(recorder: WsRecorder, prompt_id: str, timeout: float = 10) -> List[Dict[str, Any]]:
    """Wait for the prompt's last message; everything recorded since the recorder was cleared."""
    recorder.wait_done(prompt_id, timeout)
    return recorder.snapshot()


def types_of(messages: List[Dict[str, Any]]) -> List[str]:
    return [m["type"] for m in messages]


@pytest.fixture(scope="module")
def shared_sim():
    with SimProcess(seconds=0.2, name="shared") as sim:
        yield sim


@pytest.fixture
def sim(shared_sim):
    """The shared simulator, idle and without faults."""
    shared_sim.reset_faults()
    requests.post(shared_sim.url + "/queue", json={"clear": True}, timeout=T)
    requests.post(shared_sim.url + "/interrupt", timeout=T)
    wait_idle(shared_sim.url)
    return shared_sim


@pytest.fixture
def ws_a(sim):
    recorder = WsRecorder(sim.ws_url, f"A-{uuid.uuid4().hex[:6]}")
    recorder.wait_for(lambda m: m["type"] == "status")
    recorder.clear()
    yield recorder
    recorder.close()


@pytest.fixture
def observer(sim):
    recorder = WsRecorder(sim.ws_url, f"B-{uuid.uuid4().hex[:6]}")
    recorder.wait_for(lambda m: m["type"] == "status")
    recorder.clear()
    yield recorder
    recorder.close()


def client_id_of(recorder: WsRecorder) -> str:
    assert recorder.client_id is not None
    return recorder.client_id


# ---- process helper -------------------------------------------------------------------------


def test_ready_line_is_the_only_stdout_and_port_is_served(shared_sim):
    with open(shared_sim._stdout_path, encoding="utf-8") as handle:
        assert handle.read() == f"SIM READY {shared_sim.port}\n"
    info = shared_sim.info()
    assert info["port"] == shared_sim.port and info["pid"] == shared_sim.pid and info["name"] == "shared"
    assert Path(info["output_dir"]) == Path(shared_sim.output_dir)


def test_context_manager_stops_and_cleans_up():
    with SimProcess(seconds=0.1) as sim:
        pid, workdir = sim.pid, sim._tmp
        assert requests.get(sim.url + "/prompt", timeout=T).status_code == 200
    assert not sim.alive and sim.returncode == 0  # SIGTERM is a clean exit
    assert workdir is not None and not os.path.exists(workdir)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_start_cluster_and_stop_all():
    procs = start_cluster([1.0, 2.5], seconds=0.1)
    try:
        assert len({p.port for p in procs}) == 2
        assert [p.info()["speed"] for p in procs] == [1.0, 2.5]
    finally:
        stop_all(procs)
    assert not any(p.alive for p in procs)
    assert all(p._tmp is None for p in procs)


def test_simulator_exits_when_its_parent_dies(tmp_path):
    # A parent killed by SIGKILL cannot clean up: the simulator must notice by itself.
    script = (
        "import sys, time\n"
        "from nuke_comfy_cluster.sim.process import SimProcess\n"
        "sim = SimProcess(seconds=0.1).start()\n"
        "print(sim.pid, sim._tmp, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid_text, workdir = parent.stdout.readline().split()
    finally:
        parent.kill()
        parent.wait(timeout=5)
    sim_pid = int(pid_text)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _running(sim_pid):
            time.sleep(0.05)
        assert not _running(sim_pid), "simulator outlived its parent"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---- HTTP shapes ----------------------------------------------------------------------------


def test_simple_gets_match_captures(sim):
    for name, path in [
        ("get_queue_idle.json", "/queue"),
        ("api_prefix_get_queue.json", "/api/queue"),
        ("get_prompt_idle.json", "/prompt"),
        ("history_unknown_id.json", "/history/00000000-0000-0000-0000-000000000000"),
        ("object_info_unknown_class.json", "/object_info/NoSuchNodeClass"),
        ("object_info_SaveImage.json", "/object_info/SaveImage"),
    ]:
        expected = capture(name)
        response = requests.get(sim.url + path, timeout=T)
        assert response.status_code == expected["status"], path
        assert response.headers["Content-Type"] == expected["content_type"], path
        assert response.json() == expected["body_json"], path


def test_misc_endpoints_match_captures(sim):
    misc = capture("misc_get_endpoints.json")
    for path in ["/embeddings", "/models", "/extensions", "/features", "/api/features", "/queue/", "/history/abc?x=1"]:
        expected = misc[path]
        response = requests.get(sim.url + path, timeout=T)
        assert response.status_code == expected["status"], path
        if expected["body_json"] is not None:
            assert shape_of(response.json()) == shape_of(expected["body_json"]), path
        else:
            assert response.text == expected["body_text"], path
            assert response.headers.get("Content-Type") == expected["content_type"], path
    missing = requests.get(sim.url + "/view?filename=nope.png&type=output", timeout=T)
    assert missing.status_code == 404 and missing.content == b""
    assert requests.get(sim.url + "/models/upscale_models", timeout=T).json() == ["rig_tiny_compact_x1.safetensors"]


def test_system_stats_shape(sim):
    expected = capture("system_stats.json")["body_json"]
    body = requests.get(sim.url + "/system_stats", timeout=T).json()
    assert key_shape(body) == key_shape(expected)
    assert body["system"]["comfyui_version"] == "0.3.39"
    device = body["devices"][0]
    assert "Sim GPU" in device["name"] and device["vram_total"] == 24 * 1024**3
    assert 0 < device["vram_free"] <= device["vram_total"]


def test_object_info_is_the_real_definition(sim):
    real = capture("object_info_all.json")["body_json"]
    ours = requests.get(sim.url + "/object_info", timeout=T).json()
    for name in ["EmptyImage", "SaveImage", "ImageBlur", "LoadImage", "ImageInvert", "ImageToMask", "KSampler"]:
        ours_def, real_def = json.loads(json.dumps(ours[name])), json.loads(json.dumps(real[name]))
        if name == "LoadImage":  # the file list is this server's input folder
            ours_def["input"]["required"]["image"][0] = real_def["input"]["required"]["image"][0]
        assert ours_def == real_def, name
    assert set(requests.get(sim.url + "/api/object_info", timeout=T).json()) == set(ours)


def test_every_route_is_mirrored_under_api_but_admin_is_not(sim):
    for path in ["/queue", "/prompt", "/history", "/system_stats", "/object_info/EmptyImage", "/embeddings"]:
        plain = requests.get(sim.url + path, timeout=T)
        api = requests.get(sim.url + "/api" + path, timeout=T)
        assert (plain.status_code, plain.json()) == (api.status_code, api.json()), path
    assert requests.get(sim.url + "/api/sim/fault", timeout=T).status_code == 404
    assert requests.post(sim.url + "/api/interrupt", timeout=T).status_code == 200


# ---- running prompts ------------------------------------------------------------------------


def test_success_run_messages_history_and_png(sim, ws_a, observer):
    prompt = workflow("fast", colour=0x123456)
    answer = post_prompt(sim, prompt, client_id_of(ws_a))
    assert shape_of(answer) == shape_of(capture("post_prompt_success.json")["body_json"])
    prompt_id = answer["prompt_id"]
    assert uuid.UUID(prompt_id).version == 4

    messages = run_messages(ws_a, prompt_id)
    expected = capture_messages("ws_A_success.jsonl", PROTO)
    assert types_of(messages) == types_of(expected)
    for ours, theirs in zip(messages, expected):
        assert key_shape(ours) == key_shape(theirs), ours["type"]
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if m["type"] == "status"] == [1, 1, 0]
    executed = next(m for m in messages if m["type"] == "executed")
    image = executed["data"]["output"]["images"][0]
    assert image["filename"].startswith("fast_") and image["filename"].endswith("_.png") and image["type"] == "output"

    # The observer hears the queue changes, nothing of the run itself.
    observer.wait_for(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    assert set(observer.types()) == {"status"}

    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=T).json()
    expected_history = capture("history_prompt_success.json")["body_json"]
    assert shape_of(history[prompt_id]) == shape_of(next(iter(expected_history.values())))
    entry = history[prompt_id]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][3]["client_id"] == client_id_of(ws_a)
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["2"]["images"] == [image]
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]

    view = requests.get(
        sim.url + "/view", params={"filename": image["filename"], "subfolder": "", "type": "output"}, timeout=T
    )
    assert view.status_code == 200 and view.headers["Content-Type"] == "image/png"
    assert view.content.startswith(PNG_SIGNATURE)
    assert png_size(view.content) == (512, 512) and png_first_pixel(view.content) == (0x12, 0x34, 0x56)
    assert (Path(sim.output_dir) / image["filename"]).read_bytes() == view.content


def test_identical_resubmission_is_cached(sim, ws_a):
    prompt = workflow("fast")
    first = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    first_image = next(m for m in run_messages(ws_a, first) if m["type"] == "executed")["data"]["output"]
    ws_a.clear()
    second = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    messages = run_messages(ws_a, second)
    assert types_of(messages) == ws_types("ws_A_cached.jsonl")
    assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == ["1", "2"]
    assert next(m for m in messages if m["type"] == "executed")["data"]["output"] == first_image


def test_subfolder_prefix_and_counter(sim, ws_a):
    prompt = workflow("fast")
    prompt["2"]["inputs"]["filename_prefix"] = "shots/sh010/comp"
    names = []
    for _ in range(2):
        prompt = uncached(prompt)
        prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
        executed = ws_a.wait_for(lambda m, p=prompt_id: m["type"] == "executed" and m["data"]["prompt_id"] == p)
        names.append(executed["data"]["output"]["images"][0])
    assert [n["subfolder"] for n in names] == ["shots/sh010", "shots/sh010"]
    first, second = (int(n["filename"].split("_")[1]) for n in names)
    assert second == first + 1 and names[0]["filename"] == f"comp_{first:05d}_.png"
    assert (Path(sim.output_dir) / "shots" / "sh010" / names[1]["filename"]).is_file()


def test_preview_image_goes_to_temp_and_escaping_prefix_fails(sim, ws_a):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0xFF0000}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {"image": ["1", 0], "upscale_method": "area", "width": 32, "height": 0, "crop": "disabled"},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    executed = ws_a.wait_for(lambda m: m["type"] == "executed" and m["data"]["prompt_id"] == prompt_id)
    images = executed["data"]["output"]["images"]
    assert len(images) == 2 and {i["type"] for i in images} == {"temp"}
    assert images[0]["filename"].startswith("ComfyUI_temp_")
    view = requests.get(sim.url + "/view", params={"filename": images[1]["filename"], "type": "temp"}, timeout=T)
    assert png_size(view.content) == (32, 16) and png_first_pixel(view.content) == (255, 0, 0)
    ws_a.wait_done(prompt_id)

    escape = workflow("fast")
    escape["2"]["inputs"]["filename_prefix"] = "../../escaped"
    prompt_id = post_prompt(sim, escape, client_id_of(ws_a))["prompt_id"]
    error = ws_a.wait_for(lambda m: m["type"] == "execution_error" and m["data"]["prompt_id"] == prompt_id)["data"]
    assert error["node_id"] == "2" and "outside the output folder" in error["exception_message"]
    assert not list(Path(sim.output_dir).parent.parent.glob("escaped*"))


def test_interrupt_running_prompt(sim, ws_a, observer):
    prompt_id = post_prompt(sim, workflow("slow"), client_id_of(ws_a), extra_data={"sim_seconds": 4})["prompt_id"]
    ws_a.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "11")
    assert requests.post(sim.url + "/interrupt", timeout=T).status_code == 200
    messages = run_messages(ws_a, prompt_id)
    expected = capture_messages("ws_A_interrupted.jsonl", PROTO)
    assert types_of(messages) == types_of(expected)
    interrupted = next(m for m in messages if m["type"] == "execution_interrupted")["data"]
    want = next(m for m in expected if m["type"] == "execution_interrupted")["data"]
    assert {k: interrupted[k] for k in ("node_id", "node_type", "executed")} == {
        k: want[k] for k in ("node_id", "node_type", "executed")
    }
    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=T).json()[prompt_id]
    expected_history = capture("interrupt.json")["history_after"]["body_json"]
    assert key_shape(history) == key_shape(next(iter(expected_history.values())))
    assert history["status"]["status_str"] == "error" and history["outputs"] == {}
    assert set(observer.types()) == {"status"}
    # Interrupting an idle server is accepted and harmless.
    assert requests.post(sim.url + "/interrupt", timeout=T).status_code == 200


def test_reconnect_midrun_gets_current_node(sim):
    client = "R-" + uuid.uuid4().hex[:6]
    first = WsRecorder(sim.ws_url, client)
    prompt_id = post_prompt(sim, workflow("slow"), client, extra_data={"sim_seconds": 3})["prompt_id"]
    first.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "10")
    first.close()
    with WsRecorder(sim.ws_url, client) as second:
        status = second.wait_for(lambda m: m["type"] == "status")
        assert status["data"]["sid"] == client and status["data"]["status"]["exec_info"]["queue_remaining"] == 1
        current = second.wait_for(lambda m: m["type"] == "executing")
        assert set(current["data"]) == {"node"} and current["data"]["node"] in {"10", "11", "12"}
        requests.post(sim.url + "/interrupt", timeout=T)
        second.wait_done(prompt_id)


def test_runtime_error(sim, ws_a):
    answer = post_prompt(sim, workflow("runtime_error"), client_id_of(ws_a))
    messages = run_messages(ws_a, answer["prompt_id"])
    assert types_of(messages) == ws_types("ws_A_runtime_error.jsonl")
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    want = next(m for m in capture_messages("ws_A_runtime_error.jsonl", PROTO) if m["type"] == "execution_error")[
        "data"
    ]
    assert set(error) == set(want)
    for key in ("node_id", "node_type", "executed", "exception_message", "exception_type"):
        assert error[key] == want[key], key
    assert sorted(error["current_outputs"]) == sorted(want["current_outputs"])
    history = requests.get(f"{sim.url}/history/{answer['prompt_id']}", timeout=T).json()[answer["prompt_id"]]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_error"


def test_progress_like_the_capture_and_observer_gets_none(sim, ws_a, observer):
    # The captured synthetic-model workflow: one progress message per upscale tile.
    captured = capture("history_prompt_progress_synthetic.json")["body_json"]
    prompt = uncached(next(iter(captured.values()))["prompt"][2])
    prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    messages = run_messages(ws_a, prompt_id)
    expected = [m for m in capture_messages("ws_progress_synthetic_model_clientP.jsonl", PROTO)]
    expected = expected[1 : 1 + len(messages)]
    assert types_of(messages) == types_of(expected)
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 9, "3") for i in range(1, 10)]
    assert set(observer.types()) == {"status"}


def test_ksampler_progress_and_no_client_id_prompt(sim, ws_a, observer):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim_sd15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": uuid.uuid4().int % 1000000,
                "steps": 4,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "txt2img", "images": ["8", 0]}},
    }
    prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    messages = run_messages(ws_a, prompt_id)
    assert [(m["data"]["value"], m["data"]["node"]) for m in messages if m["type"] == "progress"] == [
        (1, "3"),
        (2, "3"),
        (3, "3"),
        (4, "3"),
    ]
    saved = next(m for m in messages if m["type"] == "executed")["data"]["output"]["images"][0]
    assert png_size((Path(sim.output_dir) / saved["filename"]).read_bytes()) == (64, 32)

    # Without client_id: nobody gets the run's messages, but progress is broadcast with node null.
    ws_a.clear()
    prompt["3"]["inputs"]["seed"] += 1
    silent = post_prompt(sim, prompt, client_id=None)["prompt_id"]
    wait_idle(sim.url)
    time.sleep(0.2)
    assert set(ws_a.types()) == {"status", "progress"}
    assert {m["data"]["node"] for m in ws_a.snapshot() if m["type"] == "progress"} == {None}
    history = requests.get(f"{sim.url}/history/{silent}", timeout=T).json()[silent]
    assert history["status"]["status_str"] == "success" and history["prompt"][3] == {}


def test_history_max_items_delete_and_clear(sim, ws_a):
    ids = []
    for _ in range(3):
        ids.append(post_prompt(sim, workflow("fast"), client_id_of(ws_a), extra_data={"sim_seconds": 0})["prompt_id"])
    ws_a.wait_done(ids[-1])
    last_two = requests.get(sim.url + "/history?max_items=2", timeout=T).json()
    assert list(last_two) == ids[1:]
    ours, want = last_two[ids[2]], list(capture("history_max_items_2.json")["body_json"].values())[-1]
    assert list(ours) == list(want) == ["prompt", "outputs", "status", "meta"]
    assert [shape_of(x) for x in ours["prompt"][:2]] == [shape_of(x) for x in want["prompt"][:2]]
    assert shape_of({k: ours[k] for k in list(ours)[1:]}) == shape_of({k: want[k] for k in list(want)[1:]})
    delete = requests.post(sim.url + "/history", json={"delete": [ids[0]]}, timeout=T)
    assert (delete.status_code, delete.text, delete.headers.get("Content-Type")) == (200, "", None)
    assert requests.get(f"{sim.url}/history/{ids[0]}", timeout=T).json() == {}
    requests.post(sim.url + "/history", json={"clear": True}, timeout=T)
    assert requests.get(sim.url + "/history", timeout=T).json() == capture("history_empty.json")["body_json"]


def test_queue_front_delete_clear_and_interrupt(sim, ws_a, observer):
    cid = client_id_of(ws_a)
    running = post_prompt(sim, workflow("slow"), cid, extra_data={"sim_seconds": 5})
    ws_a.wait_for(lambda m: m["type"] == "execution_start")
    normal = post_prompt(sim, workflow("fast"), cid, extra_data={"sim_seconds": 0.1})
    doomed = post_prompt(sim, workflow("fast"), cid, extra_data={"sim_seconds": 0.1})
    front = post_prompt(sim, workflow("fast"), cid, front=True, extra_data={"sim_seconds": 0.1})
    assert front["number"] == -(doomed["number"] + 1) and normal["number"] == running["number"] + 1

    queue = requests.get(sim.url + "/queue", timeout=T).json()
    busy = capture("get_queue_busy_1running_2pending.json")["body_json"]
    assert shape_of(queue) == shape_of(busy)
    assert [item[1] for item in queue["queue_running"]] == [running["prompt_id"]]
    assert {item[1] for item in queue["queue_pending"]} == {
        normal["prompt_id"],
        doomed["prompt_id"],
        front["prompt_id"],
    }
    assert requests.get(sim.url + "/prompt", timeout=T).json() == {"exec_info": {"queue_remaining": 4}}

    observer.clear()
    for target in (doomed["prompt_id"], running["prompt_id"], "no-such-id"):
        response = requests.post(sim.url + "/queue", json={"delete": [target]}, timeout=T)
        assert (response.status_code, response.text) == (200, "")
    queue = requests.get(sim.url + "/queue", timeout=T).json()
    assert [item[1] for item in queue["queue_running"]] == [running["prompt_id"]]
    assert {item[1] for item in queue["queue_pending"]} == {normal["prompt_id"], front["prompt_id"]}
    # Only the real deletion changed the queue, so only it was broadcast.
    time.sleep(0.2)
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in observer.snapshot()] == [3]

    requests.post(sim.url + "/interrupt", timeout=T)
    ws_a.wait_done(running["prompt_id"])
    # front=True runs before the prompt queued earlier.
    starts = []
    ws_a.wait_done(normal["prompt_id"])
    for message in ws_a.snapshot():
        if message["type"] == "execution_start":
            starts.append(message["data"]["prompt_id"])
    assert starts == [running["prompt_id"], front["prompt_id"], normal["prompt_id"]]
    assert requests.get(f"{sim.url}/history/{doomed['prompt_id']}", timeout=T).json() == {}
    assert (
        requests.get(f"{sim.url}/history/{running['prompt_id']}", timeout=T).json()[running["prompt_id"]]["status"][
            "status_str"
        ]
        == "error"
    )

    # clear empties pending and keeps the running prompt.
    blocker = post_prompt(sim, workflow("slow"), cid, extra_data={"sim_seconds": 5})
    ws_a.wait_for(lambda m: m["type"] == "execution_start" and m["data"]["prompt_id"] == blocker["prompt_id"])
    cleared = post_prompt(sim, workflow("fast"), cid)
    response = requests.post(sim.url + "/queue", json={"clear": True}, timeout=T)
    assert (response.status_code, response.text) == (200, "")
    queue = requests.get(sim.url + "/queue", timeout=T).json()
    assert [item[1] for item in queue["queue_running"]] == [blocker["prompt_id"]] and queue["queue_pending"] == []
    requests.post(sim.url + "/interrupt", timeout=T)
    ws_a.wait_done(blocker["prompt_id"])
    assert requests.get(f"{sim.url}/history/{cleared['prompt_id']}", timeout=T).json() == {}


def test_speed_and_sim_seconds_set_the_run_time(tmp_path):
    with SimProcess(speed=2.0, seconds=0.6) as fast:
        with WsRecorder(fast.ws_url, "timer") as ws:
            prompt_id = post_prompt(fast, workflow("fast"), "timer")["prompt_id"]
            other = post_prompt(fast, workflow("fast"), "timer", extra_data={"sim_seconds": 1.6})["prompt_id"]
            ws.wait_done(other)
            stamps: Dict[str, Dict[str, float]] = {}
            for message in ws.snapshot():
                if message["type"] in ("execution_start", "execution_success"):
                    stamps.setdefault(message["data"]["prompt_id"], {})[message["type"]] = message["data"]["timestamp"]
    first = (stamps[prompt_id]["execution_success"] - stamps[prompt_id]["execution_start"]) / 1000.0
    second = (stamps[other]["execution_success"] - stamps[other]["execution_start"]) / 1000.0
    assert 0.25 <= first <= 1.0  # 0.6 s / speed 2
    assert 0.75 <= second <= 1.6  # 1.6 s / speed 2


def test_jitter_is_bounded_and_seeded():
    import random

    from nuke_comfy_cluster.sim.executor import Executor, Timing
    from nuke_comfy_cluster.sim.nodes import Dirs
    from nuke_comfy_cluster.sim.prompt_queue import PromptQueue

    def durations(seed: int) -> List[float]:
        executor = Executor(
            PromptQueue(lambda: None), None, None, None, Dirs("", "", ""), Timing(2.0, 1.0, 0.2), random.Random(seed)
        )  # type: ignore[arg-type]
        return [executor._duration({}) for _ in range(200)] + [executor._duration({"sim_seconds": 3})]

    first = durations(7)
    assert first == durations(7) and first != durations(8)
    assert all(0.4 <= d <= 0.6 for d in first[:-1]) and max(first) - min(first[:-1]) > 0.1
    assert 1.2 <= first[-1] <= 1.8


# ---- validation -----------------------------------------------------------------------------


def _sorted_errors(body: Dict[str, Any]) -> Dict[str, Any]:
    body = json.loads(json.dumps(body))
    for node in body.get("node_errors", {}).values():
        node["errors"].sort(key=lambda e: e["type"])
    return body


def test_validation_errors_match_captures(sim, ws_a):
    first = post_prompt(sim, workflow("fast"), client_id_of(ws_a), extra_data={"sim_seconds": 0})
    ws_a.wait_done(first["prompt_id"])
    before = first["number"]
    ws_a.clear()
    cases = [
        ("post_prompt_error_invalid_class.json", workflow("invalid_class", colour=0)),
        ("post_prompt_error_invalid_input.json", workflow("invalid_input")),
        ("post_prompt_error_missing_file_loadimage.json", workflow("loadimage")),
        ("post_prompt_error_no_outputs.json", capture("post_prompt_error_no_outputs.json")["request_json"]["prompt"]),
    ]
    for name, prompt in cases:
        expected = capture(name)
        response = requests.post(sim.url + "/prompt", json={"prompt": prompt, "client_id": "rigA"}, timeout=T)
        assert response.status_code == expected["status"] == 400, name
        assert response.headers["Content-Type"] == expected["content_type"], name
        assert _sorted_errors(response.json()) == _sorted_errors(expected["body_json"]), name

    expected = capture("post_prompt_error_no_prompt.json")
    response = requests.post(sim.url + "/prompt", json={"client_id": "rigA"}, timeout=T)
    assert (response.status_code, response.json()) == (400, expected["body_json"])

    expected = capture("post_prompt_error_malformed_json.json")
    response = requests.post(sim.url + "/prompt", data=b'{"prompt": {', timeout=T)
    assert response.status_code == 500 and response.headers["Content-Type"] == expected["content_type"]
    assert response.text == expected["body_text"]

    more = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 99999, "batch_size": 1, "color": 0}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {"image": ["1", 0], "upscale_method": "bogus", "width": 8, "height": 8, "crop": "disabled"},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    body = requests.post(sim.url + "/prompt", json={"prompt": more}, timeout=T).json()
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert body["node_errors"]["2"]["errors"][0]["type"] == "value_not_in_list"
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]

    # A rejected prompt sends nothing on the websocket, yet consumes a number like ComfyUI.
    time.sleep(0.2)
    assert ws_a.types() == []
    after = post_prompt(sim, workflow("fast"), client_id_of(ws_a), extra_data={"sim_seconds": 0})["number"]
    assert after == before + 7


def test_upload_rename_then_loadimage_runs(sim, ws_a):
    rig = (PROTO / "workflows" / "rig_input.png").read_bytes()
    name = f"rig_{uuid.uuid4().hex[:6]}.png"
    expected = capture("upload_image.json")

    def upload(data: bytes, overwrite: Any = None) -> Dict[str, Any]:
        fields = {"type": "input", "subfolder": ""}
        if overwrite is not None:
            fields["overwrite"] = overwrite
        response = requests.post(
            sim.url + "/upload/image", files={"image": (name, data, "image/png")}, data=fields, timeout=T
        )
        assert (
            response.status_code == 200
            and response.headers["Content-Type"] == expected["first_upload_overwrite_true"]["content_type"]
        )
        return response.json()

    stem = name[:-4]
    assert upload(rig, "true") == {"name": name, "subfolder": "", "type": "input"}
    assert upload(rig) == {"name": name, "subfolder": "", "type": "input"}
    assert upload(rig + b"different") == {"name": f"{stem} (1).png", "subfolder": "", "type": "input"}
    assert upload(rig + b"different") == {"name": f"{stem} (1).png", "subfolder": "", "type": "input"}
    assert upload(rig + b"other") == {"name": f"{stem} (2).png", "subfolder": "", "type": "input"}
    assert (Path(sim.input_dir) / name).read_bytes() == rig
    listed = requests.get(sim.url + "/object_info/LoadImage", timeout=T).json()["LoadImage"]["input"]["required"][
        "image"
    ][0]
    assert {name, f"{stem} (1).png"} <= set(listed)

    prompt = workflow("loadimage")
    prompt["1"]["inputs"]["image"] = name
    prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    messages = run_messages(ws_a, prompt_id)
    assert types_of(messages) == ws_types("ws_A_loadimage.jsonl")
    saved = next(m for m in messages if m["type"] == "executed")["data"]["output"]["images"][0]
    data = requests.get(
        sim.url + "/api/view", params={"filename": saved["filename"], "type": "output"}, timeout=T
    ).content
    red, green, blue = png_first_pixel(rig)
    assert png_size(data) == png_size(rig) and png_first_pixel(data) == (255 - red, 255 - green, 255 - blue)
    # As ComfyUI: the PNG holds the prompt as executed -- LoadImage with "is_changed" (the file's
    # sha256, what its IS_CHANGED returns) -- while /history keeps the prompt as sent.
    embedded = json.loads(_png_text(data)["prompt"])
    assert embedded["1"] == dict(prompt["1"], is_changed=[hashlib.sha256(rig).hexdigest()])
    assert list(embedded["1"]) == ["class_type", "inputs", "is_changed"]
    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=T).json()[prompt_id]
    assert "is_changed" not in history["prompt"][2]["1"]


def test_loadimage_takes_an_absolute_path_like_comfyui(sim, ws_a, tmp_path):
    picture = tmp_path / "plate.png"
    picture.write_bytes(solid_png(4, 4, (30, 60, 90)))
    prompt = workflow("loadimage")
    prompt["1"]["inputs"]["image"] = str(picture)
    prompt_id = post_prompt(sim, prompt, client_id_of(ws_a))["prompt_id"]
    messages = run_messages(ws_a, prompt_id)
    saved = next(m for m in messages if m["type"] == "executed")["data"]["output"]["images"][0]
    data = requests.get(sim.url + "/view", params=saved, timeout=T).content
    assert png_first_pixel(data) == (225, 195, 165)


def _png_text(data: bytes) -> Dict[str, str]:
    out, pos = {}, 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + length].partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out


# ---- faults ---------------------------------------------------------------------------------


def test_fault_fail_next_and_reset(sim):
    state = sim.set_fault(fail_next=2)
    assert state["fail_next"] == 2
    for _ in range(2):
        response = requests.get(sim.url + "/queue", timeout=T)
        assert response.status_code == 500 and response.headers["Content-Type"].startswith("text/plain")
        assert response.text == capture("post_prompt_error_malformed_json.json")["body_text"]
    assert sim.get_faults()["fail_next"] == 0  # admin routes neither fail nor count
    assert requests.get(sim.url + "/queue", timeout=T).status_code == 200
    sim.set_fault(fail_next=5, latency=0.5)
    assert sim.reset_faults() == sim.get_faults() and sim.get_faults()["fail_next"] == 0
    bad = requests.post(sim.url + "/sim/fault", json={"no_such_fault": 1}, timeout=T)
    assert bad.status_code == 400 and "no_such_fault" in bad.json()["error"]


def test_fault_latency_and_hang(sim):
    sim.set_fault(latency=0.4)
    start = time.monotonic()
    assert requests.get(sim.url + "/prompt", timeout=T).status_code == 200
    assert time.monotonic() - start >= 0.4
    sim.set_fault(latency=0, hang=3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(sim.url + "/prompt", timeout=(2, 0.5))
    sim.set_fault(hang=0)
    assert requests.get(sim.url + "/prompt", timeout=T).status_code == 200


def test_fault_malformed_json_and_ws(sim):
    sim.set_fault(malformed_json=1)
    with pytest.raises(ValueError):
        json.loads(requests.get(sim.url + "/queue", timeout=T).text)
    assert requests.get(sim.url + "/queue", timeout=T).json() == {"queue_running": [], "queue_pending": []}

    sim.set_fault(malformed_ws=1)
    with WsRecorder(sim.ws_url, "garbled") as ws:
        first = ws.wait_for(lambda m: True)
        assert first["type"] == "<garbage>"
        requests.post(sim.url + "/queue", json={"clear": True}, timeout=T)  # a status broadcast
        assert ws.wait_for(lambda m: m["type"] == "status")["data"]["status"]["exec_info"] == {"queue_remaining": 0}


def test_fault_drop_websockets(sim):
    with WsRecorder(sim.ws_url, "dropme") as ws:
        ws.wait_for(lambda m: m["type"] == "status")
        state = sim.set_fault(drop_websockets=True)
        assert state["dropped_websockets"] >= 1 and state["drop_websockets"] is False
        assert ws.wait_closed(5)
    # Dropping is an action, not a state: new sockets work.
    with WsRecorder(sim.ws_url, "again") as ws:
        assert ws.wait_for(lambda m: m["type"] == "status")["data"]["sid"] == "again"


def test_fault_exit_mid_prompt_then_restart_loses_everything():
    with SimProcess(seconds=2, extra_args=["--exit-mid-prompt"]) as sim:
        port = sim.port
        with WsRecorder(sim.ws_url, "crash") as ws:
            prompt_id = post_prompt(sim, workflow("slow"), "crash")["prompt_id"]
            ws.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "1")
            assert ws.wait_closed(5)
        assert sim.wait(5) == 1
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(sim.url + "/queue", timeout=T)
        sim.restart()
        assert sim.port == port and sim.get_faults()["exit_mid_prompt"] is True  # the CLI flag again
        sim.reset_faults()
        assert requests.get(sim.url + "/queue", timeout=T).json() == capture("get_queue_idle.json")["body_json"]
        assert requests.get(f"{sim.url}/history/{prompt_id}", timeout=T).json() == {}


def test_kill_loses_queue_and_number_restarts():
    with SimProcess(seconds=5) as sim:
        first = post_prompt(sim, workflow("slow"))
        second = post_prompt(sim, workflow("slow"))
        assert second["number"] == 1
        port = sim.port
        sim.kill()
        assert not sim.alive
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(sim.url + "/queue", timeout=T)
        sim.restart()
        assert sim.port == port
        assert requests.get(sim.url + "/queue", timeout=T).json() == {"queue_running": [], "queue_pending": []}
        for answer in (first, second):
            assert requests.get(f"{sim.url}/history/{answer['prompt_id']}", timeout=T).json() == {}
        assert post_prompt(sim, workflow("fast"))["number"] == 0


def test_sigstop_times_out_and_sigcont_resumes(sim):
    colour = 0x0A0B0C
    sim.sigstop()
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(sim.url + "/queue", timeout=(2, 0.5))
        # The timed-out POST still reaches the frozen server and runs after SIGCONT.
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(sim.url + "/prompt", json={"prompt": workflow("fast", colour=colour)}, timeout=(2, 0.5))
    finally:
        sim.sigcont()
    assert requests.get(sim.url + "/prompt", timeout=T).status_code == 200
    deadline = time.monotonic() + 10
    ghosts: List[Dict[str, Any]] = []
    while not ghosts and time.monotonic() < deadline:
        history = requests.get(sim.url + "/history", timeout=T).json()
        ghosts = [e for e in history.values() if e["prompt"][2].get("1", {}).get("inputs", {}).get("color") == colour]
        time.sleep(0.05)
    assert len(ghosts) == 1 and ghosts[0]["status"]["status_str"] == "success"


# ---- heterogeneous servers and model loads (--without-nodes, --models, --fail-class, --load-seconds) ----

# Bodies as a real ComfyUI 0.3.39 answers them (checked in tests/real/test_conformance.py).
CKPT_TOOLTIP = {"tooltip": "The name of the checkpoint (model) to load."}


def checkpoint_workflow(ckpt: str, size: int = 64) -> Dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ckpt"}},
    }


@pytest.fixture(scope="module")
def odd_sim():
    args = ["--without-nodes", "ImageInvert,ImageScaleBy", "--models", "b.safetensors,a.safetensors"]
    args += ["--fail-class", "ImageBlur", "--load-seconds", "1.5"]
    with SimProcess(seconds=0.1, name="odd", extra_args=args) as proc:
        yield proc


def test_without_nodes_answers_like_comfyui_missing_the_node(odd_sim, sim):
    info = requests.get(odd_sim.url + "/object_info", timeout=T).json()
    assert "ImageInvert" not in info and "ImageScaleBy" not in info and "ImageBlur" in info
    assert requests.get(odd_sim.url + "/object_info/ImageInvert", timeout=T).json() == {}
    assert "SaveImage" in requests.get(odd_sim.url + "/object_info/SaveImage", timeout=T).json()
    expected = capture("post_prompt_error_invalid_class.json")
    prompt = expected["request_json"]["prompt"]
    prompt["2"]["class_type"] = "ImageInvert"
    response = requests.post(odd_sim.url + "/prompt", json={"prompt": prompt}, timeout=T)
    body = expected["body_json"]
    body["error"]["message"] = "Cannot execute because node ImageInvert does not exist."
    assert (response.status_code, response.headers["Content-Type"], response.json()) == (
        400,
        expected["content_type"],
        body,
    )
    # the same prompt on a simulator that has the node is accepted
    assert requests.post(sim.url + "/prompt", json={"prompt": prompt}, timeout=T).status_code == 200


def test_without_nodes_rejects_unknown_class_names_clearly():
    result = subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster.sim", "--without-nodes", "ImageInvert,NoSuchThing"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "unknown node class NoSuchThing" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_sets_the_checkpoints_and_others_answer_value_not_in_list(odd_sim, sim):
    assert requests.get(odd_sim.url + "/models/checkpoints", timeout=T).json() == ["a.safetensors", "b.safetensors"]
    loader = requests.get(odd_sim.url + "/object_info/CheckpointLoaderSimple", timeout=T).json()
    assert loader["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] == [
        ["a.safetensors", "b.safetensors"],
        CKPT_TOOLTIP,
    ]
    response = requests.post(
        odd_sim.url + "/prompt", json={"prompt": checkpoint_workflow("zzz.safetensors")}, timeout=T
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "1": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'zzz.safetensors' not in ['a.safetensors', 'b.safetensors']",
                        "extra_info": {
                            "input_name": "ckpt_name",
                            "input_config": [["a.safetensors", "b.safetensors"], CKPT_TOOLTIP],
                            "received_value": "zzz.safetensors",
                        },
                    }
                ],
                "dependent_outputs": ["4"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    accepted = requests.post(odd_sim.url + "/prompt", json={"prompt": checkpoint_workflow("b.safetensors")}, timeout=T)
    assert accepted.status_code == 200, accepted.text
    # the default simulator has its own two checkpoints
    assert requests.get(sim.url + "/models/checkpoints", timeout=T).json() == [
        "sim_sd15.safetensors",
        "v1-5-pruned-emaonly-fp16.safetensors",
    ]


def test_fail_class_raises_cuda_out_of_memory(odd_sim):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "oom"}},
    }
    with WsRecorder(odd_sim.ws_url, "oom") as ws:
        prompt_id = post_prompt(odd_sim, prompt, "oom")["prompt_id"]
        messages = run_messages(ws, prompt_id)
    kinds = [t for t in types_of(messages) if t != "status"]
    assert kinds == ["execution_start", "execution_cached", "executing", "executing", "execution_error", "executing"]
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "ImageBlur", ["1"])
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("CUDA out of memory.")
    history = requests.get(f"{odd_sim.url}/history/{prompt_id}", timeout=T).json()[prompt_id]
    assert history["status"]["status_str"] == "error" and history["outputs"] == {}


def _run_seconds(proc: SimProcess, ws: WsRecorder, prompt: Dict[str, Any]) -> Any:
    """(seconds from execution_start to success by the server's clock, nodes execution_cached listed)."""
    ws.clear()
    prompt_id = post_prompt(proc, prompt, ws.client_id)["prompt_id"]
    messages = run_messages(ws, prompt_id, timeout=20)
    stamp = {m["type"]: m["data"]["timestamp"] for m in messages if m["type"].startswith("execution_")}
    assert "execution_success" in stamp, types_of(messages)
    cached = next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"]
    return (stamp["execution_success"] - stamp["execution_start"]) / 1000.0, cached


def test_load_seconds_charged_only_when_the_loader_runs(odd_sim):
    # load 1.5 s, frame 0.1 s: a loaded model costs nothing, a switch (classic cache) pays again
    with WsRecorder(odd_sim.ws_url, "loads") as ws:
        cold, cached = _run_seconds(odd_sim, ws, checkpoint_workflow("a.safetensors", 64))
        assert cold >= 1.5 and cached == []
        warm, cached = _run_seconds(odd_sim, ws, checkpoint_workflow("a.safetensors", 72))
        assert "1" in cached and warm < 1.0, warm
        switch, cached = _run_seconds(odd_sim, ws, checkpoint_workflow("b.safetensors", 64))
        assert switch >= 1.5 and "1" not in cached
        back, cached = _run_seconds(odd_sim, ws, checkpoint_workflow("a.safetensors", 80))
        assert back >= 1.5 and "1" not in cached  # b evicted a: only the last prompt's outputs are kept
