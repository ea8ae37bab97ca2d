"""Batch ids on the node, Resume after a reopen, and the question when a script closes or Nuke quits.

Against simulator processes on loopback. "Quitting Nuke" is a real child process
running the fake Nuke: it quits (onScriptClose runs) and ends, so what survives the
process is what survives a real quit: the ledger, the prompts on the servers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from nuke_comfy_cluster.core.ledger import Ledger
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.nuke_host import lifecycle, submit
from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.nuke_host.submit import run_for
from nuke_comfy_cluster.sim.png import png_first_pixel
from nuke_comfy_cluster.sim.process import start_cluster, stop_all
from tests.conftest import REPO

from .conftest import WORKFLOWS, server_dicts
from .fake_nuke import FakeNuke, frame_colour
from .test_submit import TXT2IMG, make_node, reads, wait
from .test_submit import submit as press_submit

pytestmark = pytest.mark.integration

INIT = str(REPO / "init.py")
#: seconds per frame: long enough that a batch is still rendering when the script closes
FRAME_SECONDS = 0.8
#: ... and for the cancel tests: nothing may finish by itself
SLOW_SECONDS = 3.0


@pytest.fixture(scope="module")
def steady():
    procs = start_cluster([1.0, 1.0], seconds=FRAME_SECONDS)
    for p, name in zip(procs, ("steady-a", "steady-b")):
        p.name = name
    yield procs
    stop_all(procs)


@pytest.fixture(scope="module")
def slow():
    procs = start_cluster([1.0, 1.0], seconds=SLOW_SECONDS)
    for p, name in zip(procs, ("slow-a", "slow-b")):
        p.name = name
    yield procs
    stop_all(procs)


def per_frame_workflow(folder: Path) -> Path:
    """A prompt that differs per frame and per test: an identical one comes from the server's cache."""
    workflow = json.loads(json.dumps(TXT2IMG))
    workflow["2"]["inputs"]["text"] = f"a lighthouse at dusk, {uuid.uuid4().hex}, frame ####"
    path = folder / "per_frame.json"
    path.write_text(json.dumps(workflow), encoding="utf-8")
    return path


@pytest.fixture
def fake(fake: FakeNuke) -> FakeNuke:
    """A GUI session started the way Nuke starts: init.py registers the script callbacks."""
    fake.run_file(INIT)
    return fake


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def queued_of(procs: List[Any], batch_id: str) -> List[str]:
    """Our batch's prompts still queued or running on the servers (by the marker they carry)."""
    found = []
    for p in procs:
        q = _get(p.url + "/queue")
        for item in q["queue_running"] + q["queue_pending"]:
            if len(item) > 3 and isinstance(item[3], dict) and item[3].get("ncc_batch") == batch_id:
                found.append(item[1])
    return found


def history_of(procs: List[Any], batch_id: str) -> List[Tuple[str, List[str]]]:
    """(job id, events) of every prompt of our batch the servers ran or started."""
    out = []
    for p in procs:
        for entry in _get(p.url + "/history?max_items=500").values():
            extra = entry["prompt"][3]
            if extra.get("ncc_batch") == batch_id:
                out.append((extra.get("ncc_job", ""), [m[0] for m in entry["status"]["messages"]]))
    return out


def renders_per_job(procs: List[Any], batch_id: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for job, events in history_of(procs, batch_id):
        if "execution_success" in events:
            counts[job] = counts.get(job, 0) + 1
    return counts


def settle(fake: FakeNuke, timeout: float = 20) -> None:
    """Let the ledger look-ups end and their answers reach the nodes (main thread)."""
    deadline = time.monotonic() + timeout
    for thread in [t for t in threading.enumerate() if t.name == "ncc-ledger-check"]:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), "the ledger look-up hangs"
    fake.pump(fake.main_queue.empty, timeout, "the ledger answers")


def range_node(fake: FakeNuke, out: Path, last: int) -> Any:
    workflow = per_frame_workflow(out.parent)
    node = make_node(fake, workflow, N.MODE_RANGE, out, **{N.K_FROM_INPUT: False})
    fake.user_set(node, N.K_FIRST, 1)
    fake.user_set(node, N.K_LAST, last)
    return node


