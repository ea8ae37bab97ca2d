"""The whole submit flow from the node, against three simulator processes on loopback."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

from nuke_comfy_cluster.core.templating import derive_seed
from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.nuke_host.submit import SubmitRun, active_runs, run_for
from nuke_comfy_cluster.sim.png import png_first_pixel

from .conftest import WORKFLOWS, server_dicts
from .fake_nuke import FakeNuke, frame_colour, png_size

pytestmark = pytest.mark.integration

TXT2IMG = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim_sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
    "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "4": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["1", 0],
            "positive": ["2", 0],
            "negative": ["2", 0],
            "latent_image": ["3", 0],
            "seed": 0,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    },
    "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "txt2img"}},
}


def make_node(fake: FakeNuke, workflow: Path, mode: str, output: Path, **knobs: Any) -> Any:
    node = N.create_node()
    fake.user_set(node, N.K_WORKFLOW, str(workflow))
    fake.user_set(node, N.K_MODE, mode)
    fake.user_set(node, N.K_OUTPUT, str(output))
    for name, value in knobs.items():
        fake.user_set(node, name, value)
    return node


def submit(fake: FakeNuke, node: Any) -> SubmitRun:
    """Press Submit; the button must hand over to a worker and return at once."""
    started = time.monotonic()
    fake.press(node, N.K_SUBMIT)
    run = run_for(node)
    assert run is not None, node[N.K_STATUS].value()
    assert not run.finished.is_set()
    assert time.monotonic() - started < 5
    return run


def wait(fake: FakeNuke, run: SubmitRun, timeout: float = 60) -> SubmitRun:
    fake.pump(run.finished.is_set, timeout, "the end of " + run.settings.node_name)
    return run


def reads(fake: FakeNuke) -> List[Any]:
    return [n for n in fake.nuke.allNodes("Read") if n.name() != "Plate"]


def history_prompts(url: str) -> List[Dict[str, Any]]:
    with urllib.request.urlopen(url + "/history?max_items=200", timeout=5) as r:
        return [entry["prompt"][2] for entry in json.loads(r.read().decode()).values()]


def assert_main_thread_clean(fake: FakeNuke, connects: List[str]) -> None:
    main = threading.main_thread().name
    assert main not in connects, "the main thread opened a connection"
    assert fake.marshalled and all(thread != main for _, thread in fake.marshalled)
    assert fake.tasks and all(t.thread != main for t in fake.tasks)


def test_24_frames_on_three_servers_end_in_one_read_on_a_complete_sequence(
    fake: FakeNuke, configure, sims, share, plate, connects, tmp_path
):
    configure(server_dicts(sims, share))
    plate(1001, 1024)
    node = make_node(fake, WORKFLOWS / "loadimage.json", N.MODE_RANGE, tmp_path / "out")
    assert node[N.K_SERVER].values() == [N.AUTO_SERVER, "sim-a", "sim-b", "sim-c"]

    run = submit(fake, node)
    # the inputs were rendered on the main thread, once, for the whole range, onto the share
    assert fake.called("nuke.execute") == [("Write1", 1001, 1024, 1)]
    assert run.run_dir.startswith(str(share["local"] / "input" / "nuke_comfy_cluster"))
    wait(fake, run)

    snapshot = run.final
    assert snapshot.state == "done", node[N.K_DETAILS].value()
    assert node[N.K_STATUS].value().startswith("Done: 24 frames")
    assert sum(snapshot.servers.values()) == 24 and len(snapshot.servers) >= 2, snapshot.servers

    [read] = reads(fake)
    assert read.name() == "ComfyCluster1_result"
    assert read["file"].value() == (tmp_path / "out").as_posix() + "/ComfyCluster1.####.png"
    assert (read["first"].value(), read["last"].value()) == (1001, 1024)
    assert (read["origfirst"].value(), read["origlast"].value()) == (1001, 1024)
    assert read["on_error"].value() == "error"
    # the Read has the results' own format, not the project's
    width, height = png_size((tmp_path / "out" / "ComfyCluster1.1001.png").read_bytes())
    assert (read.format().width(), read.format().height()) == (width, height) != (1920, 1080)
    for frame in range(1001, 1025):
        path = tmp_path / "out" / f"ComfyCluster1.{frame:04d}.png"
        # ImageInvert of what the fake rendered for this very frame: no frame went astray
        expected = tuple(255 - c for c in frame_colour("Plate", frame))
        assert png_first_pixel(path.read_bytes()) == expected, frame
    assert not (tmp_path / "out" / "ComfyCluster1.1000.png").exists()

    assert_main_thread_clean(fake, connects)  # before this test talks to the servers itself

    # every server read the frames through its own path to the share (dir_remote)
    images = [
        p["1"]["inputs"]["image"] for s in sims for p in history_prompts(s.url) if p["1"]["class_type"] == "LoadImage"
    ]
    ours = [i for i in images if os.path.basename(os.path.dirname(i)) == os.path.basename(run.run_dir)]
    assert len(ours) == 24
    assert all(i.startswith(str(share["remote"]) + "/input/nuke_comfy_cluster/") for i in ours)
    assert not os.path.exists(run.run_dir)  # the rendered inputs are cleaned up

    task = fake.tasks[-1]
    assert task.progress[-1] == 100 and task.closed
    assert task.title == "ComfyUI Cluster: ComfyCluster1"
    assert fake.messages == []
    assert node[N.K_RUN].value() == ""


def test_without_a_shared_drive_inputs_are_uploaded_and_results_downloaded(
    fake: FakeNuke, configure, sims, share, plate, connects, tmp_path
):
    configure(server_dicts(sims))  # no dir_local / dir_remote
    plate(1, 5)
    node = make_node(fake, WORKFLOWS / "loadimage.json", N.MODE_RANGE, tmp_path / "out", **{N.K_SEQUENCE: "shot"})
    run = wait(fake, submit(fake, node))

    assert run.final.state == "done", node[N.K_DETAILS].value()
    assert sorted(v.rsplit("/", 1)[1] for _, v in run.mapper.uploads) == [f"in1.{f:04d}.png" for f in range(1, 6)]
    tag = os.path.basename(run.run_dir)
    uploaded = sorted(os.listdir(share["remote"] / "input" / "nuke_comfy_cluster" / tag))
    assert uploaded == [f"in1.{f:04d}.png" for f in range(1, 6)]
    [read] = reads(fake)
    assert read["file"].value().endswith("/shot.####.png")
    assert (read["first"].value(), read["last"].value()) == (1, 5)
    for frame in range(1, 6):
        data = (tmp_path / "out" / f"shot.{frame:04d}.png").read_bytes()
        assert png_first_pixel(data) == tuple(255 - c for c in frame_colour("Plate", frame))
    assert_main_thread_clean(fake, connects)


def test_iterations_give_one_labelled_read_each(fake: FakeNuke, configure, sims, share, tmp_path):
    configure(server_dicts(sims, share))
    workflow = tmp_path / "txt2img.json"
    workflow.write_text(json.dumps(TXT2IMG), encoding="utf-8")
    fake.current_frame = 1010
    node = make_node(fake, workflow, N.MODE_ITERATIONS, tmp_path / "out", **{N.K_ITERATIONS: 3, N.K_SEED: 7})
    assert "seed: #4 KSampler.seed = 0" in node[N.K_INFO].value()
    run = wait(fake, submit(fake, node))

    assert run.final.state == "done", node[N.K_DETAILS].value()
    assert fake.called("nuke.execute") == []  # no input connected: nothing to render
    found = reads(fake)
    assert [r.name() for r in found] == ["ComfyCluster1_i000", "ComfyCluster1_i001", "ComfyCluster1_i002"]
    colours = set()
    for i, read in enumerate(found):
        seed = derive_seed(7, 1010, i)
        assert read["label"].value() == f"iteration {i + 1}\nseed {seed}"
        assert read["file"].value().endswith(f"/ComfyCluster1_i{i:03d}.####.png")
        assert (read["first"].value(), read["last"].value()) == (1010, 1010)
        data = (tmp_path / "out" / f"ComfyCluster1_i{i:03d}.1010.png").read_bytes()
        colours.add(png_first_pixel(data))
    assert len(colours) == 3  # each iteration really ran with its own seed

    # a second run would replace those files: refused until the artist ticks overwrite
    run = wait(fake, submit(fake, node))
    assert run.final is None and "overwrite" in fake.shown(node[N.K_STATUS]).lower()
    fake.user_set(node, N.K_OVERWRITE, True)
    run = wait(fake, submit(fake, node))
    assert run.final.state == "done", fake.shown(node[N.K_DETAILS])
    # ... and updates the same Reads instead of adding more
    assert [r.name() for r in reads(fake)] == ["ComfyCluster1_i000", "ComfyCluster1_i001", "ComfyCluster1_i002"]
    assert fake.called("PyScript_Knob.execute").count(("reload",)) == 3


@pytest.mark.parametrize(
    "workflow, expected",
    [
        (
            "runtime_error.json",
            "Workflow error in node 2 (ImageToMask) on sim-",
        ),
        ("invalid_input.json", "Workflow error in node 1 (EmptyImage)"),
    ],
)
def test_a_workflow_error_shows_node_message_and_frames(fake: FakeNuke, configure, sims, tmp_path, workflow, expected):
    configure(server_dicts(sims))
    node = make_node(fake, WORKFLOWS / workflow, N.MODE_RANGE, tmp_path / "out", **{N.K_FROM_INPUT: False})
    fake.user_set(node, N.K_FIRST, 1001)
    fake.user_set(node, N.K_LAST, 1003)
    run = wait(fake, submit(fake, node))

    assert run.final.state == "failed"
    status = fake.shown(node[N.K_STATUS])  # what the artist reads (Nuke evaluates the text as TCL)
    assert status.startswith("Failed: 0 of 3 frames done, 3 failed. ")
    assert expected in status
    assert "[frames 1001-1003]" in status or "[frame 100" in status
    if workflow == "runtime_error.json":
        assert "index 3 is out of bounds for dimension 3 with size 3" in status
        assert "nodes_mask.py" in fake.shown(node[N.K_DETAILS])  # the end of ComfyUI's traceback
    assert len(fake.messages) == 1 and expected in fake.messages[0]
    assert reads(fake) == []
    assert fake.tasks[-1].closed


def test_a_pinned_server_that_is_down_is_named(fake: FakeNuke, configure, sims, tmp_path):
    configure(server_dicts(sims) + [{"name": "gpu-dead", "ip": "127.0.0.1", "port": 1}])
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out", **{N.K_SERVER: "gpu-dead"})
    run = wait(fake, submit(fake, node), timeout=30)
    assert run.final is None and run.error
    status = node[N.K_STATUS].value()
    assert status.startswith("Failed: ") and "gpu-dead" in status and "not available" in status
    assert "gpu-dead" in fake.messages[-1]
    assert fake.tasks == []


def test_several_nodes_run_at_once(fake: FakeNuke, configure, sims, plate, tmp_path):
    configure(server_dicts(sims))
    plate(1, 6)
    first = make_node(fake, WORKFLOWS / "loadimage.json", N.MODE_RANGE, tmp_path / "a")
    second = make_node(fake, WORKFLOWS / "fast.json", N.MODE_RANGE, tmp_path / "b")
    runs = [submit(fake, first), submit(fake, second)]
    assert {r.settings.node_name for r in active_runs()} == {"ComfyCluster1", "ComfyCluster2"}
    # a node already running refuses a second submit instead of queueing it twice
    fake.press(first, N.K_SUBMIT)
    assert "already running" in fake.messages[-1]
    for run in runs:
        wait(fake, run)
    assert [r.final.state for r in runs] == ["done", "done"]
    assert sorted(r.name() for r in reads(fake)) == ["ComfyCluster1_result", "ComfyCluster2_result"]
    assert all((tmp_path / "b" / f"ComfyCluster2.{f:04d}.png").is_file() for f in range(1, 7))
    assert len(fake.tasks) >= 2 and all(t.closed for t in fake.tasks)
    assert active_runs() == []


def test_a_crash_in_the_worker_is_shown_and_stops_the_batch(
    fake: FakeNuke, configure, sims, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    from nuke_comfy_cluster.nuke_host import messages

    def broken(snapshot):
        raise RuntimeError("progress text exploded")

    configure(server_dicts(sims))
    monkeypatch.setattr(messages, "progress_message", broken)
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out")
    run = wait(fake, submit(fake, node), timeout=30)
    assert node[N.K_STATUS].value() == "Failed: unexpected RuntimeError: progress text exploded"
    assert run.batch is not None and run.batch.wait(10).finished
    assert run_for(node) is None and fake.tasks[-1].closed


def test_a_pasted_copy_of_a_running_node_is_not_running(fake: FakeNuke, configure, sims, tmp_path):
    configure(server_dicts(sims))
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out")
    run = submit(fake, node)
    copy = N.create_node()
    copy[N.K_RUN].setValue(node[N.K_RUN].value())  # what copy/paste of the node carries along
    assert run_for(copy) is None and run_for(node) is run
    fake.press(copy, N.K_CANCEL)
    assert "not running" in copy[N.K_STATUS].value()
    assert wait(fake, run).final.state == "done"
