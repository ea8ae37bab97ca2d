"""Each promise of the guides, held by a test that fails when the promise breaks.

An audit planted small bugs in a copy of the code (issue 17) and found promises no
test noticed breaking. Each test here is written against behaviour seen from outside
(a Cluster against simulator processes, the servers' own ``/queue`` and ``/history``),
and was shown to fail with its planted bug (docs/RELIABILITY.md, "Mutation testing").
"""

from __future__ import annotations

import collections
import os
import re
import socket
import threading
import time
from typing import Dict, List

import pytest
import requests

from nuke_comfy_cluster.core import balancing
from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.state import ServerSnapshot, ServerStatus
from tests.conftest import sim_configs, wait_until

pytestmark = pytest.mark.integration

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p/f_####"}},
}


# --------------------------------------------------------------------------- helpers


def queue_of(url: str) -> Dict[str, list]:
    return requests.get(url + "/queue", timeout=5).json()


def history_of(url: str) -> Dict[str, dict]:
    return requests.get(url + "/history", timeout=5).json()


def post_other_artist(url: str, seconds: float) -> str:
    """A prompt of someone else's (another client id), running ``seconds`` on the simulator."""
    body = {
        "prompt": WORKFLOW,
        "client_id": "other-artist",
        "extra_data": {"sim_seconds": seconds},
    }
    return requests.post(url + "/prompt", json=body, timeout=5).json()["prompt_id"]


class PeakOfOurs:
    """Polls a server's own ``/queue`` and keeps the most prompts of one client it ever held at once."""

    def __init__(self, url: str, client_id: str) -> None:
        self.url, self.client_id = url, client_id
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                q = queue_of(self.url)
            except requests.RequestException:
                self._stop.wait(0.1)
                continue
            items = q["queue_running"] + q["queue_pending"]
            ours = sum(1 for item in items if item[3].get("client_id") == self.client_id)
            self.peak = max(self.peak, ours)
            self.samples += 1
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