def until_running(fake: FakeNuke, node: Any, run: Any, done: int = 0) -> None:
    def ready() -> bool:
        batch = run.batch
        if batch is None or N.batch_id_of(node) != batch.id:
            return False
        snap = batch.snapshot()
        return snap.done >= done and snap.count(JobState.RUNNING) >= 1

    fake.pump(ready, 60, "a frame running on a server")


# --------------------------------------------------------------------------- the batch id


def test_submit_keeps_the_batch_id_on_the_node_set_on_the_main_thread_and_saved(
    fake: FakeNuke, configure, sims, tmp_path
):
    configure(server_dicts(sims))
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out")
    assert N.batch_id_of(node) == "" and node[N.K_RESUME].enabled() is False
    run = wait(fake, press_submit(fake, node))
    assert run.final.state == "done"
    assert N.batch_id_of(node) == run.batch.id
    assert node[N.K_BATCH].getFlag(fake.nuke.INVISIBLE)  # hidden, not DO_NOT_WRITE: saved
    threads = {t for name, args, t in fake.calls if name == "Knob.setValue" and args[0] == N.K_BATCH}
    assert threads == {threading.main_thread().name}
    assert node[N.K_RESUME].enabled() is False  # a finished batch has nothing to resume

    script = fake.save_script(str(tmp_path / "shot.nk"))
    fake.load_script(script)
    settle(fake)
    again = fake.nuke.toNode("ComfyCluster1")
    assert N.batch_id_of(again) == run.batch.id
    assert again[N.K_RESUME].enabled() is False
    assert again[N.K_STATUS].value().startswith("Done: 1 frames")  # a finished batch's status stays


def test_a_node_saved_before_resume_existed_gets_the_knobs_at_submit(fake: FakeNuke, configure, sims, tmp_path):
    configure(server_dicts(sims))
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out")
    for name in (N.K_BATCH, N.K_BATCH_INPUTS, N.K_RESUME):
        del node._knobs[name]  # what a script from an older version holds
        node._user_knobs.remove(name)
    run = wait(fake, press_submit(fake, node))
    assert run.final.state == "done"
    assert N.batch_id_of(node) == run.batch.id
    assert node[N.K_RESUME].enabled() is False


# --------------------------------------------------------------------------- closing the script


def test_closing_asks_and_cancel_reaches_the_servers_without_the_main_thread_waiting(
    fake: FakeNuke, configure, slow, tmp_path, connects
):
    configure(server_dicts(slow))
    node = range_node(fake, tmp_path / "out", 6)
    run = press_submit(fake, node)
    until_running(fake, node, run)
    batch_id = run.batch.id
    assert queued_of(slow, batch_id)  # the premise: our prompts are on the servers

    fake.answers = [False]  # No: cancel them
    seen = len(connects)
    started = time.monotonic()
    fake.close_script()
    took = time.monotonic() - started

    assert took < 2, f"closing took {took:.1f} s"
    assert threading.main_thread().name not in connects[seen:], "the main thread talked to a server"
    [question] = fake.asked
    assert "ComfyCluster1: 0 of 6 frames done" in question and "Keep it rendering" in question
    assert run.on_close == "cancel"
    snap = run.batch.wait(15)
    assert snap.state == "cancelled", snap.message
    deadline = time.monotonic() + 10
    while queued_of(slow, batch_id):
        assert time.monotonic() < deadline, "our prompts are still on the servers"
        time.sleep(0.1)
    assert lifecycle.wait_for_cancels(5)
    assert not any("execution_success" in events for _, events in history_of(slow, batch_id))
    fake.pump(run.finished.is_set, 10, "the run to end")  # with its node gone: nothing to show
    assert run.reads == [] and fake.messages == []


