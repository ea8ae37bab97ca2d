"""The batch ledger: records, journal and compaction, locks, prune, the `batches` command, and kills."""

from __future__ import annotations

import errno
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from nuke_comfy_cluster.core import ledger_writer
from nuke_comfy_cluster.core.ledger import (
    JobUpdate,
    Ledger,
    LedgerError,
    SubmitOptions,
    record_for,
    update_for,
    workflow_hash,
)
from nuke_comfy_cluster.core.state_dir import state_dir

REPO = Path(__file__).resolve().parents[1]
POSIX = os.name == "posix"
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "color": 1}},
    "2": {"class_type": "SaveImage", "inputs": {}},
}


def fake_batch(batch_id="b0001", n=20, name="shot010", created=None):
    jobs = [
        NS(id=f"{batch_id}-job{i}", frame=1001 + i, iteration=None, seed=None, label=f"frame {1001 + i}")
        for i in range(n)
    ]
    return NS(id=batch_id, name=name, created_at=created or time.time(), jobs=jobs)


def new_batch(ledger, batch_id="b0001", n=20, **kw):
    options = SubmitOptions(frames=f"1001-{1000 + n}", seed=7, output_dir="/shots/x", sequence_name="x", server=None)
    return ledger.create(record_for(fake_batch(batch_id, n, **kw), workflow=WORKFLOW, options=options))


def upd(i, state, k=0, **kw):
    return JobUpdate(
        i, state, server=kw.pop("server", "sim0"), prompt_id=f"p{k}", attempt=f"t{k}", attempts=k, at=time.time(), **kw
    )


# --------------------------------------------------------------------------- state folder


def test_state_dir_per_platform(tmp_path):
    home = Path(os.path.expanduser("~"))
    assert state_dir({"NCC_STATE_DIR": str(tmp_path)}, "linux") == tmp_path
    assert state_dir({"XDG_STATE_HOME": "/x/state"}, "linux") == Path("/x/state/nuke_comfy_cluster")
    assert state_dir({"XDG_STATE_HOME": "relative"}, "linux") == home / ".local/state/nuke_comfy_cluster"
    assert state_dir({}, "linux") == home / ".local/state/nuke_comfy_cluster"
    assert state_dir({}, "darwin") == home / "Library/Application Support/nuke_comfy_cluster"
    assert state_dir({"LOCALAPPDATA": "C:/Users/a/AppData/Local"}, "win32") == Path(
        "C:/Users/a/AppData/Local/nuke_comfy_cluster"
    )


def test_default_ledger_lives_in_the_state_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path))
    assert Ledger().root == tmp_path / "batches"


# --------------------------------------------------------------------------- records


def test_workflow_hash_is_canonical():
    a = {"2": {"inputs": {"b": 1, "a": [1, 2]}, "class_type": "X"}, "1": {"class_type": "Y", "inputs": {}}}
    b = json.loads(json.dumps(a, sort_keys=True, indent=3))
    assert workflow_hash(a) == workflow_hash(b) and len(workflow_hash(a)) == 64
    b["2"]["inputs"]["b"] = 2
    assert workflow_hash(a) != workflow_hash(b)