class SubmitMeddler:
    """A TCP proxy in front of a simulator that meddles with the answers to ``POST /prompt``.

    The prompt is queued (and runs) at once; only its answer is changed on the way back:
    ``delay`` holds it back (a congested link: every websocket message of the prompt reaches
    the client first), ``garble`` replaces its body with bytes that are not JSON (a broken
    proxy) for that many answers. Everything else, websockets included, passes untouched.
    Counts every request line it forwards (``"GET /queue"``, ...).
    """

    _REQUEST = re.compile(rb"^([A-Z]+) (/[^ ?]*)")

    def __init__(self, upstream_port: int, delay: float = 0.0, garble: int = 0) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.garble = garble
        self.requests: collections.Counter = collections.Counter()
        self.answers_released: List[float] = []  # time.time() each meddled answer went out
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            held = [0]  # answers to meddle with on this connection
            lock = threading.Lock()
            threading.Thread(target=self._forward_requests, args=(client, upstream, held, lock), daemon=True).start()
            threading.Thread(target=self._forward_answers, args=(upstream, client, held, lock), daemon=True).start()

    def _forward_requests(self, src: socket.socket, dst: socket.socket, held: List[int], lock: threading.Lock) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                m = self._REQUEST.match(data)
                if m:
                    method, path = m.group(1).decode(), m.group(2).decode()
                    route = "/" + path.strip("/").split("/")[0]
                    self.requests[f"{method} {route}"] += 1
                    if method == "POST" and route == "/prompt":
                        with lock:
                            held[0] += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _whole_answer(self, src: socket.socket, data: bytes) -> bytes:
        """Read on until the answer that ``data`` starts is complete (by its Content-Length)."""
        while b"\r\n\r\n" not in data:
            more = src.recv(65536)
            if not more:
                return data
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            more = src.recv(65536)
            if not more:
                break
            body += more
        return head + b"\r\n\r\n" + body

    def _meddle(self, answer: bytes) -> bytes:
        time.sleep(self.delay)
        if self.garble > 0:
            self.garble -= 1
            head, _, body = answer.partition(b"\r\n\r\n")
            answer = head + b"\r\n\r\n" + b"<" * len(body)  # same length, not JSON
        self.answers_released.append(time.time())
        return answer

    def _forward_answers(self, src: socket.socket, dst: socket.socket, held: List[int], lock: threading.Lock) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with lock:
                    hold = held[0] > 0 and data.startswith(b"HTTP/1.")
                    if hold:
                        held[0] -= 1
                if hold:
                    data = self._meddle(self._whole_answer(src, data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def proxies():
    made: List[SubmitMeddler] = []

    def make(port: int, **kw: float) -> SubmitMeddler:
        proxy = SubmitMeddler(port, **kw)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def ours_in_history(url: str, job_ids: set) -> List[dict]:
    return [e for e in history_of(url).values() if e["prompt"][3].get("ncc_job") in job_ids]


# --------------------------------------------------------------------------- cancel


@pytest.mark.timeout(90)
def test_cancel_spares_the_prompt_another_artist_is_running(start_sims):
    """Cancel deletes our queued prompts and interrupts only a running prompt of ours.
    ComfyUI 0.3.39 (and the simulator) interrupt whatever runs, whatever prompt id is
    sent: an interrupt while another artist's prompt runs would kill their work."""
    (sim,) = start_sims([1.0], seconds=0.3)
    other = post_other_artist(sim.url, 8.0)
    assert wait_until(lambda: [i[1] for i in queue_of(sim.url)["queue_running"]] == [other], 10)
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        batch = cluster.submit_frames(WORKFLOW, range(1, 7))
        # ours are queued behind the other artist's prompt
        assert wait_until(lambda: any(j.prompt_id for j in batch.snapshot().jobs), 20)
        assert [i[1] for i in queue_of(sim.url)["queue_running"]] == [other], "premise: theirs runs at cancel"
        cluster.cancel(batch)
        snap = batch.wait(20)
        job_ids = {j.id for j in snap.jobs}
    assert snap.state == "cancelled", [(j.state, j.error) for j in snap.jobs]
    assert wait_until(lambda: other in history_of(sim.url), 15), "the other artist's prompt never finished"
    entry = history_of(sim.url)[other]
    assert entry["status"]["status_str"] == "success", entry["status"]  # not interrupted
    assert not [i for i in queue_of(sim.url)["queue_pending"] if i[3].get("ncc_job") in job_ids]
    assert ours_in_history(sim.url, job_ids) == []  # ours were deleted before they ran


# --------------------------------------------------------------------------- events


@pytest.mark.timeout(90)
def test_events_that_arrive_before_the_submit_answer_are_not_lost(start_sims, proxies):
    """The websocket can bring a prompt's whole run before the answer to its ``POST /prompt``
    (a slow link, a busy client). Progress and completion must still be taken from those
    events: the job is seen running and finishes without a reconciliation through /queue."""
    (sim,) = start_sims([1.0], seconds=0.3)
    proxy = proxies(sim.port, delay=2.0)
    config = ServerConfig("late", "127.0.0.1", proxy.port)
    with Cluster.from_servers([config]) as cluster:
        assert wait_until(lambda: cluster.pool.server_snapshots()[0].live, 10)
        snap = cluster.submit_frames(WORKFLOW, [1]).wait(40)
    job = snap.jobs[0]
    assert snap.state == "done", (job.state, job.error)
    entry = history_of(sim.url)[job.prompt_id]
    finished_ms = max(m[1]["timestamp"] for m in entry["status"]["messages"])
    assert proxy.answers_released and finished_ms / 1000.0 < proxy.answers_released[0], (
        "premise: the prompt finished before its submit answer reached the client"
    )
    assert job.started_at is not None, "execution_start was lost: the job was never seen running"
    assert proxy.requests["GET /queue"] == 0, "completion was found by reconciliation, not from the events"


# --------------------------------------------------------------------------- results


def _image_bytes(url: str, item: dict) -> bytes:
    params = {"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]}
    r = requests.get(url + "/view", params=params, timeout=5)
    r.raise_for_status()
    return r.content


def _delivered_files(folder: str) -> List[str]:
    """Every file the batch left in its output folder, hidden staging folders aside."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [os.path.join(root, f) for f in files if not f.startswith(".")]
    return out


@pytest.mark.timeout(60)
def test_previews_are_not_results(start_sims, tmp_path):
    """Only what a saving node wrote becomes the sequence; PreviewImage's temp files are not
    results, even when the preview node comes first."""
    (sim,) = start_sims([1.0], seconds=0.2)
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF8000}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "saved/f_####"}},
    }
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        snap = cluster.submit_frames(workflow, [5], output_dir=str(tmp_path / "out"), sequence_name="sh").wait(30)
    job = snap.jobs[0]
    assert snap.state == "done", (job.state, job.error)
    outputs = history_of(sim.url)[job.prompt_id]["outputs"]
    preview = _image_bytes(sim.url, outputs["2"]["images"][0])
    saved = _image_bytes(sim.url, outputs["4"]["images"][0])
    assert outputs["2"]["images"][0]["type"] == "temp" and preview != saved  # premise
    assert [o.type for o in job.outputs] == ["output"], job.outputs
    delivered = _delivered_files(str(tmp_path / "out"))
    assert [os.path.basename(p) for p in delivered] == ["sh.0005.png"], delivered
    with open(delivered[0], "rb") as f:
        assert f.read() == saved


@pytest.mark.timeout(60)
def test_the_sequence_holds_the_first_saving_nodes_image(start_sims, tmp_path):
    """With two saving nodes, ``NAME.####`` is the first one's image (in node order), never
    another node's."""
    (sim,) = start_sims([1.0], seconds=0.2)
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x0000FF}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x00FF00}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first/f_####"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "second/f_####"}},
    }
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        snap = cluster.submit_frames(workflow, [7], output_dir=str(tmp_path / "out"), sequence_name="sh").wait(30)
    job = snap.jobs[0]
    assert snap.state == "done", (job.state, job.error)
    outputs = history_of(sim.url)[job.prompt_id]["outputs"]
    first = _image_bytes(sim.url, outputs["3"]["images"][0])
    second = _image_bytes(sim.url, outputs["4"]["images"][0])
    assert first != second  # premise
    with open(tmp_path / "out" / "sh.0007.png", "rb") as f:
        assert f.read() == first