def test_keep_while_nuke_stays_open_the_reopened_script_follows_the_batch(fake: FakeNuke, configure, steady, tmp_path):
    configure(server_dicts(steady))
    out = tmp_path / "out"
    node = range_node(fake, out, 6)
    run = press_submit(fake, node)
    until_running(fake, node, run)
    script = fake.save_script(str(tmp_path / "shot.nk"))

    fake.answers = [True]  # Yes: keep rendering
    fake.close_script()
    assert run.on_close == "keep" and not run.batch.finished  # it goes on, every frame is sent

    fake.load_script(script)  # closing the empty script in between asks nothing more
    assert len(fake.asked) == 1
    again = fake.nuke.toNode("ComfyCluster1")
    assert run_for(again) is run  # taken back at load, before any ledger look-up
    assert again[N.K_STATUS].value().startswith("Running")
    wait(fake, run)
    assert run.final.state == "done"
    [read] = reads(fake)
    assert read["file"].value().endswith("/ComfyCluster1.####.png")
    assert (read["first"].value(), read["last"].value()) == (1, 6)
    assert again[N.K_STATUS].value().startswith("Done: 6 frames")
    assert all((out / f"ComfyCluster1.{f:04d}.png").is_file() for f in range(1, 7))


def test_a_kept_batch_that_ended_while_the_script_was_closed_gets_its_reads_on_reopen(
    fake: FakeNuke, configure, steady, tmp_path
):
    configure(server_dicts(steady))
    node = range_node(fake, tmp_path / "out", 2)
    run = press_submit(fake, node)
    until_running(fake, node, run)
    script = fake.save_script(str(tmp_path / "shot.nk"))
    fake.answers = [True]
    fake.close_script()
    wait(fake, run)  # ends with nobody to show it to
    assert run.final.state == "done" and run.reads == []

    fake.load_script(script)
    again = fake.nuke.toNode("ComfyCluster1")
    assert [r.name() for r in reads(fake)] == ["ComfyCluster1_result"]
    assert again[N.K_STATUS].value().startswith("Done: 2 frames")
    assert again[N.K_RESUME].enabled() is False


def test_without_a_gui_closing_keeps_rendering_and_detaches_at_exit(
    monkeypatch: pytest.MonkeyPatch, configure, steady, tmp_path, caplog: pytest.LogCaptureFixture
):
    fake = FakeNuke(gui=False)  # nuke -t: nobody to ask
    fake.install(monkeypatch)
    fake.run_file(INIT)
    configure(server_dicts(steady))
    node = range_node(fake, tmp_path / "out", 6)
    run = press_submit(fake, node)
    until_running(fake, node, run)
    batch_id = run.batch.id

    with caplog.at_level(logging.WARNING):
        fake.close_script()
    assert fake.asked == [] and fake.called("nuke.ask") == []
    assert run.on_close == "keep" and not run.batch.finished
    assert batch_id in caplog.text and "python -m nuke_comfy_cluster resume" in caplog.text

    running = [j.prompt_id for j in run.batch.snapshot().jobs if j.state is JobState.RUNNING]
    submit.detach_at_exit()  # what Python runs when this process exits
    snap = run.batch.snapshot()
    assert snap.state == "detached"
    fake.pump(run.finished.is_set, 10, "the run to end")
    assert run.final.state == "detached"
    summary = Ledger().summary(batch_id)
    assert summary.state == "unfinished" and not summary.live  # resumable by anyone
    # the prompts that were running were left alone: they finish on their servers
    deadline = time.monotonic() + 15
    finished = set()
    while not set(running) <= finished:
        assert time.monotonic() < deadline, "the detached prompts did not finish"
        finished = {pid for p in steady for pid, e in _get(p.url + "/history?max_items=500").items()}
        time.sleep(0.2)
    assert not any("execution_interrupted" in events for _, events in history_of(steady, batch_id))


