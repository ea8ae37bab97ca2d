"""The public API (core.api.Cluster) end to end against real ComfyUI 0.3.39 servers.

GPU work is emulated by the test-only nodes (custom_nodes/ncc_test_nodes.py):
a loader that sleeps once per distinct model (ComfyUI's own cache decides when)
and a sampler that sleeps seconds/speed and paints a colour derived from the
frame, so every delivered file is checked for the right content.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.results import fetch_content
from nuke_comfy_cluster.core.server import ComfyUIServer
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.nuke_host.inputs import InputMapper
from nuke_comfy_cluster.sim.png import solid_png

from .helpers import (
    assert_sequence,
    configs,
    executions,
    first_pixel,
    opt_makespan,
    sampler_workflow,
    tag_colour,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.real, pytest.mark.integration, pytest.mark.timeout(600)]


def frame_colour(frame: int):
    return tag_colour(f"{frame:04d}")


def loads_per_server(servers, model):
    return {s.name: sum(1 for r in s.node_runs() if r["kind"] == "load" and r["model"] == model) for s in servers}


def test_mixed_speed_batch_spreads_by_speed_and_prints_makespan_vs_opt(fleet, tmp_path):
    servers = [fleet["fast"], fleet["mid"], fleet["slow"]]
    model, frames, frame_s, load_s = unique("mixed"), range(1, 17), 0.6, 1.0
    with Cluster.from_servers(configs(servers)) as cluster:
        batch = cluster.submit_frames(
            sampler_workflow(model, frame_s, load_s), frames, output_dir=str(tmp_path), sequence_name="mx"
        )
        snap = batch.wait(180)
    assert snap.state == "done", [(j.label, j.state, j.error) for j in snap.jobs]
    assert_sequence(str(tmp_path), "mx", frames, frame_colour)
    assert sorted(executions(servers).values()) == [1] * len(frames)
    opt = opt_makespan(len(frames), [1.0, 0.5, 0.25], frame_s, load_s)
    print(
        f"\n[real] mixed speeds 1/0.5/0.25, {len(frames)} frames of {frame_s}s + {load_s}s load: "
        f"makespan {snap.makespan:.1f}s, OPT {opt:.1f}s, ratio {snap.makespan / opt:.2f}; per server {snap.servers}"
    )
    per = snap.servers
    assert per.get("fast", 0) > per.get("slow", 0), per  # the fast box does the most
    # ComfyUI's cache, not the client, decides: one load per server that rendered
    assert loads_per_server(servers, model) == {s.name: 1 if per.get(s.name) else 0 for s in servers}


def test_node_cache_identical_frame_skipped_and_model_switch_reloads(fleet):
    server = fleet["fast"]
    model_a, model_b = unique("cache-a"), unique("cache-b")

    def run(prompt):
        with requests.Session() as http:
            answer = http.post(server.url + "/prompt", json={"prompt": prompt}, timeout=10).json()
            prompt_id = answer["prompt_id"]
            entry = wait_until(lambda: http.get(f"{server.url}/history/{prompt_id}", timeout=10).json(), 60)
        messages = dict(entry[prompt_id]["status"]["messages"])
        return messages["execution_cached"]["nodes"], entry[prompt_id]["outputs"]

    before = len(server.node_runs())
    cached, outputs = run(sampler_workflow(model_a, 0.2, 0.5, tag="x"))
    assert cached == [] and [r["kind"] for r in server.node_runs()[before:]] == ["load", "sample"]
    cached, again = run(sampler_workflow(model_a, 0.2, 0.5, tag="x"))
    assert cached == ["1", "2", "3"] and again == outputs  # identical: nothing runs, no new file
    assert len(server.node_runs()) == before + 2
    cached, _ = run(sampler_workflow(model_a, 0.2, 0.5, tag="y"))
    assert cached == ["1"]  # new frame, same model: only the sampler runs
    cached, _ = run(sampler_workflow(model_b, 0.2, 0.5, tag="y"))
    assert cached == []
    cached, _ = run(sampler_workflow(model_a, 0.2, 0.5, tag="y"))
    assert cached == []  # the classic cache kept only model b: switching back reloads a
    runs = [(r["kind"], r["model"]) for r in server.node_runs()[before:]]
    assert runs == [
        ("load", model_a),
        ("sample", model_a),
        ("sample", model_a),
        ("load", model_b),
        ("sample", model_b),
        ("load", model_a),
        ("sample", model_a),
    ]


def test_server_without_the_custom_nodes_is_left_out_with_a_reason(fleet, tmp_path):
    servers = [fleet["bare"], fleet["fast"], fleet["mid"]]  # the fastest box lacks the nodes
    frames = range(1, 9)
    with Cluster.from_servers(configs(servers)) as cluster:
        batch = cluster.submit_frames(
            sampler_workflow(unique("hetero"), 0.4, 0.5), frames, output_dir=str(tmp_path), sequence_name="he"
        )
        snap = batch.wait(180)
    assert snap.state == "done", [(j.label, j.state, j.error) for j in snap.jobs]
    assert_sequence(str(tmp_path), "he", frames, frame_colour)
    assert "bare" not in snap.servers and set(snap.servers) == {"fast", "mid"}
    assert "bare" in snap.message and "NccTest" in snap.message, snap.message
    assert dict(snap.left_out)["bare"].startswith("bare: no node NccTest"), snap.left_out


def test_cancel_spares_another_clients_prompts(fleet, tmp_path):
    server = fleet["fast"]
    model = unique("cancel")

    def theirs(tag, seconds):
        prompt = sampler_workflow(model, seconds, 0.2, tag=tag, prefix="artistB/b")
        body = {"prompt": prompt, "client_id": "artistB"}
        return requests.post(server.url + "/prompt", json=body, timeout=10).json()["prompt_id"]

    def status(prompt_id):
        entry = requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json()
        return entry[prompt_id]["status"]["status_str"] if entry else None

    with Cluster.from_servers(configs([server])) as cluster:
        # 1. their prompt runs, ours wait behind it: cancelling ours must not interrupt theirs
        running = theirs("B-running", 3.0)
        batch = cluster.submit_frames(sampler_workflow(model, 1.0, 0.2), range(1, 5), output_dir=str(tmp_path))
        assert wait_until(lambda: batch.snapshot().count(JobState.SUBMITTED) >= 1, 30)
        cluster.cancel(batch)
        assert batch.wait(60).state == "cancelled"
        ours = {j.id for j in batch.snapshot().jobs}
        assert wait_until(lambda: status(running), 60) == "success"

        # 2. ours runs with theirs queued behind: ours is interrupted, theirs still runs
        batch = cluster.submit_frames(sampler_workflow(model, 3.0, 0.2), range(1, 5), output_dir=str(tmp_path))
        assert wait_until(lambda: batch.snapshot().running >= 1, 30)
        queued = theirs("B-queued", 0.3)
        cluster.cancel(batch)
        snap = batch.wait(60)
        ours |= {j.id for j in snap.jobs}
    assert snap.state == "cancelled", [(j.label, j.state) for j in snap.jobs]
    assert wait_until(lambda: status(queued), 60) == "success"
    assert wait_until(lambda: server.get_json("/prompt")["exec_info"]["queue_remaining"] == 0, 30)
    # nothing of ours is left on the server, and both of theirs rendered
    history = server.get_json("/history")
    ours_ok = [e for e in history.values() if e["prompt"][3].get("ncc_job") in ours and e["status"]["completed"]]
    theirs_ok = [e["status"]["status_str"] for e in history.values() if e["prompt"][1] in (running, queued)]
    assert ours_ok == [] and theirs_ok == ["success", "success"]


def test_outputs_by_view_without_and_through_a_shared_folder(fleet, tmp_path):
    server = fleet["mid"]
    frames = range(1, 4)
    workflow = sampler_workflow(unique("view"), 0.2, 0.2)
    with Cluster.from_servers(configs([server])) as cluster:  # no shared drive: /view
        snap = cluster.submit_frames(workflow, frames, output_dir=str(tmp_path / "v"), sequence_name="v").wait(120)
    assert snap.state == "done"
    assert_sequence(str(tmp_path / "v"), "v", frames, frame_colour)

    # the same server seen through a "mount": dir_local is a link to what the server calls dir_remote
    mount = tmp_path / "mnt"
    os.symlink(server.workdir, mount)
    shared = ServerConfig(
        name="mid", ip="127.0.0.1", port=server.port, dir_local=str(mount), dir_remote=str(server.workdir)
    )
    with Cluster.from_servers([shared]) as cluster:
        snap = cluster.submit_frames(workflow, frames, output_dir=str(tmp_path / "s"), sequence_name="s").wait(120)
    assert snap.state == "done"
    assert_sequence(str(tmp_path / "s"), "s", frames, frame_colour)
    # each output is read from the mount, not downloaded
    probe = ComfyUIServer(shared)
    try:
        for job in snap.jobs:
            data, _ctype, source = fetch_content(probe, job.outputs[0])
            assert source.startswith(str(mount)) and data[:8] == b"\x89PNG\r\n\x1a\n", source
    finally:
        probe.close()


def test_input_images_uploaded_to_servers_without_a_shared_folder(fleet, tmp_path):
    servers = [fleet["fast"], fleet["mid"]]
    frames = range(1, 7)
    local = tmp_path / "plate"
    local.mkdir()
    colours = {f: (10 * f, 255 - 20 * f, 7 * f) for f in frames}
    for f in frames:
        (local / f"plate.{f:04d}.png").write_bytes(solid_png(8, 8, colours[f]))
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": str(local / "plate.####.png")}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "up/u"}},
    }
    mapper = InputMapper(["1"], tag=uuid.uuid4().hex[:8])
    with Cluster.from_servers(configs(servers)) as cluster:
        snap = cluster.submit_frames(
            workflow, frames, output_dir=str(tmp_path / "out"), sequence_name="u", prepare=mapper
        ).wait(120)
    assert snap.state == "done", [(j.label, j.state, j.error and j.error.message) for j in snap.jobs]
    inverted = {f: tuple(255 - c for c in colours[f]) for f in frames}
    assert_sequence(str(tmp_path / "out"), "u", frames, inverted.__getitem__, float32_rounding=True)
    assert len(mapper.uploads) == len(frames)
    for server_name, value in mapper.uploads:
        on_disk = Path(fleet[server_name].input_dir) / value
        assert on_disk.is_file(), value
        assert first_pixel(str(on_disk)) == colours[int(on_disk.name.split(".")[1])]


def test_server_restarted_on_the_same_port_mid_batch(fleet, tmp_path):
    servers = [fleet["fast"], fleet["mid"]]
    frames = range(1, 13)
    victim = fleet["fast"]
    port = victim.port
    with Cluster.from_servers(configs(servers), status_ttl=1.0) as cluster:
        batch = cluster.submit_frames(
            sampler_workflow(unique("restart"), 0.8, 0.3), frames, output_dir=str(tmp_path), sequence_name="r"
        )
        assert wait_until(
            lambda: any(j.server == "fast" and j.state is JobState.RUNNING for j in batch.snapshot().jobs), 60
        )
        victim.kill()
        victim.restart()
        assert victim.port == port
        snap = batch.wait(180)
        assert snap.state == "done", [(j.label, j.state, j.error) for j in snap.jobs]
        assert_sequence(str(tmp_path), "r", frames, frame_colour)
        assert any("fast" in j.failed_servers for j in snap.jobs)  # its prompt vanished with the restart
        # the client talks to the restarted server again: once its cooldown (at most a few
        # failures' worth, COOLDOWN_MAX_S) is over and a status poll saw it, a pinned batch renders
        probe = cluster.pool.get_server_by_name("fast")
        assert wait_until(lambda: probe.update_status().is_available(time.time()), 130, 1.0), probe.get_status()
        again = cluster.submit_frames(
            sampler_workflow(unique("restart2"), 0.2, 0.2),
            range(1, 3),
            server="fast",
            output_dir=str(tmp_path / "again"),
            sequence_name="a",
        ).wait(120)
    assert again.state == "done" and again.servers == {"fast": 2}, again.servers
    assert_sequence(str(tmp_path / "again"), "a", range(1, 3), frame_colour)


def test_server_sigkilled_mid_batch_every_frame_once(fleet, tmp_path):
    # Last test of the tier: the killed server stays down (nothing else needs it).
    servers = [fleet["fast"], fleet["mid"], fleet["slow"]]
    frames = range(1, 19)
    victim = fleet["mid"]
    with Cluster.from_servers(configs(servers), status_ttl=1.0) as cluster:
        batch = cluster.submit_frames(
            sampler_workflow(unique("kill"), 0.6, 0.3), frames, output_dir=str(tmp_path), sequence_name="k"
        )
        assert wait_until(
            lambda: any(j.server == "mid" and j.state is JobState.RUNNING for j in batch.snapshot().jobs), 60
        )
        started = time.monotonic()
        victim.kill()
        snap = batch.wait(180)
    assert snap.state == "done", [(j.label, j.state, j.error) for j in snap.jobs]
    assert_sequence(str(tmp_path), "k", frames, frame_colour)
    assert any("mid" in j.failed_servers for j in snap.jobs)
    counts = executions([fleet["fast"], fleet["slow"]])
    assert all(v == 1 for v in counts.values()), counts
    print(f"\n[real] SIGKILL mid-batch: the rest finished {time.monotonic() - started:.1f}s after the kill")
