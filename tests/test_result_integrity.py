"""Every delivered file is its own frame's render, or the batch says why not (issue 10).

Against simulator processes that name their files like ComfyUI does (every server
counts from ``ComfyUI_00001_.png``), so two servers return the same name for two
different frames; each delivered PNG is opened and the seed in the prompt embedded
in it is checked against the frame it was delivered as.
"""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest
import requests

from nuke_comfy_cluster.core.api import Cluster, SubmitOptions
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.delivery import STAGING, SequenceLock, SuspectResult, prompt_digest, verify_file
from nuke_comfy_cluster.core.errors import ConfigError, WorkflowError
from nuke_comfy_cluster.core.frames import MAX_FRAMES, parse_frames
from nuke_comfy_cluster.core.templating import derive_seed
from tests.conftest import sim_configs

pytestmark = pytest.mark.integration

# ComfyUI's default prefix, no frame token: frames differ only by the seed
TXT2IMG = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim_sd15.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
}


def png_text(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            out[key.decode()] = value.decode("latin-1")
    return out


def embedded_seed(path):
    prompt = json.loads(png_text(path)["prompt"])
    return next(n["inputs"]["seed"] for n in prompt.values() if n["class_type"] == "KSampler")


def assert_own_frames(out, name, frames, base_seed):
    for frame in frames:
        path = os.path.join(out, f"{name}.{frame:04d}.png")
        assert os.path.isfile(path), f"frame {frame} missing"
        assert embedded_seed(path) == derive_seed(base_seed, frame, 0), f"{path} holds another frame's render"


def renders(procs):
    """Prompts each simulator ran to success (from /history)."""
    total = 0
    for proc in procs:
        history = requests.get(proc.url + "/history", timeout=5).json()
        total += sum(1 for e in history.values() if e["status"]["status_str"] == "success")
    return total


def test_alike_file_names_from_four_servers_deliver_each_frame_its_own_render(start_sims, tmp_path):
    # 4 equal servers, short frames: with a shared download folder 2-93 of 300 frames came out
    # wrong in 5 of 6 runs of this setup (a figure from the code before the fix)
    procs = start_sims([1.0, 1.0, 1.0, 1.0], seconds=0.02)
    out = tmp_path / "out"
    frames = range(1, 301)
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(
            TXT2IMG, frames, SubmitOptions(output_dir=str(out), sequence_name="shot", base_seed=7)
        ).wait(120)
    assert snap.state == "done", snap.message
    assert len({j.server for j in snap.jobs}) >= 2  # the premise: names collided across servers
    assert_own_frames(str(out), "shot", frames, 7)
    # the sequence and nothing else: no download folder, no staging, no lock
    assert sorted(os.listdir(out)) == [f"shot.{f:04d}.png" for f in frames]
    (seq,) = snap.sequences
    assert seq.pattern == str(out / "shot.####.png") and seq.first == 1 and seq.last == 300


def test_one_shared_output_folder_for_every_server(start_sims, tmp_path):
    share = tmp_path / "share"
    (share / "out").mkdir(parents=True)
    procs = start_sims([1.0, 1.0, 0.7], seconds=0.05, output_dir=str(share / "out"))
    servers = [
        ServerConfig(f"s{i}", "127.0.0.1", p.port, dir_local=str(share), dir_remote=str(share))
        for i, p in enumerate(procs)
    ]
    out = tmp_path / "seq"
    frames = range(1, 25)
    with Cluster.from_servers(servers) as cluster:
        snap = cluster.submit_frames(TXT2IMG, frames, output_dir=str(out), sequence_name="sh", base_seed=3).wait(120)
    assert snap.state == "done", (snap.message, snap.errors)
    assert_own_frames(str(out), "sh", frames, 3)
    assert sorted(os.listdir(out)) == [f"sh.{f:04d}.png" for f in frames]


def test_a_file_overwritten_by_another_prompt_is_never_delivered(tmp_path):
    """The check itself: a PNG whose embedded prompt is not the one sent is refused."""
    mine = dict(TXT2IMG)
    theirs = json.loads(json.dumps(TXT2IMG))
    theirs["3"]["inputs"]["seed"] = 99
    from nuke_comfy_cluster.sim.png import solid_png

    data = solid_png(4, 4, (1, 2, 3), {"prompt": json.dumps(theirs)})
    with pytest.raises(SuspectResult, match="another prompt"):
        verify_file(data, "ComfyUI_00001_.png", "image/png", prompt_digest(mine))
    verify_file(data, "ComfyUI_00001_.png", "image/png", prompt_digest(theirs))  # its own: accepted
    with pytest.raises(SuspectResult, match="text/html instead of an image"):
        verify_file(b"<html><body>502 Bad Gateway</body></html>", "a.png", "text/html", None)
    with pytest.raises(SuspectResult, match="not a PNG"):
        verify_file(b"GIF89a....", "a.png", "image/png", None)
    with pytest.raises(SuspectResult, match="empty"):
        verify_file(b"", "a.png", "image/png", None)


class _HtmlViewProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy in front of one simulator whose /view answers 200 with a 502 page."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.view_calls = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self, method):
        if self.path.startswith(("/view", "/api/view")):
            self.server.view_calls += 1
            body = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        r = requests.request(
            method,
            self.server.upstream + self.path,
            data=data,
            headers={"Content-Type": self.headers.get("Content-Type", "")},
            timeout=10,
        )
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def do_GET(self):
        self._forward("GET")

    def do_POST(self):
        self._forward("POST")


def test_html_error_page_from_view_is_not_delivered(start_sims, tmp_path):
    bad, good = start_sims([2.0, 0.5], seconds=0.05)
    proxy = _HtmlViewProxy(bad.url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        servers = [
            ServerConfig("proxied", "127.0.0.1", proxy.server_address[1]),
            ServerConfig("good", "127.0.0.1", good.port, priority=1),
        ]
        out = tmp_path / "out"
        with Cluster.from_servers(servers) as cluster:
            snap = cluster.submit_frames(
                TXT2IMG, range(1, 5), output_dir=str(out), sequence_name="f", base_seed=1
            ).wait(120)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.view_calls >= 1  # the premise: the HTML page was fetched
    assert snap.state == "done", snap.message
    assert {j.server for j in snap.jobs} == {"good"}  # every frame came from the honest server
    assert_own_frames(str(out), "f", range(1, 5), 1)
    for name in os.listdir(out):
        with open(out / name, "rb") as f:
            assert b"<html" not in f.read(200).lower()


def test_preview_only_workflow_with_an_output_folder_fails_before_sending(start_sims, tmp_path):
    (proc,) = start_sims([1.0], seconds=0.05)
    preview = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    with Cluster.from_servers(sim_configs([proc])) as cluster:
        with pytest.raises(WorkflowError, match="saves no image.*EmptyImage, PreviewImage"):
            cluster.submit_frames(preview, range(1, 4), output_dir=str(tmp_path / "o"), sequence_name="p")
    assert requests.get(proc.url + "/history", timeout=5).json() == {}


def test_output_folder_that_is_a_file_is_refused_before_rendering(start_sims, tmp_path):
    (proc,) = start_sims([1.0], seconds=0.05)
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with Cluster.from_servers(sim_configs([proc])) as cluster:
        with pytest.raises(ConfigError, match="is a file"):
            cluster.submit_frames(TXT2IMG, range(1, 4), output_dir=str(blocker), sequence_name="x")
    assert renders([proc]) == 0


def test_a_local_write_failure_stops_the_batch_once_and_blames_no_server(start_sims, tmp_path):
    """The output folder becomes unusable mid-batch: no re-render, no server in cooldown."""
    procs = start_sims([1.0, 1.0], seconds=0.3)
    out = tmp_path / "out"
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        batch = cluster.submit_frames(TXT2IMG, range(1, 31), output_dir=str(out), sequence_name="s", base_seed=1)
        # after the first frames land, the folder's staging area is replaced by a file: writes fail
        deadline = 60
        import time

        t0 = time.monotonic()
        while not any(n.startswith("s.") for n in os.listdir(out)) and time.monotonic() - t0 < deadline:
            time.sleep(0.05)
        staging = out / STAGING
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        staging.write_text("in the way")
        snap = batch.wait(60)
        cooling = [s for s in cluster.pool.server_snapshots() if s.counters.failures or s.cooldown_until]
    assert snap.finished and snap.state == "failed"
    local = [e for e in snap.errors if e.kind == "local"]
    assert len(snap.errors) == 1 and local, snap.errors  # reported once, as a local fault
    assert "could not write" in local[0].message and str(out) in local[0].message
    assert not cooling  # no server blamed
    # nothing rendered more than once, and at most the frames in flight beyond what was delivered
    ran = renders(procs)
    delivered = snap.done
    # the frame whose write failed, the ones running then (one per server), and at most one per
    # server that started before the withdrawal of the queued ones reached it; never the batch
    assert ran <= delivered + 1 + 2 * len(procs), (ran, delivered)
    assert ran < 30


def test_second_batch_into_the_same_sequence_is_refused_and_overwrite_is_explicit(start_sims, tmp_path):
    (proc,) = start_sims([1.0], seconds=0.2)
    out = tmp_path / "out"
    with Cluster.from_servers(sim_configs([proc])) as cluster:
        first = cluster.submit_frames(
            TXT2IMG, range(1, 6), output_dir=str(out), sequence_name="s", base_seed=1, name="artist A"
        )
        with pytest.raises(ConfigError, match="being written by another batch .artist A"):
            cluster.submit_frames(TXT2IMG, range(1, 6), output_dir=str(out), sequence_name="s", base_seed=2)
        assert first.wait(60).state == "done"
        # finished: the lock is gone, but the frames are there now
        assert not any(n.endswith(".ncc-lock") for n in os.listdir(out))
        with pytest.raises(ConfigError, match="3 of the 3 frames of sequence s already exist"):
            cluster.submit_frames(TXT2IMG, range(3, 6), output_dir=str(out), sequence_name="s", base_seed=2)
        again = cluster.submit_frames(
            TXT2IMG, range(3, 6), SubmitOptions(output_dir=str(out), sequence_name="s", base_seed=2, overwrite=True)
        ).wait(60)
    assert again.state == "done"
    assert again.existed == (3, 4, 5) and again.sequences[0].existed == (3, 4, 5)
    assert_own_frames(str(out), "s", range(3, 6), 2)
    assert_own_frames(str(out), "s", range(1, 3), 1)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import subprocess
    import sys

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nuke_comfy_cluster.core.delivery import SequenceLock as L; L.acquire(%r, 's', 'b1')" % str(tmp_path),
        ],
        check=True,
    )
    assert child.returncode == 0 and (tmp_path / ".s.ncc-lock").exists()
    lock = SequenceLock.acquire(str(tmp_path), "s", "b2")  # the owner is gone: taken over
    lock.release()
    assert not (tmp_path / ".s.ncc-lock").exists()