# --------------------------------------------------------------------------- orphans


@pytest.mark.timeout(90)
def test_a_running_orphan_is_interrupted(start_sims, proxies):
    """A submit whose answer was unreadable may have queued the prompt all the same; the frame
    goes elsewhere. When that prompt is already running, it is interrupted: it costs no more
    GPU time and is never rendered twice."""
    slow_frames, fast = start_sims([1.0], seconds=6.0)[0], start_sims([1.0], seconds=0.2)[0]
    garbling = proxies(slow_frames.port, garble=1)  # the answer to our POST /prompt there is unreadable
    configs = [
        ServerConfig("sim0", "127.0.0.1", garbling.port, priority=0),
        ServerConfig("sim1", "127.0.0.1", fast.port, priority=1),
    ]
    with Cluster.from_servers(configs) as cluster:
        assert wait_until(lambda: all(s.live for s in cluster.pool.server_snapshots()), 10)
        snap = cluster.submit_frames(WORKFLOW, [3]).wait(40)
        job = snap.jobs[0]
        assert garbling.garble == 0 and job.failed_servers == ("sim0",), "premise: the first submit went to sim0"
        assert snap.state == "done" and job.server == "sim1", (job.state, job.error)
        # the prompt behind the garbled answer: queued on sim0 and running there (6 s a frame)
        assert wait_until(lambda: ours_in_history(slow_frames.url, {job.id}), 15), "the orphan never ended"
    runs = ours_in_history(slow_frames.url, {job.id})
    assert [e["status"]["status_str"] for e in runs] == ["error"], "the orphan was not interrupted"
    assert any(m[0] == "execution_interrupted" for m in runs[0]["status"]["messages"]), runs[0]["status"]


# --------------------------------------------------------------------------- where batches run


@pytest.mark.timeout(60)
def test_the_panel_override_pins_batches(start_sims):
    """ "Send to" in the panel (the pool's override) pins where a batch runs, like ``server=``."""
    procs = start_sims([1.0, 0.5], seconds=0.2)
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        cluster.pool.set_override("sim1")
        snap = cluster.submit_frames(WORKFLOW, range(1, 5)).wait(40)
    assert snap.state == "done"
    assert snap.pinned == "sim1"
    assert snap.servers == {"sim1": 4}, snap.servers


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", [balancing.ROUND_ROBIN, balancing.PRIORITY])
def test_round_robin_and_priority_strategies_apply_to_batches(start_sims, strategy):
    """Round robin and priority fill each server's window (2 of ours by default) in turn; they
    do not learn speeds. The pull scheduler would give the slow server one probe at a time."""
    slow, fast = start_sims([0.1], seconds=0.2)[0], start_sims([1.0], seconds=0.2)[0]
    configs = [
        ServerConfig("a-slow", "127.0.0.1", slow.port, priority=0),
        ServerConfig("b-fast", "127.0.0.1", fast.port, priority=1),
    ]
    with Cluster.from_servers(configs) as cluster:
        cluster.pool.strategy = strategy
        peak = PeakOfOurs(slow.url, cluster.pool.client_id)
        try:
            snap = cluster.submit_frames(WORKFLOW, range(1, 7)).wait(60)
        finally:
            slow_peak = peak.stop()
    assert snap.state == "done"
    assert slow_peak == 2, f"{strategy}: at most 2 of ours on the slow server at once, and it got 2; saw {slow_peak}"
    assert snap.servers.get("a-slow", 0) >= 2, snap.servers