def test_create_and_load_round_trip(tmp_path):
    ledger = Ledger(tmp_path)
    with new_batch(ledger, n=5) as writer:
        writer.record_job(upd(0, "submitted", 1))
        writer.record_job(upd(0, "running", 2))
        writer.record_job(upd(0, "done", 3, files=("/shots/x/x.1001.png",), failed_servers=("sim1",)))
        writer.record_job(upd(3, "failed", 4, error="node 3: out of memory"))
        loaded = ledger.load("b0001")
        assert loaded.live and loaded.state == "running"
    record = loaded.record
    assert record.name == "shot010" and record.workflow == WORKFLOW and record.workflow_hash == workflow_hash(WORKFLOW)
    assert record.options == SubmitOptions(frames="1001-1005", seed=7, output_dir="/shots/x", sequence_name="x")
    assert [(j.index, j.job_id, j.frame, j.label) for j in record.jobs][:2] == [
        (0, "b0001-job0", 1001, "frame 1001"),
        (1, "b0001-job1", 1002, "frame 1002"),
    ]
    done = loaded.jobs[0]
    assert (done.state, done.prompt_id, done.attempt, done.attempts, done.files, done.failed_servers) == (
        "done",
        "p3",
        "t3",
        3,
        ("/shots/x/x.1001.png",),
        ("sim1",),
    )
    assert loaded.jobs[3].error == "node 3: out of memory"
    assert loaded.counts() == {"pending": 3, "submitted": 0, "running": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert not ledger.load("b0001").live and ledger.load("b0001").state == "unfinished"


def test_records_from_real_jobs_and_batches(tmp_path):
    from nuke_comfy_cluster.core.jobs import Batch, Job
    from nuke_comfy_cluster.core.state import JobState

    jobs = [Job(dict(WORKFLOW), index=i, frame=10 + i, label=f"frame {10 + i}", seed=i) for i in range(3)]
    batch = Batch(jobs, name="real", output_dir=str(tmp_path / "out"), sequence_name="seq")
    record = record_for(batch, workflow=WORKFLOW, client_id="ncc-abc")
    assert [j.job_id for j in record.jobs] == [j.id for j in jobs]
    assert record.options.output_dir == str(tmp_path / "out") and record.options.sequence_name == "seq"
    job = jobs[1]
    job.state, job.server, job.prompt_id, job.attempt_token, job.attempts = JobState.RUNNING, "sim0", "pid", "tok", 2
    update = update_for(job, 1)
    assert (update.index, update.state, update.server, update.prompt_id, update.attempt, update.attempts) == (
        1,
        "running",
        "sim0",
        "pid",
        "tok",
        2,
    )
    ledger = Ledger(tmp_path / "l")
    with ledger.create(record) as writer:
        writer.record_job(update)
    assert ledger.load(batch.id).jobs[1].state == "running" and ledger.load(batch.id).record.client_id == "ncc-abc"


def test_bad_input_is_refused_with_a_message(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(LedgerError, match="not a batch id"):
        ledger.load("../etc/passwd")
    with pytest.raises(LedgerError, match="no batch"):
        ledger.load("missing")
    with new_batch(ledger, n=2) as writer:
        with pytest.raises(LedgerError, match="out of range"):
            writer.record_job(upd(2, "done"))
        with pytest.raises(ValueError, match="finished state"):
            writer.mark_finished("running")
        with pytest.raises(LedgerError, match="in use by process"):
            new_batch(Ledger(tmp_path), n=2)
    with pytest.raises(LedgerError, match="already in the ledger"):
        new_batch(Ledger(tmp_path), n=2)
    with pytest.raises(ValueError, match="workflow"):
        record_for(fake_batch())


# --------------------------------------------------------------------------- journal, compaction, damage


def expected_after(n_jobs, last_k):
    """The state the kill test's writer leaves after events 0..last_k: event k sets job k % n."""
    out = {}
    for k in range(last_k + 1):
        out[k % n_jobs] = k
    return out


def test_compaction_keeps_every_update_and_few_files(tmp_path):
    ledger = Ledger(tmp_path, min_compact_bytes=2000)
    writer = new_batch(ledger, n=37)
    for k in range(3000):
        writer.record_job(upd(k % 37, ("submitted", "running", "done")[k % 3], k))
    assert writer.compactions > 50
    loaded = ledger.load("b0001")
    assert {i: u.attempts for i, u in loaded.jobs.items()} == expected_after(37, 2999)
    journals = [p for p in os.listdir(tmp_path) if p.endswith(".journal")]
    assert len(journals) == 1, journals
    writer.close()


def test_each_step_of_a_compaction_can_be_the_last(tmp_path):
    """Stop a compaction after each of its steps (as a kill would) and load what is on disk."""
    ledger = Ledger(tmp_path)
    writer = new_batch(ledger, n=5)
    for k in range(12):
        writer.record_job(upd(k % 5, "running", k))
    writer.compact()
    for k in range(12, 30):
        writer.record_job(upd(k % 5, "done", k))
    files = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path) if p.endswith((".state", ".journal"))}
    writer.compact()
    after = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path) if p.endswith((".state", ".journal"))}
    writer.close()
    expected = expected_after(5, 29)

    def load_with(contents):
        for p in os.listdir(tmp_path):
            if p.endswith((".state", ".journal")):
                (tmp_path / p).unlink()
        for name, data in contents.items():
            (tmp_path / name).write_bytes(data)
        return {i: u.attempts for i, u in ledger.load("b0001").jobs.items()}

    new_journal = next(n for n in after if n.endswith(".journal"))
    # 1. only the new (empty) journal was created
    assert load_with({**files, new_journal: b""}) == expected
    # 2. the state file was replaced, the old journals not yet deleted (skipped, or replayed harmlessly)
    assert load_with({**files, **after}) == expected
    # 3. all done
    assert load_with(after) == expected


