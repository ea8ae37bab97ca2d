"""Learned server costs kept between sessions: round trip, invalidation, bounds, bad files, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nuke_comfy_cluster.core import cost_store
from nuke_comfy_cluster.core.cost_store import CostStore, server_identity
from nuke_comfy_cluster.core.scheduler import Scheduler, ServerCosts

IDS = {
    "gpu1": server_identity("http://10.0.0.1:8188", "NVIDIA RTX 4090", 25757220864, "0.3.39"),
    "gpu2": server_identity("http://10.0.0.2:8188", "NVIDIA RTX 3060", 12884901888, "0.3.39"),
}
COSTS = {
    "gpu1": ServerCosts(frame_s=4.0, frame_dev=0.3, samples=12, setup_s=17.5, setup_samples=1),
    "gpu2": ServerCosts(frame_s=9.0, frame_dev=0.8, samples=5, setup_s=None, setup_samples=0),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_costs_round_trip_per_workflow(tmp_path: Path) -> None:
    store = CostStore(tmp_path / "costs.json")
    assert store.load("flow-a", IDS) == {}  # no file yet
    assert store.save("flow-a", COSTS, IDS)
    again = CostStore(tmp_path / "costs.json")  # another session
    assert again.load("flow-a", IDS) == COSTS
    assert again.load("flow-b", IDS) == {}
    # the workflow itself is not written, only a hash of it
    assert "flow-a" not in (tmp_path / "costs.json").read_text()


def test_a_changed_server_starts_from_nothing(tmp_path: Path) -> None:
    store = CostStore(tmp_path / "costs.json")
    store.save("flow", COSTS, IDS)
    upgraded = dict(IDS, gpu1=server_identity("http://10.0.0.1:8188", "NVIDIA RTX 5090", 34359738368, "0.3.39"))
    assert store.load("flow", upgraded) == {"gpu2": COSTS["gpu2"]}
    # and a server that is not asked about is not returned
    assert store.load("flow", {"gpu2": IDS["gpu2"]}) == {"gpu2": COSTS["gpu2"]}


def test_servers_without_identity_are_not_saved(tmp_path: Path) -> None:
    store = CostStore(tmp_path / "costs.json")
    store.save("flow", COSTS, {"gpu1": IDS["gpu1"]})
    assert store.load("flow", IDS) == {"gpu1": COSTS["gpu1"]}
    # a server whose /system_stats has not answered yet has no identity: not saved, not loaded
    unknown = server_identity("http://10.0.0.2:8188")
    assert unknown == ""
    store.save("flow", COSTS, {"gpu2": unknown})
    assert store.load("flow", IDS) == {"gpu1": COSTS["gpu1"]}
    assert store.load("flow", {"gpu1": "", "gpu2": unknown}) == {}


def test_old_entries_are_ignored_and_few_workflows_are_kept(tmp_path: Path) -> None:
    clock = Clock()
    store = CostStore(tmp_path / "costs.json", max_workflows=3, max_age_days=10, clock=clock)
    for i in range(5):
        clock.now += 60
        store.save("flow%d" % i, COSTS, IDS)
    assert store.load("flow0", IDS) == {} and store.load("flow1", IDS) == {}  # least recently used: gone
    assert store.load("flow4", IDS) == COSTS
    assert len(json.loads((tmp_path / "costs.json").read_text())["workflows"]) == 3
    clock.now += 11 * 86400
    assert store.load("flow4", IDS) == {}


def test_a_saved_batch_seeds_the_next_one_without_probes(tmp_path: Path) -> None:
    now = [0.0]
    first = Scheduler(lambda: now[0])
    first.job_finished("gpu1", 0.0, 21.5, setup_s=17.5, cold=True)
    first.job_finished("gpu1", 21.5, 25.5, setup_s=0.0, cold=False)
    first.job_finished("gpu2", 0.0, 9.0)
    CostStore(tmp_path / "c.json").save("flow", first.costs(), IDS)

    second = Scheduler(lambda: now[0])
    second.seed(CostStore(tmp_path / "c.json").load("flow", IDS))
    assert second.expected_frame_time("gpu1") == pytest.approx(4.0)
    assert second.expected_setup_time("gpu1") == pytest.approx(17.5)
    assert second.expected_frame_time("gpu2") == pytest.approx(9.0)


def test_default_file_is_in_the_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCC_STATE_DIR", str(tmp_path / "state"))
    store = CostStore()
    assert store.path == tmp_path / "state" / cost_store.FILE_NAME
    assert store.save("flow", COSTS, IDS)  # the folder is made on the first save
    assert store.load("flow", IDS) == COSTS


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe garbage", b"[1, 2]", b'{"version": 1, "workflows": []}', b""],
)
def test_an_unreadable_file_is_set_aside_not_raised(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "costs.json"
    path.write_bytes(content)
    store = CostStore(path)
    assert store.load("flow", IDS) == {}
    assert (tmp_path / "costs.json.bad").read_bytes() == content
    assert store.save("flow", COSTS, IDS)
    assert store.load("flow", IDS) == COSTS


def test_malformed_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    store = CostStore(path)
    store.save("flow", COSTS, IDS)
    doc = json.loads(path.read_text())
    (servers,) = [w["servers"] for w in doc["workflows"].values()]
    servers["gpu1"]["frame_s"] = -3
    servers["gpu2"]["setup_s"] = "slow"
    path.write_text(json.dumps(doc))
    assert store.load("flow", IDS) == {}


def test_a_file_from_another_release_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"version": 99, "workflows": {}}))
    assert CostStore(path).load("flow", IDS) == {}


def test_an_unwritable_place_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = CostStore(blocker / "costs.json")
    assert store.save("flow", COSTS, IDS) is False
    assert "could not save learned server costs" in caplog.text
    assert store.load("flow", IDS) == {}


@pytest.mark.parametrize("crash_in", ["write", "fsync", "replace"])
def test_a_crash_mid_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    path = tmp_path / "costs.json"
    store = CostStore(path)
    store.save("flow", COSTS, IDS)
    before = path.read_bytes()

    class Crash(BaseException):
        pass

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash()

    if crash_in == "write":
        real_fdopen = os.fdopen

        class Half:
            def __init__(self, fh) -> None:
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self.fh.close()

            def write(self, data: bytes) -> None:
                self.fh.write(data[: len(data) // 2])
                raise Crash()

        monkeypatch.setattr(cost_store.os, "fdopen", lambda fd, mode: Half(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(cost_store.os, crash_in, crash)
    faster = {"gpu1": ServerCosts(frame_s=1.0)}
    with pytest.raises(Crash):
        store.save("flow", faster, IDS)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["costs.json"]  # no temporary file left behind
    assert CostStore(path).load("flow", IDS) == COSTS


def test_killed_writers_never_leave_a_torn_file(tmp_path: Path) -> None:
    """A process saving in a loop, killed (SIGKILL) at random points, many times over."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs POSIX signals")
    path = tmp_path / "costs.json"
    writer = textwrap.dedent(
        """
        import sys
        from nuke_comfy_cluster.core.cost_store import CostStore
        from nuke_comfy_cluster.core.scheduler import ServerCosts
        store = CostStore(sys.argv[1], max_workflows=400)
        ids = {"gpu%d" % s: "id%d" % s for s in range(40)}
        i = 0
        while True:
            i += 1
            store.save("flow%d" % (i % 300), {n: ServerCosts(frame_s=float(i)) for n in ids}, ids)
            if i == 3:
                print("ready", flush=True)
        """
    )
    kills = 0
    deadline = time.monotonic() + 60
    while kills < 6 and time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, cwd=str(Path(__file__).parents[1])
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(0.05 + 0.05 * kills)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
        doc = json.loads(path.read_bytes())  # whole, whatever the moment of the kill
        for flow in doc["workflows"].values():
            values = {entry["frame_s"] for entry in flow["servers"].values()}
            assert len(values) == 1 and len(flow["servers"]) == 40  # one save's servers, all of them
    assert kills >= 3
    # the temporary files of killed writes are swept by a later save once they are old
    for leftover in tmp_path.glob(".costs.json.*.tmp"):
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    CostStore(path, max_workflows=400).save("flow-final", COSTS, IDS)
    assert not list(tmp_path.glob(".costs.json.*.tmp"))
