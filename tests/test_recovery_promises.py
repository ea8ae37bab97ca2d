"""Recovery's promises: silent jobs are looked up, lost prompts go again, orphans are removed.

Two tiers (docs/RELIABILITY.md, "What happens in each scenario"):

- the health check's rules, on a dispatcher whose loop is not started: which server a
  silent job gets looked up on, and when (``max(5 s, 2 x expected frame time)``, 15 s
  before any frame time is known, the status TTL without the websocket push). A small
  pool stands in for the servers' states; nothing is sent anywhere;
- what the look-up and the orphan clean-up do, against simulator processes: a batch run
  with the websocket off (every job's fate comes from ``/queue`` and ``/history``),
  a prompt behind a garbled submit answer removed once the server answers, a running one
  interrupted, a server removed from the configuration forgotten with its orphans.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import types
from typing import Any, Dict, List, Optional, Tuple

import pytest
import requests

from nuke_comfy_cluster.core import recovery
from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.dispatch import Dispatcher
from nuke_comfy_cluster.core.jobs import Batch, Job
from nuke_comfy_cluster.core.recovery import _Orphan
from nuke_comfy_cluster.core.state import JobState, ServerSnapshot, ServerStatus
from tests.conftest import protocol_dir, sim_configs, wait_until

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r/f_####"}},
}


# --------------------------------------------------------------------------- the health check's rules


@pytest.fixture
def still_clock(monkeypatch):
    """The health check reads ``time.monotonic()`` of its own module: here it stands still."""
    monkeypatch.setattr(recovery, "time", types.SimpleNamespace(monotonic=lambda: Health.now))


class _Pool:
    """The pool as the health check reads it: snapshots by name, a status TTL, servers by name."""

    def __init__(self, status_ttl: float = 5.0) -> None:
        self.status_ttl = status_ttl
        self.snaps: Dict[str, ServerSnapshot] = {}

    def put(self, name: str, status: ServerStatus = ServerStatus.BUSY, enabled: bool = True, live: bool = True):
        self.snaps[name] = ServerSnapshot(
            name=name, host="127.0.0.1", port=1, url="http://127.0.0.1:1", priority=0, enabled=enabled,
            status=status, live=live,
        )  # fmt: skip

    def server_snapshots(self) -> List[ServerSnapshot]:
        return list(self.snaps.values())

    def get_server_by_name(self, name: str) -> None:
        return None


class _Estimates:
    """The batch's learned frame times (seconds per server; missing = not known yet)."""

    def __init__(self, times: Dict[str, float]) -> None:
        self.times = times

    def expected_frame_time(self, server: str) -> Optional[float]:
        return self.times.get(server)

    def job_failed(self, server: str) -> None:
        pass


class Health:
    """A dispatcher (loop not started) holding jobs on servers; records what the check asks for.
    The check's clock is virtual: ``now`` stands still while a test runs."""

    now = 10_000.0

    def __init__(self, status_ttl: float = 5.0, times: Optional[Dict[str, float]] = None) -> None:
        self.pool = _Pool(status_ttl)
        self.dispatcher = Dispatcher(self.pool)  # type: ignore[arg-type]
        self.batch = Batch([], max_attempts=3)
        self.dispatcher._schedulers[self.batch.id] = _Estimates(times or {})  # type: ignore[assignment]
        self.reconciled: List[str] = []
        self.orphans_checked: List[str] = []
        self.dispatcher._reconcile_server = self.reconciled.append  # type: ignore[method-assign]
        self.dispatcher._check_orphans = self.orphans_checked.append  # type: ignore[method-assign]

    def job(self, server: str, quiet: float, state: JobState = JobState.RUNNING, **fields: Any) -> Job:
        """A job of ours on ``server`` that has had no news for ``quiet`` seconds."""
        job = Job({}, frame=len(self.batch.jobs) + 1, label=f"frame {len(self.batch.jobs) + 1}")
        job.server, job.state, job.prompt_id = server, state, f"p{len(self.batch.jobs)}"
        job.attempt_token = f"t{len(self.batch.jobs)}"
        job.attempts = 1
        for key, value in fields.items():
            setattr(job, key, value)
        job.last_news = self.now - quiet
        self.batch.jobs.append(job)
        self.dispatcher._by_token[job.attempt_token] = (self.batch, job)
        return job

    def check(self) -> List[str]:
        self.reconciled.clear()
        self.dispatcher._check_health()
        return sorted(set(self.reconciled))