def test_every_saving_node_and_batch_image_becomes_its_own_sequence(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.05)
    wf = json.loads(json.dumps(TXT2IMG))
    wf["5"]["inputs"]["batch_size"] = 2
    wf["10"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "matte_####"}}
    out = tmp_path / "out"
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        snap = cluster.submit_frames(wf, range(1, 5), output_dir=str(out), sequence_name="sh", base_seed=5).wait(60)
    assert snap.state == "done", snap.message
    names = sorted(os.listdir(out))
    expected = sorted(f"{stem}.{f:04d}.png" for stem in ("sh", "sh_b1", "sh_matte", "sh_matte_b1") for f in range(1, 5))
    assert names == expected
    assert [s.pattern for s in snap.sequences][0] == str(out / "sh.####.png")
    assert {s.label for s in snap.sequences} == {"", "matte"}
    assert all(len(j.outputs) == 4 for j in snap.jobs)
    for f in range(1, 5):
        assert embedded_seed(str(out / f"sh_matte_b1.{f:04d}.png")) == derive_seed(5, f, 0)


def test_frame_lists_are_bounded_and_lazy():
    with pytest.raises(ConfigError, match="empty"):
        parse_frames("")
    with pytest.raises(ConfigError, match="3,000,000 frames; one batch holds at most"):
        parse_frames("1-3000000")
    with pytest.raises(ConfigError, match="twice"):
        parse_frames("1-10,5")
    frames = parse_frames("1001-1024,2000-2010x5")
    assert len(frames) == 27 and frames.first == 1001 and frames.last == 2010 and 2005 in frames
    big = parse_frames(f"1-{MAX_FRAMES}")
    assert len(big) == MAX_FRAMES and big[-1] == MAX_FRAMES