def test_a_torn_last_line_is_ignored_and_writing_goes_on(tmp_path):
    ledger = Ledger(tmp_path)
    writer = new_batch(ledger, n=4)
    writer.record_job(upd(0, "done", 1))
    writer.close()
    (journal,) = [tmp_path / p for p in os.listdir(tmp_path) if p.endswith(".journal")]
    with open(journal, "ab") as f:
        f.write(b'{"i":1,"s":"done","p":"torn"')  # a kill in the middle of a write
    loaded = ledger.load("b0001")
    assert loaded.counts()["done"] == 1 and loaded.damaged_lines == 0 and 1 not in loaded.jobs
    writer = ledger.open("b0001")
    writer.record_job(upd(2, "done", 2))
    writer.close()
    assert sorted(ledger.load("b0001").jobs) == [0, 2]


def test_a_damaged_middle_line_is_skipped_and_counted(tmp_path):
    ledger = Ledger(tmp_path)
    with new_batch(ledger, n=4) as writer:
        writer.record_job(upd(0, "done", 1))
        (journal,) = [tmp_path / p for p in os.listdir(tmp_path) if p.endswith(".journal")]
        with open(journal, "ab") as f:
            f.write(b"\x00\x00\x00garbage\n")
        writer.record_job(upd(1, "done", 2))
    loaded = ledger.load("b0001")
    assert sorted(loaded.jobs) == [0, 1] and loaded.damaged_lines == 1


def test_a_failed_write_does_not_raise_and_the_next_line_is_clean(tmp_path, monkeypatch):
    ledger = Ledger(tmp_path)
    writer = new_batch(ledger, n=4)
    real_write = os.write
    calls = {"n": 0}

    def half_then_fail(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data[:7]))  # half a line reached the disk, then it filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ledger_writer.os, "write", half_then_fail)
    writer.record_job(upd(0, "done", 1))
    assert writer.error and "disk full" in writer.error
    writer.record_job(upd(1, "done", 2))
    assert writer.error is None
    monkeypatch.undo()
    writer.close()
    loaded = ledger.load("b0001")
    assert sorted(loaded.jobs) == [1] and loaded.damaged_lines == 1


def test_a_reader_during_compactions_always_sees_a_prefix(tmp_path):
    ledger = Ledger(tmp_path, min_compact_bytes=1500)
    writer = new_batch(ledger, n=11)
    stop = threading.Event()
    total = 4000

    def write():
        for k in range(total):
            writer.record_job(upd(k % 11, "done", k))
        stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = -1
    reads = 0
    while not stop.is_set() or reads == 0:
        loaded = ledger.load("b0001")
        reads += 1
        last = max((u.attempts for u in loaded.jobs.values()), default=-1)
        assert last >= seen  # never goes back in time
        if last >= 0:
            assert {i: u.attempts for i, u in loaded.jobs.items()} == expected_after(11, last)
        seen = last
    thread.join()
    writer.close()
    assert reads > 3 and writer.compactions > 10


# --------------------------------------------------------------------------- finish, reopen, locks


def test_finish_reopen_and_the_lock(tmp_path):
    ledger = Ledger(tmp_path)
    writer = new_batch(ledger, n=3)
    assert ledger.is_live("b0001")
    with pytest.raises(LedgerError, match=f"in use by process {os.getpid()}"):
        ledger.open("b0001")
    for i in range(3):
        writer.record_job(upd(i, "done", i))
    writer.mark_finished("done", "3 frames")
    assert writer.closed and not ledger.is_live("b0001")
    loaded = ledger.load("b0001")
    assert (loaded.finished, loaded.message, loaded.state) == ("done", "3 frames", "done")
    again = ledger.open("b0001")  # retry / resume of a finished batch
    assert ledger.load("b0001").state == "done"
    again.reopen()
    again.record_job(upd(1, "running", 9))
    assert ledger.load("b0001").state == "running"
    again.close()
    assert ledger.load("b0001").state == "unfinished"


def test_list_is_newest_first_and_its_summaries_match_a_full_load(tmp_path):
    ledger = Ledger(tmp_path)
    now = time.time()
    for n, (bid, state) in enumerate([("b0001", "done"), ("b0002", None), ("b0003", "failed"), ("b0004", "cancelled")]):
        writer = new_batch(ledger, bid, n=4, created=now - 100 + n)
        writer.record_job(upd(0, "done", 1))
        writer.record_job(upd(1, "failed", 2))
        if state:
            writer.mark_finished(state)
        else:
            writer.close()
    listed = ledger.list()
    assert [s.batch_id for s in listed] == ["b0004", "b0003", "b0002", "b0001"]
    assert [s.state for s in listed] == ["cancelled", "failed", "unfinished", "done"]
    for summary in listed:
        assert summary == ledger.load(summary.batch_id).summary()
        assert (summary.done, summary.failed, summary.total) == (1, 1, 4)
    assert [s.batch_id for s in ledger.unfinished()] == ["b0002"]
    assert [s.batch_id for s in ledger.unfinished(workflow_hash(WORKFLOW))] == ["b0002"]
    assert ledger.unfinished("0" * 64) == []