@pytest.mark.parametrize(
    "expected, quiet, looked_up",
    [
        (1.0, 4.9, False),  # the floor: 5 s however fast the frames
        (1.0, 5.1, True),
        (4.0, 7.9, False),  # twice the expected time: 8 s
        (4.0, 8.1, True),
        (10.0, 19.9, False),  # 20 s
        (10.0, 20.1, True),
        (None, 14.9, False),  # nothing known yet: 15 s
        (None, 15.1, True),
        (0.0, 14.9, False),  # a frame time of 0 is no knowledge either
        (0.0, 15.1, True),
    ],
)
def test_a_silent_job_is_looked_up_after_twice_its_expected_time(expected, quiet, looked_up, still_clock):
    health = Health(status_ttl=100.0, times={} if expected is None else {"a": expected})
    health.pool.put("a")
    health.job("a", quiet)
    assert health.check() == (["a"] if looked_up else [])


def test_without_the_websocket_push_a_job_is_looked_up_after_the_status_ttl(still_clock):
    health = Health(status_ttl=2.0, times={"polled": 60.0, "live": 60.0})
    health.pool.put("polled", live=False)
    health.pool.put("live", live=True)
    health.job("polled", 1.9)
    health.job("live", 3.0)
    assert health.check() == []
    health.job("polled", 2.1)
    assert health.check() == ["polled"]
    health.job("live", 119.9)
    assert health.check() == ["polled"]
    health.job("live", 120.1)  # over twice the expected minute
    assert health.check() == ["live", "polled"]


def test_a_server_that_stopped_answering_is_looked_up_at_once(still_clock):
    health = Health(times={"down": 60.0, "error": 60.0, "fresh": 60.0, "off": 60.0})
    health.pool.put("down", ServerStatus.OFFLINE)
    health.pool.put("error", ServerStatus.ERROR)
    health.pool.put("fresh", ServerStatus.UNKNOWN)  # not polled yet: no evidence against it
    health.pool.put("off", ServerStatus.OFFLINE, enabled=False)  # switched off: its jobs run on
    for name in ("down", "error", "fresh", "off"):
        health.job(name, 0.5)
    assert health.check() == ["down", "error"]


def test_only_jobs_queued_or_running_there_are_checked(still_clock):
    health = Health(times={"a": 1.0})
    health.pool.put("a")
    health.job("a", 60.0, state=JobState.PENDING)
    health.job("a", 60.0, state=JobState.DONE)
    health.job("a", 60.0, server_done_mono=Health.now)  # finished there; the result is on its way
    assert health.check() == []
    being_sent = health.job("a", 60.0, state=JobState.PENDING)
    health.dispatcher._submitting[being_sent.id] = being_sent  # the POST is under way: its answer decides
    assert health.check() == []
    health.job("", 60.0)
    assert health.check() == []
    health.job("a", 60.0, state=JobState.SUBMITTED)
    assert health.check() == ["a"]


def test_a_job_on_a_server_removed_from_the_configuration_goes_back_to_pending(still_clock):
    health = Health(times={"kept": 1.0})
    health.pool.put("kept")
    gone = health.job("gone", 0.5)
    kept = health.job("kept", 0.5)
    assert health.check() == []
    assert gone.state is JobState.PENDING and gone.failed_servers == ["gone"]
    assert gone.history == ["gone was removed from the configuration"]
    assert gone.attempt_token not in health.dispatcher._by_token
    assert kept.state is JobState.RUNNING and not kept.history


def test_orphans_are_looked_for_only_on_servers_that_answer(still_clock):
    health = Health()
    health.pool.put("up", ServerStatus.ONLINE)
    health.pool.put("down", ServerStatus.OFFLINE)
    for name in ("up", "down", "up"):
        health.dispatcher._orphans.append(_Orphan(name, "t", None, Health.now))
    health.check()
    assert health.orphans_checked == ["up"]


# --------------------------------------------------------------------------- against simulator processes


def queue_of(url: str) -> Dict[str, list]:
    return requests.get(url + "/queue", timeout=5).json()


def history_of(url: str) -> Dict[str, dict]:
    return requests.get(url + "/history", timeout=5).json()