# --------------------------------------------------------------------------- quitting Nuke (a real process)

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from fake_nuke import FakeNuke
    from nuke_comfy_cluster.core.state import JobState
    fake = FakeNuke(gui=True)
    sys.modules.update(nuke=fake.nuke, nukescripts=fake.nukescripts)
    sys.modules["nukescripts.panels"] = fake.panels_module
    fake.run_file({init!r})  # Nuke's start-up registers the script callbacks
    from nuke_comfy_cluster.nuke_host import node as N
    from nuke_comfy_cluster.nuke_host.submit import run_for
    node = N.create_node()
    for knob, value in (
        (N.K_WORKFLOW, {workflow!r}), (N.K_MODE, N.MODE_RANGE), (N.K_FROM_INPUT, False),
        (N.K_FIRST, 1), (N.K_LAST, {last}), (N.K_OUTPUT, {out!r}), (N.K_SEQUENCE, "shot"),
    ):
        fake.user_set(node, knob, value)
    fake.press(node, N.K_SUBMIT)
    run = run_for(node)

    def ready():
        b = run.batch
        if b is None or N.batch_id_of(node) != b.id:
            return False
        s = b.snapshot()
        return s.done >= {done} and s.count(JobState.RUNNING) >= 1

    fake.pump(ready, 60, "frames running")
    fake.save_script({script!r})
    fake.answers = [{answer}]
    print("BATCH", run.batch.id, run.batch.snapshot().done, flush=True)
    fake.quit()
    # and the process ends at once, as Nuke does once the script is closed (no I/O first: a
    # print here would let the dispatcher's threads run and hide a cancel lost at exit)
    sys.exit(0 if len(fake.asked) == 1 else 3)
    """
)


def quit_nuke(procs: List[Any], tmp_path: Path, answer: bool, last: int, done: int) -> Tuple[str, int, Path, float]:
    """A Nuke that submits, saves, quits with ``answer`` to the question and exits. Returns
    (batch id, frames done when it quit, the saved script, seconds from then to its exit)."""
    script = tmp_path / "shot.nk"
    code = CHILD.format(
        tests=str(REPO / "tests" / "nuke"),
        init=INIT,
        workflow=str(per_frame_workflow(tmp_path)),
        last=last,
        out=str(tmp_path / "out"),
        done=done,
        script=str(script),
        answer=answer,
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), NUKE_COMFYUI_SERVERS=json.dumps(server_dicts(procs)))
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = child.stdout.readline()
        assert first.startswith("BATCH"), first + child.stderr.read()
        _, batch_id, done_then = first.split()
        quitted = time.monotonic()
        child.wait(60)
        exited_in = time.monotonic() - quitted
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0, (child.returncode, child.stderr.read())  # 3: not asked exactly once
    return batch_id, int(done_then), script, exited_in


def test_quitting_with_cancel_leaves_nothing_of_ours_on_the_servers(slow, tmp_path):
    batch_id, done, _, exited_in = quit_nuke(slow, tmp_path, answer=False, last=6, done=0)
    # the process was held until the servers confirmed, not until the frames would have ended
    assert exited_in < SLOW_SECONDS + 5
    assert queued_of(slow, batch_id) == []
    time.sleep(SLOW_SECONDS + 0.5)  # a prompt left running would have finished by now
    assert not any("execution_success" in events for _, events in history_of(slow, batch_id))
    assert Ledger().summary(batch_id).state == "cancelled"


def test_quitting_with_keep_then_resume_in_a_new_session_renders_every_frame_once(
    fake: FakeNuke, configure, steady, tmp_path
):
    FRAMES = 16  # noqa: N806
    # 16 frames: at the quit most were never sent (a server holds one running and one queued), so
    # the batch cannot have ended by itself however late the frames already rendered were collected
    batch_id, done_before, script, _ = quit_nuke(steady, tmp_path, answer=True, last=FRAMES, done=2)
    summary = Ledger().summary(batch_id)
    assert summary.state == "unfinished" and not summary.live, summary  # detached cleanly at exit
    assert 2 <= done_before <= summary.done < FRAMES

    # a new Nuke session opens the script while another session still holds the batch
    configure(server_dicts(steady))
    holder = Ledger().open(batch_id)
    try:
        fake.load_script(str(script))
        settle(fake)
        node = fake.nuke.toNode("ComfyCluster1")
        assert N.batch_id_of(node) == batch_id
        assert node[N.K_STATUS].value().startswith("Rendering in another session")
        assert node[N.K_RESUME].enabled() is False
    finally:
        holder.close()
    # ... and once it let go, opening the node's panel offers Resume
    fake.open_properties(node)
    settle(fake)
    status = fake.shown(node[N.K_STATUS])
    assert status.startswith(f"Unfinished: batch {batch_id[:8]}, ") and "Press Resume" in status
    assert node[N.K_RESUME].enabled() is True

    fake.press(node, N.K_RESUME)
    run = run_for(node)
    assert run is not None and fake.shown(node[N.K_STATUS]).startswith("Resuming batch")
    fake.pump(run.finished.is_set, 90, "the end of the resumed batch")
    assert run.final.state == "done", (fake.shown(node[N.K_STATUS]), run.error)
    assert fake.shown(node[N.K_STATUS]).startswith(f"Done: {FRAMES} frames")
    assert node[N.K_RESUME].enabled() is False
    [read] = reads(fake)
    assert read["file"].value().endswith("/out/shot.####.png")
    assert (read["first"].value(), read["last"].value()) == (1, FRAMES)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == [f"shot.{f:04d}.png" for f in range(1, FRAMES + 1)]  # no lock, no staging
    counts = renders_per_job(steady, batch_id)
    assert len(counts) == FRAMES and max(counts.values()) == 1, counts  # nothing rendered twice
    assert Ledger().summary(batch_id).state == "done"
    # the task ran on the run's thread, and nothing waited for a server on the main thread
    assert fake.tasks[-1].thread != threading.main_thread().name and fake.tasks[-1].closed


def test_resume_shows_why_it_cannot(fake: FakeNuke, configure, sims, tmp_path):
    configure(server_dicts(sims))
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_CURRENT, tmp_path / "out")
    run = wait(fake, press_submit(fake, node))
    node[N.K_RESUME].setEnabled(True)  # as if the ledger had said unfinished
    fake.press(node, N.K_RESUME)
    resumed = run_for(node)
    fake.pump(resumed.finished.is_set, 30, "the resume to give up")
    status = fake.shown(node[N.K_STATUS])
    assert status.startswith("Not resumed: ") and run.batch.id[:8] in status and "nothing to resume" in status
    assert "nothing to resume" in fake.messages[-1]


def test_resume_feeds_the_inputs_again_rendering_them_when_they_are_gone(
    fake: FakeNuke, configure, steady, plate, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    configure(server_dicts(steady))  # no shared drive: inputs are uploaded to each server
    plate(1, 8)
    out = tmp_path / "out"
    node = make_node(fake, WORKFLOWS / "loadimage.json", N.MODE_RANGE, out)
    run = press_submit(fake, node)
    until_running(fake, node, run)
    script = fake.save_script(str(tmp_path / "shot.nk"))
    staged = json.loads(node[N.K_BATCH_INPUTS].getText())
    assert staged == {"run_dir": run.run_dir, "inputs": [[0, "1"]], "first": 1, "last": 8}
    fake.answers = [True]
    fake.quit()
    submit.detach_at_exit()  # the process exits: the batch is detached
    fake.pump(run.finished.is_set, 10, "the run to end")
    assert run.final.state == "detached"
    assert sorted(os.listdir(run.run_dir)) == [f"in1.{f:04d}.png" for f in range(1, 9)]  # kept for Resume

    # a new Nuke opens the script; meanwhile the rendered inputs were cleaned away
    later = FakeNuke(gui=True)
    later.install(monkeypatch)
    later.run_file(INIT)
    configure(server_dicts(steady))
    submit._ended_away.clear()  # a new process remembers nothing: the ledger tells
    shutil.rmtree(run.run_dir)
    later.load_script(script)
    settle(later)
    node = later.nuke.toNode("ComfyCluster1")
    assert later.shown(node[N.K_STATUS]).startswith("Unfinished: batch ")
    assert node[N.K_RESUME].enabled() is True
    later.press(node, N.K_RESUME)
    assert later.called("nuke.execute") == [("Write1", 1, 8, 1)]  # rendered again, on the main thread
    resumed = run_for(node)
    later.pump(resumed.finished.is_set, 90, "the end of the resumed batch")
    assert resumed.final.state == "done", (later.shown(node[N.K_STATUS]), resumed.error)
    for frame in range(1, 9):
        data = (out / f"ComfyCluster1.{frame:04d}.png").read_bytes()
        # ImageInvert of what the plate holds at this very frame: each frame got its own input
        assert png_first_pixel(data) == tuple(255 - c for c in frame_colour("Plate", frame)), frame
    counts = renders_per_job(steady, run.batch.id)
    assert len(counts) == 8 and max(counts.values()) == 1, counts
    assert not os.path.exists(run.run_dir)  # the batch ended: its inputs are cleaned up now