def test_a_damaged_batch_is_listed_with_its_problem(tmp_path):
    ledger = Ledger(tmp_path)
    new_batch(ledger, "b0001", n=2).close()
    (tmp_path / "b0002.batch").write_text('{"format": "nope"}\n[]\n')
    listed = {s.batch_id: s for s in ledger.list()}
    assert listed["b0001"].state == "unfinished"
    assert listed["b0002"].state == "damaged" and "b0002.batch" in listed["b0002"].problem


def test_find_accepts_unique_prefixes(tmp_path):
    ledger = Ledger(tmp_path)
    for bid in ("abcd1111", "abcd2222", "ffff0000"):
        new_batch(ledger, bid, n=1).close()
    assert ledger.find("ffff") == "ffff0000" and ledger.find("abcd1111") == "abcd1111"
    with pytest.raises(LedgerError, match="ambiguous"):
        ledger.find("abcd")
    with pytest.raises(LedgerError, match="too short"):
        ledger.find("ab")
    with pytest.raises(LedgerError, match="no batch"):
        ledger.find("9999")


def test_prune_keeps_recent_unfinished_and_live_batches(tmp_path):
    ledger = Ledger(tmp_path)
    day = 86400.0
    new_batch(ledger, "done0001", n=2).mark_finished("done")
    new_batch(ledger, "fail0001", n=2).mark_finished("failed")
    new_batch(ledger, "open0001", n=2).close()
    live = new_batch(ledger, "live0001", n=2)
    (tmp_path / ".x.batch.123.tmp").write_text("half")
    os.utime(tmp_path / ".x.batch.123.tmp", (time.time() - 7200, time.time() - 7200))
    assert ledger.prune(7) == []
    assert sorted(ledger.prune(7, now=time.time() + 8 * day)) == ["done0001", "fail0001"]
    assert sorted(s.batch_id for s in ledger.list()) == ["live0001", "open0001"]
    assert ledger.prune(7, unfinished_days=30, now=time.time() + 31 * day) == ["open0001"]
    assert [s.batch_id for s in ledger.list()] == ["live0001"]
    assert sorted(os.listdir(tmp_path)) == ["live0001.batch", "live0001.lock"]
    live.close()


def test_create_prunes_old_finished_batches_now_and_then(tmp_path, monkeypatch):
    from nuke_comfy_cluster.core import ledger as ledger_mod

    ledger = Ledger(tmp_path)
    new_batch(ledger, "old00001", n=1).mark_finished("done")
    new_batch(ledger, "open0001", n=1).close()
    monkeypatch.setattr(ledger_mod, "_clock", lambda: time.time() + 8 * 86400)
    new_batch(ledger, "new00001", n=1).close()
    assert sorted(ledger.batch_ids()) == ["new00001", "old00001", "open0001"]  # pruned less than an hour ago
    monkeypatch.setattr(ledger_mod, "_last_prune", {})
    new_batch(ledger, "new00002", n=1).close()
    assert sorted(ledger.batch_ids()) == ["new00001", "new00002", "open0001"]
    new_batch(Ledger(tmp_path / "never", keep_days=None), "x0000001", n=1).mark_finished("done")
    monkeypatch.setattr(ledger_mod, "_last_prune", {})
    new_batch(Ledger(tmp_path / "never", keep_days=None), "x0000002", n=1).close()
    assert Ledger(tmp_path / "never").batch_ids() == ["x0000001", "x0000002"]


# --------------------------------------------------------------------------- the batches command


