"""Cleaning up after a dead client, against simulator processes: ours removed, nobody else's touched."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from types import SimpleNamespace as NS

import pytest
import requests

from nuke_comfy_cluster.core.cleanup import Targets, cleanup, select_targets
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.ledger import JobUpdate, Ledger, SubmitOptions, record_for
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.sim.testkit import uncached
from tests.conftest import load_capture, sim_configs, wait_until

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
}


# --------------------------------------------------------------------------- helpers


def post(proc, client_id, extra=None, seconds=None):
    """POST /prompt as a client would; ``seconds`` makes the simulator take that long."""
    extra = dict(extra or {})
    if seconds is not None:
        extra["sim_seconds"] = seconds
    body = {"prompt": uncached(WORKFLOW), "client_id": client_id, "extra_data": extra}
    answer = requests.post(proc.url + "/prompt", json=body, timeout=5)
    answer.raise_for_status()
    return answer.json()["prompt_id"]


def queue_ids(proc):
    body = requests.get(proc.url + "/queue", timeout=5).json()
    return [i[1] for i in body["queue_running"]], [i[1] for i in body["queue_pending"]]


def history(proc):
    return requests.get(proc.url + "/history", timeout=5).json()


def status_of(proc, prompt_id):
    entry = history(proc).get(prompt_id)
    return entry["status"]["status_str"] if entry else None


class DeadClient:
    """A client that wrote its batch to the ledger, sent prompts the way the dispatcher does, and died."""

    def __init__(self, ledger, batch_id, n_jobs, finish=None):
        jobs = [NS(id=uuid.uuid4().hex, frame=i, iteration=None, seed=None, label=f"frame {i}") for i in range(n_jobs)]
        self.batch = NS(id=batch_id, name=batch_id, created_at=time.time(), jobs=jobs)
        self.writer = ledger.create(
            record_for(self.batch, workflow=WORKFLOW, options=SubmitOptions(frames=f"0-{n_jobs - 1}"))
        )
        self.client_id = f"ncc-{uuid.uuid4().hex}"
        self.finish = finish

    def send(self, proc, server, index, seconds=None, record=True):
        token = uuid.uuid4().hex
        job = self.batch.jobs[index]
        prompt_id = post(proc, self.client_id, {"ncc_job": job.id, "ncc_attempt": token}, seconds)
        if record:  # unrecorded: the client died between the POST and its ledger write
            self.writer.record_job(JobUpdate(index, "submitted", server, prompt_id, token, 1, at=time.time()))
        return prompt_id

    def die(self):
        if self.finish:
            self.writer.mark_finished(self.finish)
        else:
            self.writer.close()  # what the kernel does to the lock of a killed process


def pool_for(procs):
    return ComfyUIServerPool(sim_configs(procs), use_websocket=False)


# --------------------------------------------------------------------------- matching, without servers


def test_targets_never_match_other_clients_items_from_the_capture():
    body = load_capture("get_queue_busy_1running_2pending.json")["body_json"]
    items = body["queue_running"] + body["queue_pending"]
    everything = Targets(batch_ids=frozenset({"b"}), job_ids=frozenset({"j"}), tokens=frozenset({"t"}))
    assert items and not any(everything.matches(item) for item in items)
    ours = [7, "pid", {}, {"client_id": "ncc-1", "ncc_job": "j", "ncc_attempt": "x"}, ["2"]]
    assert everything.matches(ours)
    assert Targets(tokens=frozenset({"x"})).matches(ours)
    assert not Targets(tokens=frozenset({"y"})).matches(ours)
    assert Targets(prompt_ids=frozenset({"pid"})).matches([1, "pid"])
    assert not Targets().matches(ours) and Targets().empty


# --------------------------------------------------------------------------- against simulators


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_cleanup_removes_our_prompts_and_leaves_another_clients_running_job_alone(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.3)
    sim0, sim1 = procs
    ledger = Ledger(tmp_path / "batches")
    dead = DeadClient(ledger, "dead0001", 6)
    done = DeadClient(ledger, "done0001", 2, finish="done")

    # sim0: another artist's long frame runs; ours wait behind it (one never reached the ledger)
    theirs_running = post(sim0, "artist-b", seconds=6)
    assert wait_until(lambda: queue_ids(sim0)[0] == [theirs_running], 10)
    ours_queued = [dead.send(sim0, "sim0", 0), dead.send(sim0, "sim0", 1, record=False)]
    foreign = post(sim0, "ncc-other-machine", {"ncc_job": uuid.uuid4().hex, "ncc_attempt": uuid.uuid4().hex})
    # sim1: our long frame runs, one of ours and another artist's wait
    ours_running = dead.send(sim1, "sim1", 2, seconds=60)
    assert wait_until(lambda: queue_ids(sim1)[0] == [ours_running], 10)
    ours_queued_1 = dead.send(sim1, "sim1", 3)
    theirs_queued = post(sim1, "artist-c", seconds=0.5)
    finished_batch_prompt = done.send(sim1, "sim1", 0)
    dead.die()
    done.die()

    selection = select_targets(ledger)
    assert selection.batches == ("dead0001",)
    with pool_for(procs) as pool:
        report = cleanup(pool, selection.targets, batches=selection.batches)
    by = {s.server: s for s in report.servers}
    assert report.ok, report
    assert sorted(by["sim0"].deleted) == sorted(ours_queued) and by["sim0"].interrupted == ()
    assert by["sim1"].deleted == (ours_queued_1,) and by["sim1"].interrupted == (ours_running,)
    assert (report.deleted, report.interrupted) == (3, 1)

    # the other artist's frame was running all along and is still running: it was not interrupted
    assert queue_ids(sim0)[0] == [theirs_running]
    assert wait_until(lambda: status_of(sim0, theirs_running) is not None, 30)
    assert status_of(sim0, theirs_running) == "success"
    for proc, prompt_id in ((sim0, foreign), (sim1, theirs_queued), (sim1, finished_batch_prompt)):
        assert wait_until(lambda p=proc, i=prompt_id: status_of(p, i) is not None, 30), prompt_id
        assert status_of(proc, prompt_id) == "success"
    assert status_of(sim1, ours_running) == "error"  # interrupted
    for proc in procs:
        assert wait_until(lambda p=proc: queue_ids(p) == ([], []), 30)
    ran = set(history(sim0)) | set(history(sim1))
    assert not ran & set(ours_queued + [ours_queued_1])  # deleted before they ever ran


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_dry_run_and_live_batches_change_nothing(start_sims, tmp_path):
    (sim0,) = start_sims([1.0], seconds=0.3)
    ledger = Ledger(tmp_path / "batches")
    live = DeadClient(ledger, "live0001", 3)  # its writer is still open: a live client renders it
    running = live.send(sim0, "sim0", 0, seconds=30)
    assert wait_until(lambda: queue_ids(sim0)[0] == [running], 10)
    queued = live.send(sim0, "sim0", 1)

    selection = select_targets(ledger)
    assert selection.batches == () and "live0001" in selection.skipped[0]
    forced = select_targets(ledger, include_live=True)
    with pool_for([sim0]) as pool:
        report = cleanup(pool, forced.targets, dry_run=True)
    (server,) = report.servers
    assert report.dry_run and server.deleted == (queued,) and server.interrupted == (running,)
    assert queue_ids(sim0) == ([running], [queued])
    live.die()
    with pool_for([sim0]) as pool:
        report = cleanup(pool, select_targets(ledger, ["live"]).targets)
    assert report.servers[0].deleted == (queued,) and report.servers[0].interrupted == (running,)
    assert wait_until(lambda: queue_ids(sim0) == ([], []), 10)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_dead_server_is_reported_and_the_others_are_cleaned(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.3)
    ledger = Ledger(tmp_path / "batches")
    dead = DeadClient(ledger, "dead0002", 4)
    blocker = post(procs[0], "artist-b", seconds=20)
    assert wait_until(lambda: queue_ids(procs[0])[0] == [blocker], 10)
    queued = dead.send(procs[0], "sim0", 0)
    dead.send(procs[1], "sim1", 1, seconds=20)
    dead.writer.record_job(JobUpdate(2, "submitted", "gone-box", "p-gone", "t-gone", 1))
    dead.die()
    procs[1].kill()
    with pool_for(procs) as pool:
        report = cleanup(pool, select_targets(ledger).targets, timeout=10)
    by = {s.server: s for s in report.servers}
    assert by["sim0"].deleted == (queued,) and not by["sim0"].errors
    assert by["sim1"].errors and "sim1" in by["sim1"].errors[0] and not report.ok
    assert any("gone-box" in note for note in report.notes)
    assert queue_ids(procs[0]) == ([blocker], [])
    requests.post(procs[0].url + "/interrupt", timeout=5)  # our own test prompt: end it early


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_cleanup_command_dry_run_then_cancel(start_sims, tmp_path, monkeypatch, capsys):
    from nuke_comfy_cluster.cli import main

    procs = start_sims([1.0], seconds=0.3)
    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path / "state"))
    servers = [ServerConfig("sim0", "127.0.0.1", procs[0].port)]
    monkeypatch.setenv(
        "NUKE_COMFYUI_SERVERS", json.dumps([{"name": s.name, "ip": s.ip, "port": s.port} for s in servers])
    )
    dead = DeadClient(Ledger(), "cafe0001", 3)
    running = dead.send(procs[0], "sim0", 0, seconds=30)
    assert wait_until(lambda: queue_ids(procs[0])[0] == [running], 10)
    queued = dead.send(procs[0], "sim0", 1)
    dead.die()

    assert main(["cleanup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sim0: would delete 1 queued, would interrupt 1 running" in out and "dry run" in out
    assert queue_ids(procs[0]) == ([running], [queued])

    assert main(["cleanup", "--json", "--cancel", "cafe"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["servers"] == [{"server": "sim0", "deleted": [queued], "interrupted": [running], "errors": []}]
    assert report["cancelled_in_ledger"] == ["cafe0001"]
    assert wait_until(lambda: queue_ids(procs[0]) == ([], []), 10)
    loaded = Ledger().load("cafe0001")
    assert loaded.state == "cancelled" and loaded.counts()["cancelled"] == 3

    assert main(["cleanup"]) == 0
    assert "nothing to clean" in capsys.readouterr().out
    assert main(["cleanup", "nope0000"]) == 2
    assert "no batch 'nope0000'" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume (the command; Cluster.resume is the lead's)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_resume_command_hands_the_batch_to_cluster_resume(start_sims, tmp_path, monkeypatch, capsys):
    from nuke_comfy_cluster.cli import main
    from nuke_comfy_cluster.core.api import Cluster

    procs = start_sims([1.0], seconds=0.2)
    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NUKE_COMFYUI_SERVERS", json.dumps([{"name": "sim0", "ip": "127.0.0.1", "port": procs[0].port}]))
    ledger = Ledger()
    dead = DeadClient(ledger, "beef0001", 3)
    dead.die()
    done = DeadClient(ledger, "f00d0001", 1, finish="done")
    done.die()
    live = DeadClient(ledger, "1111aaaa", 1)

    if not hasattr(Cluster, "resume"):
        assert main(["resume", "beef"]) == 2
        assert "Cluster.resume is missing" in capsys.readouterr().err
    calls = []

    def resume(self, batch_id, options):
        calls.append((batch_id, options))
        loaded = Ledger().load(batch_id)
        frames = [spec.frame for spec in loaded.record.jobs]
        return self.submit_frames(
            WORKFLOW, frames, name=loaded.record.name, output_dir=str(tmp_path / "out"), sequence_name="r"
        )

    monkeypatch.setattr(Cluster, "resume", resume, raising=False)
    code = main(["resume", "beef", "--server", "sim0"])
    assert code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert calls == [("beef0001", {"server": "sim0"})] and re.search(r"^sim0\s+3\s", out, re.M), out
    assert sorted(os.listdir(tmp_path / "out"))[-3:] == ["r.0000.png", "r.0001.png", "r.0002.png"]
    assert main(["resume", "f00d0001"]) == 0
    assert "is done" in capsys.readouterr().out
    assert main(["resume", "1111"]) == 2
    assert "being rendered by another process" in capsys.readouterr().err
    assert len(calls) == 1
    live.die()