def runs_of(url: str, job_ids: set) -> List[Tuple[str, str]]:
    """(job id, status) of every prompt of these jobs the server ran."""
    return sorted(
        (e["prompt"][3].get("ncc_job"), e["status"]["status_str"])
        for e in history_of(url).values()
        if e["prompt"][3].get("ncc_job") in job_ids
    )


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_without_websockets_every_job_is_followed_through_queue_and_history(start_sims):
    """No websocket: each job is seen queued, then running, then done, by looking it up.
    Nothing is sent twice (a queued prompt is not taken for lost) and each frame ran once."""
    (sim,) = start_sims([1.0], seconds=2.0)
    with Cluster.from_servers(sim_configs([sim]), use_websocket=False, status_ttl=0.3) as cluster:
        snap = cluster.submit_frames(WORKFLOW, [1, 2, 3]).wait(60)
    assert snap.state == "done", [(j.state, j.error, j.history) for j in snap.jobs]
    assert [j.attempts for j in snap.jobs] == [1, 1, 1], [j.history for j in snap.jobs]
    assert all(j.started_at is not None for j in snap.jobs), "a job was never seen running"
    ids = {j.id for j in snap.jobs}
    assert runs_of(sim.url, ids) == sorted((i, "success") for i in ids)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_workflow_error_found_by_looking_up_is_reported_not_retried(start_sims):
    """The error's node, message and traceback come from the history entry, and the frame fails
    (on one server: nowhere else to try) instead of being sent again."""
    procs = start_sims([1.0], seconds=0.2)
    workflow = json.loads((protocol_dir() / "workflows" / "runtime_error.json").read_text())
    with Cluster.from_servers(sim_configs(procs), use_websocket=False, status_ttl=0.3) as cluster:
        snap = cluster.submit_frames(workflow, [1]).wait(60)
    job = snap.jobs[0]
    assert job.state is JobState.FAILED and job.attempts == 1, (job.state, job.error, job.history)
    assert job.error.node_id and job.error.node_type and job.error.traceback and job.error.message, job.error
    assert "interrupted" not in " ".join(job.history), job.history


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_prompt_interrupted_on_the_server_goes_again(start_sims):
    """Someone presses "Cancel" in ComfyUI's own page while our frame runs (the websocket is
    off, so only the history says so): the frame is rendered again, not lost, not failed."""
    (sim,) = start_sims([1.0], seconds=6.0)
    with Cluster.from_servers(sim_configs([sim]), use_websocket=False, status_ttl=0.3) as cluster:
        batch = cluster.submit_frames(WORKFLOW, [1])
        assert wait_until(lambda: queue_of(sim.url)["queue_running"], 20)
        assert wait_until(lambda: batch.snapshot().jobs[0].state is JobState.RUNNING, 20)
        requests.post(sim.url + "/interrupt", json={}, timeout=5)
        snap = batch.wait(60)
    job = snap.jobs[0]
    assert snap.state == "done", (job.state, job.error, job.history)
    assert job.attempts == 2 and "interrupted" in job.history[0], job.history
    assert runs_of(sim.url, {job.id}) == [(job.id, "error"), (job.id, "success")]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_look_up_that_fails_moves_the_frames_and_remembers_the_prompts(start_sims):
    """A frozen server (SIGSTOP) answers nothing: the look-up times out, its frames go to the
    other server, and the prompts it holds are removed once it answers again."""
    slow, other = start_sims([1.0], seconds=4.0)[0], start_sims([1.0], seconds=0.3)[0]
    configs = [
        ServerConfig("frozen", "127.0.0.1", slow.port, priority=0),
        ServerConfig("other", "127.0.0.1", other.port, priority=1),
    ]
    with Cluster.from_servers(configs, use_websocket=False, status_ttl=0.5) as cluster:
        cluster.pool.strategy = "priority"  # fill the frozen server's window first
        batch = cluster.submit_frames(WORKFLOW, [1, 2])
        assert wait_until(lambda: len(queue_of(slow.url)["queue_pending"]) == 1, 20)
        queued = queue_of(slow.url)["queue_pending"][0][1]
        slow.sigstop()
        try:
            snap = batch.wait(60)
        finally:
            slow.sigcont()
        assert snap.state == "done" and snap.servers == {"other": 2}, (snap.servers, [j.history for j in snap.jobs])
        assert all("frozen" in j.failed_servers for j in snap.jobs)
        # answered again: the prompt still queued there is deleted before it runs (the running one
        # is interrupted, unless it finishes first: docs/RELIABILITY.md, SIGSTOP)
        assert wait_until(
            lambda: not queue_of(slow.url)["queue_running"] and not queue_of(slow.url)["queue_pending"], 30
        )
    assert queued not in history_of(slow.url), "the orphan queued on the frozen server ran"