def test_batches_command_lists_states(tmp_path, monkeypatch, capsys):
    from nuke_comfy_cluster.cli import main

    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path))
    assert main(["batches"]) == 0
    assert "no batches" in capsys.readouterr().err
    ledger = Ledger()
    writer = new_batch(ledger, "aaaa0001", n=4, name="comp_v1", created=time.time() - 7200)
    writer.record_job(upd(0, "done", 1))
    writer.close()
    done = new_batch(ledger, "bbbb0001", n=2, name="comp_v2")
    done.record_jobs([upd(0, "done", 1), upd(1, "done", 2)])
    done.mark_finished("done")
    assert main(["batches"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "FRAMES", "FAILED", "AGE", "NAME", "OUTPUT"]
    assert lines[1].split()[:6] == ["bbbb0001", "done", "2/2", "0", "0s", "comp_v2"]
    assert lines[2].split()[:6] == ["aaaa0001", "unfinished", "1/4", "0", "2h", "comp_v1"]
    assert "/shots/x/x.####" in lines[2] and "1 unfinished" in err
    assert main(["batches", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ledger"] == str(tmp_path / "batches")
    assert [(b["batch_id"], b["state"], b["done"], b["total"]) for b in data["batches"]] == [
        ("bbbb0001", "done", 2, 2),
        ("aaaa0001", "unfinished", 1, 4),
    ]
    assert 7000 < data["batches"][1]["age_s"] < 7400


# --------------------------------------------------------------------------- kill at any point

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from types import SimpleNamespace as NS
    from nuke_comfy_cluster.core.ledger import JobUpdate, Ledger, LedgerError, SubmitOptions, record_for
    root, n_jobs, per_batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ledger = Ledger(root, min_compact_bytes=3000)
    states = ("submitted", "running", "done")

    def open_or_create(number):
        bid = "b%04d" % number
        try:
            return ledger.open(bid)
        except LedgerError as e:
            if "no batch" not in str(e):
                raise
        jobs = [NS(id="%s-j%d" % (bid, i), frame=i, iteration=None, seed=None, label="") for i in range(n_jobs)]
        batch = NS(id=bid, name=bid, created_at=time.time(), jobs=jobs)
        return ledger.create(record_for(batch, workflow={"1": {"class_type": "X"}}, options=SubmitOptions(frames="0-%d" % (n_jobs - 1))))

    # continue the newest batch, as a resumed client would
    ids = ledger.batch_ids()
    number = int(ids[-1][1:]) if ids else 0
    while True:
        writer = open_or_create(number)
        loaded = ledger.load(writer.batch_id)
        if loaded.finished:
            writer.close()
            number += 1
            continue
        k = max((u.attempts for u in loaded.jobs.values()), default=-1) + 1
        while k < per_batch:
            writer.record_job(JobUpdate(k % n_jobs, states[k % 3], server="s", prompt_id="p%d" % k, attempt="t%d" % k, attempts=k, at=time.time()))
            os.write(1, ("%s %d\\n" % (writer.batch_id, k)).encode())
            k += 1
        writer.mark_finished("done", "all %d" % k)
        os.write(1, ("%s finished\\n" % writer.batch_id).encode())
        number += 1
    """
)


def _check_consistent(ledger, n_jobs, per_batch, acked):
    for summary in ledger.list():
        assert summary.state != "damaged", summary.problem
        assert not summary.live
        loaded = ledger.load(summary.batch_id)
        assert loaded.damaged_lines == 0
        assert len(loaded.record.jobs) == n_jobs
        attempts = {i: u.attempts for i, u in loaded.jobs.items()}
        last = max(attempts.values(), default=-1)
        assert attempts == (expected_after(n_jobs, last) if last >= 0 else {})
        for u in loaded.jobs.values():
            assert u.state == ("submitted", "running", "done")[u.attempts % 3] and u.prompt_id == f"p{u.attempts}"
        ack = acked.get(summary.batch_id)
        if ack == "finished":
            assert loaded.finished == "done" and last == per_batch - 1
        elif ack is not None:
            assert last >= ack  # what the writer had written before the kill is there
        if loaded.finished:
            assert last == per_batch - 1 and loaded.message == f"all {per_batch}"


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
@pytest.mark.timeout(150)
def test_killing_the_writer_at_random_points_never_loses_or_breaks_the_ledger(tmp_path):
    root = tmp_path / "batches"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER, encoding="utf-8")
    n_jobs, per_batch = 60, 700
    rng = random.Random(20240612)
    ledger = Ledger(root)
    acked = {}
    for _ in range(14):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(REPO), str(root), str(n_jobs), str(per_batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
        for line in out.decode().splitlines():
            bid, what = line.split()
            acked[bid] = "finished" if what == "finished" else int(what)
        _check_consistent(ledger, n_jobs, per_batch, acked)
    # the kills landed in many places: several batches, finished and not
    states = [s.state for s in ledger.list()]
    assert states.count("done") >= 2 and len(states) >= 3, states