def test_a_large_batch_holds_frame_numbers_not_prompts(tmp_path):
    """100,000 frames: prompts are made when sent; memory per job stays small."""
    import tracemalloc

    from nuke_comfy_cluster.core.pool import ComfyUIServerPool

    cluster = Cluster(ComfyUIServerPool([ServerConfig("x", "127.0.0.1", 9)]), start=False)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    frames = parse_frames("1-100000")
    jobs_bytes = None
    from nuke_comfy_cluster.core.jobs import Job

    jobs = [
        Job(index=i, frame=f, factory=lambda j: {"1": {"class_type": "X", "inputs": {"f": j.frame}}})
        for i, f in enumerate(frames)
    ]
    jobs_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert jobs[54321].prompt == {"1": {"class_type": "X", "inputs": {"f": 54322}}}
    assert jobs_bytes / len(jobs) < 2500, jobs_bytes / len(jobs)  # a prompt copy each would be far more
    cluster.close()


def test_leaving_the_cluster_cancels_our_prompts_and_wait_returns(start_sims, tmp_path):
    """close() (and leaving ``with``) cancels: nothing of ours stays queued, wait() returns."""
    (proc,) = start_sims([1.0], seconds=1.0)
    cluster = Cluster.from_servers(sim_configs([proc]))
    batch = cluster.submit_frames(TXT2IMG, range(1, 11), output_dir=str(tmp_path / "o"), sequence_name="c", base_seed=1)
    import time

    deadline = time.monotonic() + 20
    while not any(j.state.value == "running" for j in batch.snapshot().jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.close()
    snap = batch.wait(1)
    assert snap.finished and snap.state == "cancelled", (snap.state, snap.message)
    import re

    assert re.fullmatch(r"(\d+ done, )?\d+ cancelled", snap.message), snap.message  # the present state only
    queue = requests.get(proc.url + "/queue", timeout=5).json()
    assert queue["queue_pending"] == [] and queue["queue_running"] == []
    assert not (tmp_path / "o" / ".c.ncc-lock").exists()


def test_detach_leaves_prompts_rendering_and_wait_returns(start_sims, tmp_path):
    (proc,) = start_sims([1.0], seconds=1.0)
    cluster = Cluster.from_servers(sim_configs([proc]))
    batch = cluster.submit_frames(TXT2IMG, range(1, 6), output_dir=str(tmp_path / "o"), sequence_name="d", base_seed=1)
    import time

    deadline = time.monotonic() + 20
    while not any(j.prompt_id for j in batch.snapshot().jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.close(detach=True)
    snap = batch.wait(1)
    assert snap.state == "detached" and "resume" in snap.message and batch.id in snap.message
    queue = requests.get(proc.url + "/queue", timeout=5).json()
    assert queue["queue_running"] or queue["queue_pending"]  # still rendering there


def test_the_render_check_accepts_what_comfyui_converts_and_adds():
    """ComfyUI embeds the prompt after validation: "1" for an INT input comes back as 1, and
    LoadImage nodes gain is_changed. Neither makes a render another frame's."""
    sent = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "color": "1"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    }
    embedded = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16.0, "color": 1}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "is_changed": ["abc"]},
    }
    assert prompt_digest(sent) == prompt_digest(embedded)
    embedded["1"]["inputs"]["color"] = 2
    assert prompt_digest(sent) != prompt_digest(embedded)