# --------------------------------------------------------------------------- look-ups and clean-ups, step by step


def post(url: str, client_id: str, seconds: float, workflow: Optional[dict] = None, **extra: Any) -> str:
    body = {"prompt": workflow or WORKFLOW, "client_id": client_id, "extra_data": {"sim_seconds": seconds, **extra}}
    return requests.post(url + "/prompt", json=body, timeout=5).json()["prompt_id"]


def running_id(url: str) -> Optional[str]:
    running = queue_of(url)["queue_running"]
    return running[0][1] if running else None


class Steps:
    """A dispatcher whose loop is not started, on a real pool: background work waits in
    ``pending`` until :meth:`run` (so a test can act between the look-up and its answer)."""

    def __init__(self, configs: List[ServerConfig]) -> None:
        from nuke_comfy_cluster.core.pool import ComfyUIServerPool

        self.pool = ComfyUIServerPool(configs, use_websocket=False)
        self.dispatcher = Dispatcher(self.pool)
        self.pending: List[Any] = []
        self.dispatcher._io = self.pending.append  # type: ignore[method-assign]
        self.dispatcher._call = lambda fn: fn()  # type: ignore[method-assign]
        self.succeeded: List[Tuple[Job, dict]] = []
        self.workflow_failed: List[Tuple[Job, Any]] = []
        self.dispatcher._succeeded = lambda b, j, entry=None: self.succeeded.append((j, entry))  # type: ignore
        self.dispatcher._workflow_failed = lambda b, j, s, err, kind: self.workflow_failed.append((j, err))  # type: ignore
        self.batch = Batch([], max_attempts=5)

    def run(self) -> int:
        done = 0
        while self.pending:
            self.pending.pop(0)()
            done += 1
        return done

    def job(self, server: str, prompt_id: str, state: JobState = JobState.SUBMITTED, **fields: Any) -> Job:
        job = Job({}, frame=len(self.batch.jobs) + 1, label=f"frame {len(self.batch.jobs) + 1}")
        job.server, job.state, job.prompt_id = server, state, prompt_id
        job.attempt_token, job.attempts = f"token-{len(self.batch.jobs)}", 1
        job.last_news = 0.0
        for key, value in fields.items():
            setattr(job, key, value)
        self.batch.jobs.append(job)
        self.dispatcher._by_token[job.attempt_token] = (self.batch, job)
        self.dispatcher._by_prompt[prompt_id] = (self.batch, job)
        return job

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def steps():
    made: List[Steps] = []

    def make(configs: List[ServerConfig]) -> Steps:
        made.append(Steps(configs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_look_up_reads_each_prompts_fate_from_queue_and_history(start_sims, steps):
    (sim,) = start_sims([1.0], seconds=0.1)
    s = steps(sim_configs([sim]))
    me = s.pool.client_id
    failing = json.loads((protocol_dir() / "workflows" / "runtime_error.json").read_text())
    done_id, error_id = post(sim.url, me, 0.1), post(sim.url, me, 0.1, failing)
    stopped_id, cancelled_id = post(sim.url, me, 5.0), post(sim.url, me, 5.0)
    for victim in (stopped_id, cancelled_id):
        assert wait_until(lambda v=victim: running_id(sim.url) == v, 20)
        requests.post(sim.url + "/interrupt", json={}, timeout=5)
    running, queued = post(sim.url, me, 20.0), post(sim.url, me, 0.1)
    assert wait_until(lambda: running_id(sim.url) == running, 20)
    history = history_of(sim.url)
    assert history[done_id]["status"]["status_str"] == "success"  # premises
    assert [history[p]["status"]["status_str"] for p in (error_id, stopped_id, cancelled_id)] == ["error"] * 3

    jobs = {
        "running": s.job("sim0", running),
        "queued": s.job("sim0", queued),
        "done": s.job("sim0", done_id),
        "error": s.job("sim0", error_id),
        "stopped": s.job("sim0", stopped_id),
        "cancelled": s.job("sim0", cancelled_id, cancel_requested=True),
        "gone": s.job("sim0", "0" * 8 + "-dead-beef-0000-000000000000"),
        "replaced": s.job("sim0", done_id.replace(done_id[:4], "ffff")),
        "elsewhere": s.job("sim1", "x"),
    }
    watched = Batch([], max_attempts=5)  # the running job's batch alone: its observers must hear of it
    s.batch, main = watched, s.batch
    jobs["running"] = s.job("sim0", running)
    s.batch = main
    s.dispatcher._reconcile_server("sim0")
    s.dispatcher._reconcile_server("sim0")  # one look-up at a time per server
    assert len(s.pending) == 1
    jobs["replaced"].attempt_token = "a newer attempt"  # sent again while the look-up ran
    before = time.monotonic()
    assert s.run() == 1
    state = {k: j.state for k, j in jobs.items()}
    assert state == {
        "running": JobState.RUNNING,
        "queued": JobState.SUBMITTED,
        "done": JobState.SUBMITTED,  # the result is fetched next (_succeeded)
        "error": JobState.SUBMITTED,  # reported as the workflow's error (_workflow_failed)
        "stopped": JobState.PENDING,
        "cancelled": JobState.CANCELLED,
        "gone": JobState.PENDING,
        "replaced": JobState.SUBMITTED,
        "elsewhere": JobState.SUBMITTED,
    }, state
    assert jobs["running"].started_at is not None
    assert watched.id in s.dispatcher._dirty, "the batch's observers were not told the job runs"
    assert [(j, e["status"]["status_str"]) for j, e in s.succeeded] == [(jobs["done"], "success")]
    assert [j for j, _ in s.workflow_failed] == [jobs["error"]]
    error = s.workflow_failed[0][1]
    assert error.node_id and error.traceback, error
    assert jobs["stopped"].history == ["sim0: the prompt was interrupted on the server"]
    assert jobs["gone"].history == ["sim0: our prompt vanished from its queue and history (server restarted?)"]
    for name in ("running", "queued", "stopped", "gone"):
        assert jobs[name].last_news >= before, name  # news: not looked up again at once
    assert jobs["replaced"].last_news == 0.0 and jobs["elsewhere"].last_news == 0.0
    assert ("reconcile", "sim0") not in s.dispatcher._busy
    s.dispatcher._reconcile_server("sim0")  # the next look-up is not blocked
    assert len(s.pending) == 1
    requests.post(sim.url + "/interrupt", json={}, timeout=5)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_look_up_that_gets_no_answer_counts_against_the_server(steps):
    s = steps([ServerConfig("dead", "127.0.0.1", _dead_port())])
    on_it = [s.job("dead", "p1"), s.job("dead", "p2", state=JobState.RUNNING)]
    resent, finished = s.job("dead", "p3"), s.job("dead", "p4")
    s.dispatcher._reconcile_server("dead")
    # while the look-up waits for its answer: one job is sent again elsewhere, one ends
    resent.server, resent.attempt_token, resent.attempts = "other", "a newer attempt", 2
    finished.state = JobState.DONE
    assert s.run() == 1
    server = s.pool.get_server_by_name("dead")
    status = server.get_status()
    assert status.status is ServerStatus.OFFLINE and status.counters.failures == 1, status
    assert [j.state for j in on_it] == [JobState.PENDING, JobState.PENDING]
    assert all(j.failed_servers == ["dead"] and "dead" in j.history[0] for j in on_it), [j.history for j in on_it]
    assert finished.state is JobState.DONE and not finished.history
    assert resent.state is JobState.SUBMITTED and not resent.history and not resent.failed_servers
    orphans = [(o.server, o.token, o.prompt_id) for o in s.dispatcher._orphans]
    assert orphans == [("dead", on_it[0].attempt_token, "p1"), ("dead", on_it[1].attempt_token, "p2")]
    assert ("reconcile", "dead") not in s.dispatcher._busy
    s.dispatcher._reconcile_server("dead")
    assert s.pending == []  # nothing of ours there any more: nothing to look up


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_orphans_are_deleted_or_interrupted_and_nothing_else_is_touched(start_sims, steps):
    """Ours: known by prompt id, or (the submit answer was lost) only by the attempt token we
    put in ``extra_data``. Another artist's prompts and our live ones stay."""
    (sim,) = start_sims([1.0], seconds=0.1)
    s = steps(sim_configs([sim]))
    me = s.pool.client_id
    orphan_running = post(sim.url, me, 20.0, ncc_attempt="tok-running")
    assert wait_until(lambda: running_id(sim.url) == orphan_running, 20)
    theirs = post(sim.url, "other-artist", 0.1, ncc_attempt="tok-theirs")
    by_id = post(sim.url, me, 0.1, ncc_attempt="tok-by-id")
    by_token = post(sim.url, me, 0.1, ncc_attempt="tok-by-token")
    live = post(sim.url, me, 0.1, ncc_attempt="tok-live")
    d = s.dispatcher
    d._orphans += [
        _Orphan("sim0", "tok-running", None, 0.0),
        _Orphan("sim0", "tok-by-id-old", by_id, 0.0),
        _Orphan("sim0", "tok-by-token", None, 0.0),
        _Orphan("elsewhere", "tok-x", "x", 0.0),
    ]
    d._check_orphans("sim0")
    d._check_orphans("sim0")  # one clean-up at a time per server
    assert s.run() == 1
    assert wait_until(lambda: orphan_running in history_of(sim.url), 15), "the running orphan was not interrupted"
    messages = [m[0] for m in history_of(sim.url)[orphan_running]["status"]["messages"]]
    assert "execution_interrupted" in messages, messages
    assert wait_until(lambda: live in history_of(sim.url) and theirs in history_of(sim.url), 15)
    history = history_of(sim.url)
    assert history[theirs]["status"]["status_str"] == "success", "another artist's prompt was touched"
    assert history[live]["status"]["status_str"] == "success", "a live prompt of ours was touched"
    assert by_id not in history and by_token not in history, "a queued orphan ran"
    assert [(o.server, o.token) for o in d._orphans] == [("elsewhere", "tok-x")]
    assert ("orphans", "sim0") not in d._busy
    d._orphans.append(_Orphan("sim0", "tok-late", None, 0.0))
    d._check_orphans("sim0")  # the next clean-up is not blocked
    assert s.run() == 1 and [o.token for o in d._orphans] == ["tok-x"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_orphans_are_kept_while_their_server_does_not_answer(steps):
    s = steps([ServerConfig("dead", "127.0.0.1", _dead_port())])
    s.dispatcher._orphans.append(_Orphan("dead", "tok", "p", 0.0))
    s.dispatcher._check_orphans("dead")
    assert s.run() == 1
    assert [o.token for o in s.dispatcher._orphans] == ["tok"]
    assert ("orphans", "dead") not in s.dispatcher._busy


def test_orphans_of_a_server_removed_from_the_configuration_are_forgotten(steps):
    """A last event from a server no longer configured: its orphans cannot be reached any
    more; they are dropped, the others kept."""
    from nuke_comfy_cluster.core.events import EventType, ServerEvent

    s = steps([ServerConfig("kept", "127.0.0.1", _dead_port())])
    d = s.dispatcher
    d._orphans += [_Orphan("gone", "t1", "p1", 0.0), _Orphan("kept", "t2", None, 0.0), _Orphan("gone", "t3", None, 0.0)]
    d._route(ServerEvent(EventType.STATUS, "gone", time.time()))
    assert s.pending == []
    assert [o.token for o in d._orphans] == ["t2"]


class _OddQueue(http.server.BaseHTTPRequestHandler):
    """A ComfyUI fork (or a proxy) whose queue items are short: ``[number, id]``, no outputs list."""

    posts: List[Tuple[str, Any]] = []

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        pending = [[1, "p-orphan"], [2, "p-theirs", {}], [3, "p-four", {}, {"ncc_attempt": "t2"}]]
        running = [[0, "p-run", {}, {"ncc_attempt": "t-run"}, ["9"]]]
        self._json({"queue_running": running, "queue_pending": pending})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.posts.append((self.path, body))
        self._json({})

    def log_message(self, *args: Any) -> None:
        pass


def test_orphans_are_found_in_short_queue_items_and_named_when_interrupted(steps):
    handler = type("Q", (_OddQueue,), {"posts": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        s = steps([ServerConfig("odd", "127.0.0.1", httpd.server_address[1])])
        s.dispatcher._orphans += [
            _Orphan("odd", "t1", "p-orphan", 0.0),
            _Orphan("odd", "t2", None, 0.0),
            _Orphan("odd", "t-run", None, 0.0),
        ]
        s.dispatcher._check_orphans("odd")
        assert s.run() == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert handler.posts == [
        ("/queue", {"delete": ["p-orphan", "p-four"]}),
        ("/interrupt", {"prompt_id": "p-run"}),  # newer ComfyUI interrupts only the prompt named
    ]
    assert s.dispatcher._orphans == []
