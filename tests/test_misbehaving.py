"""Servers that misbehave in ways no timeout catches, each against a real socket server:

- slow loris: the answer trickles in, one byte at a time (total deadline);
- wrong-shaped JSON to POST /prompt while the websocket keeps pushing (failures per kind);
- a websocket that sends only binary frames (not a sign of life).

The servers here are tiny real servers on 127.0.0.1 (raw sockets, or aiohttp in a thread).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import List

import pytest
from aiohttp import web

from nuke_comfy_cluster.core import server as server_mod
from nuke_comfy_cluster.core import websocket as ws_mod
from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.errors import ServerTimeout, ServerUnavailable
from nuke_comfy_cluster.core.http import ServerConnection
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from nuke_comfy_cluster.core.server import GENERAL, STATUS, SUBMIT, ComfyUIServer
from nuke_comfy_cluster.core.state import ServerStatus
from tests.conftest import sim_configs, wait_until

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mb/f_####"}},
}


class Trickler:
    """Answers every request by trickling bytes: ``headers`` (a header line every 0.2 s),
    ``body`` (a body byte every 0.2 s), or ``download`` (64 KiB every 0.3 s, a fair link)."""

    def __init__(self, mode: str, seconds: float = 40.0) -> None:
        self.mode = mode
        self.seconds = seconds
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        end = time.monotonic() + self.seconds
        try:
            conn.recv(65536)
            if self.mode == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < end and not self._stop.is_set():
                    conn.sendall(b"X-Slow: 1\r\n")
                    time.sleep(0.2)
            elif self.mode == "body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while time.monotonic() < end and not self._stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(0.2)
            else:
                chunk, count = b"x" * 65536, 10
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * count))
                for _ in range(count):
                    conn.sendall(chunk)
                    time.sleep(0.3)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def trickler():
    made: List[Trickler] = []

    def make(mode: str) -> Trickler:
        t = Trickler(mode)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def _conn(port: int, timeout=(0.5, 0.5)) -> ServerConnection:
    return ServerConnection(ServerConfig(name="loris", ip="127.0.0.1", port=port), timeout=timeout)


# -- slow loris -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_trickled_answer_fails_at_the_total_deadline(trickler, mode):
    t = trickler(mode)
    conn = _conn(t.port)  # read timeout 0.5 s never fires: a byte comes every 0.2 s
    started = time.monotonic()
    with pytest.raises(ServerTimeout, match="no complete answer .* within 1 s"):
        conn.get_json("prompt")
    # the trickle goes on for 40 s; the deadline is connect + read = 1 s
    assert time.monotonic() - started < 8.0
    started = time.monotonic()
    with pytest.raises(ServerTimeout):
        conn.get_bytes("view")
    assert time.monotonic() - started < 8.0
    conn.close()


def test_a_slow_but_steady_download_is_not_cut(trickler):
    t = trickler("download")
    conn = _conn(t.port)
    started = time.monotonic()
    data = conn.get_bytes("view")  # ~3 s in all, far over the 1 s total: progress moves it on
    assert len(data) == 10 * 65536 and time.monotonic() - started > 1.0
    conn.close()


def test_close_aborts_requests_under_way(trickler):
    t = trickler("body")
    conn = _conn(t.port, timeout=(5.0, 5.0))
    outcome: List[BaseException] = []

    def call() -> None:
        try:
            conn.get_json("prompt", total=60.0)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            outcome.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    assert wait_until(lambda: t.requests == 1, 5)
    time.sleep(0.3)
    started = time.monotonic()
    conn.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 3.0
    assert isinstance(outcome[0], ServerUnavailable) and "closed" in str(outcome[0])


def test_a_trickling_status_poll_is_a_failure_a_push_does_not_hide(trickler, monkeypatch):
    monkeypatch.setattr(server_mod, "STATUS_TIMEOUT", (0.5, 0.5))
    t = trickler("body")
    server = ComfyUIServer(ServerConfig(name="loris", ip="127.0.0.1", port=t.port))
    snap = server.update_status()
    assert snap.status is ServerStatus.OFFLINE and "no complete answer" in snap.last_error
    assert server.failures_of(STATUS) == 1
    server.apply_push(0)  # its websocket is fine: that proves nothing of the API
    assert server.get_status().status is ServerStatus.OFFLINE and not server.is_available()
    server.update_status()
    assert server.get_status().cooling_down(time.time())
    server.close()


# -- failures per kind ------------------------------------------------------------------------


def _server() -> ComfyUIServer:
    return ComfyUIServer(ServerConfig(name="s", ip="127.0.0.1", port=9))


def test_pushes_do_not_reset_the_failure_count():
    server = _server()
    server.record_failure("POST /prompt answered without a prompt_id")
    server.apply_push(1)
    server.apply_push(0)
    server.record_failure("POST /prompt answered without a prompt_id")
    assert server.get_status().cooling_down(time.time())


def test_failures_are_counted_per_kind():
    server = _server()
    server.record_failure("submit", kind=SUBMIT)
    server.note_submitted()  # a submit worked: the submit run is over
    server.record_failure("submit", kind=SUBMIT)
    assert not server.get_status().cooling_down(time.time())
    server.record_failure("history", kind=GENERAL)
    server.note_submitted()  # proves POST /prompt, not the other kinds
    server.record_failure("history", kind=GENERAL)
    assert server.get_status().cooling_down(time.time())
    server.record_success()
    assert not server.get_status().cooling_down(time.time()) and server.consecutive_failures == 0


def test_a_cooldown_ends_when_its_own_kind_works_again():
    server = _server()
    server.record_failure("poll", kind=STATUS)
    server.record_failure("poll", kind=STATUS)
    assert server.get_status().cooling_down(time.time())
    server.record_ok(SUBMIT)
    assert server.get_status().cooling_down(time.time())
    server.record_ok(STATUS)
    assert not server.get_status().cooling_down(time.time())


# -- fake ComfyUI servers (aiohttp in a thread) --------------------------------------------------


class FakeComfy:
    """Just enough ComfyUI for the pool and the dispatcher; misbehaviour chosen by flags."""

    def __init__(self, *, bad_prompt_id: bool = False, binary_only: bool = False) -> None:
        self.bad_prompt_id = bad_prompt_id
        self.binary_only = binary_only
        self.posts = 0
        self.binary_sent = 0
        self._sockets: List[web.WebSocketResponse] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "fake server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/prompt", self._queue_info)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/system_stats", self._stats)
        app.router.add_get("/queue", self._queue)
        app.router.add_post("/queue", self._empty)
        app.router.add_get("/history/{id}", self._history)
        app.router.add_get("/ws", self._ws)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stopping.wait()
        for ws in list(self._sockets):
            await ws.close()
        await runner.cleanup()

    def _status(self) -> dict:
        return {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}

    async def _queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [], "queue_pending": []})

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _history(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _queue_info(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": 0}})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "fake", "argv": [str(self.port)]}, "devices": []})

    async def _post_prompt(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts += 1
        for ws in list(self._sockets):  # ComfyUI pushes a status on every queue change
            await ws.send_json(self._status())
        if self.bad_prompt_id:
            return web.json_response({"prompt_id": 12345, "number": self.posts, "node_errors": {}})
        return web.json_response({"prompt_id": f"p{self.posts}", "number": self.posts, "node_errors": {}})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(self._status())
        try:
            while not ws.closed and not self._stopping.is_set():
                if self.binary_only:
                    await ws.send_bytes(b"\x00\x00\x00\x01" + b"\xff" * 64)  # a preview frame
                    self.binary_sent += 1
                await asyncio.sleep(0.1)
        finally:
            self._sockets.remove(ws)
        return ws

    def send_text(self) -> None:
        async def push() -> None:
            for ws in list(self._sockets):
                await ws.send_json(self._status())

        asyncio.run_coroutine_threadsafe(push(), self._loop).result(5)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)


@pytest.fixture
def fake_comfy():
    made: List[FakeComfy] = []

    def make(**kw) -> FakeComfy:
        f = FakeComfy(**kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def test_wrong_shaped_prompt_answers_put_the_server_in_cooldown(start_sims, fake_comfy, tmp_path):
    (sim,) = start_sims([1.0], seconds=0.15)
    bad = fake_comfy(bad_prompt_id=True)
    configs = sim_configs([sim]) + [ServerConfig(name="bad", ip="127.0.0.1", port=bad.port, priority=0)]
    frames = range(1, 25)
    with Cluster.from_servers(configs) as cluster:
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=str(tmp_path), sequence_name="mb")
        snap = batch.wait(90)
        bad_server = cluster.pool.get_server_by_name("bad")
        cooled = bad_server.get_status().cooldown_until is not None
    assert snap.state == "done", snap.message
    # each answer came with a status push; before the fix every push reset the count and
    # the server was fed a frame after every push, for the whole batch
    assert cooled and bad.posts <= 4, bad.posts


def test_binary_frames_alone_are_not_a_live_websocket(fake_comfy, monkeypatch):
    monkeypatch.setattr(ws_mod, "BINARY_ONLY_LIMIT_S", 1.0)
    fake = fake_comfy(binary_only=True)
    pool = ComfyUIServerPool([ServerConfig(name="fake", ip="127.0.0.1", port=fake.port)], status_ttl=0.5)
    pool.start()
    try:
        server = pool.servers[0]
        assert wait_until(lambda: server.live, 10)  # the status text frame on connect
        assert wait_until(lambda: not server.live, 10)
        sent, socket_obj = fake.binary_sent, pool._sockets["fake"]
        assert wait_until(lambda: fake.binary_sent > sent + 3, 5)  # previews keep coming...
        assert not pool.snapshot().servers[0].live  # ...and the server is not shown live
        assert socket_obj.connected and socket_obj.stalled  # the socket itself stayed open
        fake.send_text()  # an event again: live again, without a reconnect
        assert wait_until(lambda: server.live, 5)
        assert socket_obj.reconnects == 0
    finally:
        pool.close()