@pytest.mark.timeout(60)
def test_max_in_flight_caps_our_prompts_on_a_server(start_sims):
    """``max_in_flight`` bounds the prompts of ours one server holds (running + queued)."""
    (sim,) = start_sims([1.0], seconds=0.5)
    config = ServerConfig("capped", "127.0.0.1", sim.port, max_in_flight=1)
    with Cluster.from_servers([config]) as cluster:
        peak = PeakOfOurs(sim.url, cluster.pool.client_id)
        try:
            snap = cluster.submit_frames(WORKFLOW, range(1, 6)).wait(60)
        finally:
            most = peak.stop()
    assert snap.state == "done"
    assert peak.samples > 20  # premise: the queue was watched all along
    assert most == 1, f"{most} of ours at once on a server capped at 1"


@pytest.mark.timeout(90)
def test_a_second_batch_of_the_same_workflow_starts_from_learned_speeds(start_sims):
    """The first batch learns that sim1 is 5 x slower; the next batch of the same workflow
    sends it no probe frame (not even one taken back): both frames finish sooner on sim0."""
    procs = [start_sims([1.0], seconds=0.3)[0], start_sims([0.2], seconds=0.3)[0]]
    with Cluster.from_servers(sim_configs(procs)) as cluster:
        # long enough for sim1's probe to be worth finishing (a short batch takes it back)
        first = cluster.submit_frames(WORKFLOW, range(1, 13)).wait(60)
        assert first.state == "done" and first.servers.get("sim1", 0) >= 1, first.servers  # sim1 was measured
        sent_to_sim1 = len(requests.get(procs[1].url + "/history", timeout=5).json())
        second = cluster.submit_frames(WORKFLOW, [21, 22]).wait(60)
    assert second.state == "done"
    assert second.servers == {"sim0": 2}, second.servers
    assert len(requests.get(procs[1].url + "/history", timeout=5).json()) == sent_to_sim1


# --------------------------------------------------------------------------- retry


@pytest.mark.timeout(90)
def test_retry_failed_renders_the_failed_frames_again(start_sims):
    """Frames that failed (here: no server came back in time) render when "Retry failed" is
    pressed once a server is up again; frames already done stay done."""
    (sim,) = start_sims([1.0], seconds=0.2)
    with Cluster.from_servers(sim_configs([sim]), status_ttl=0.5, wait_for_servers=1.0) as cluster:
        done = cluster.submit_frames(WORKFLOW, [1]).wait(30)
        assert done.state == "done"
        sim.kill()
        assert wait_until(lambda: not cluster.pool.server_snapshots()[0].status.reachable, 10)
        batch = cluster.submit_frames(WORKFLOW, [2, 3])
        failed = batch.wait(30)
        assert [j.state.value for j in failed.jobs] == ["failed", "failed"], failed.jobs
        assert "No server came back" in failed.jobs[0].error.message
        sim.start()
        assert wait_until(lambda: cluster.pool.server_snapshots()[0].status.reachable, 20)
        cluster.retry_failed(batch)
        assert wait_until(lambda: batch.snapshot().state == "done", 40), [
            (j.state, j.error) for j in batch.snapshot().jobs
        ]
    snap = batch.snapshot()
    assert [j.server for j in snap.jobs] == ["sim0", "sim0"]


# --------------------------------------------------------------------------- availability


def _snapshot(**kw) -> ServerSnapshot:
    base = dict(name="a", host="127.0.0.1", port=1, url="http://127.0.0.1:1", priority=0)
    base.update(kw)
    return ServerSnapshot(**base)


def test_a_disabled_server_is_never_available():
    """Defence in depth: a server switched off is skipped even if its last status says online
    (the server object also reports DISABLED; this holds when a snapshot says otherwise)."""
    now = time.time()
    off = _snapshot(name="off", enabled=False, status=ServerStatus.ONLINE)
    on = _snapshot(name="on", enabled=True, status=ServerStatus.ONLINE, priority=5)
    assert not off.is_available(now)
    assert off.unavailable_reason(now) == "disabled"
    for strategy in balancing.STRATEGIES:
        assert balancing.choose([off, on], strategy, now=now) == "on"
        assert balancing.choose([off], strategy, now=now) is None
