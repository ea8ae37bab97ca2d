"""Slow loris: a server that trickles its answers, so no read timeout ever fires.

::

    python -m benchmarks.slow_loris                 # request figures + a batch with and without it
    python -m benchmarks.slow_loris --trickle 30    # how long the loris keeps trickling (baseline)

Prints, in one run:

- request: seconds until a request to the trickling server is given up, with our
  connection (default timeouts, and the status poll's), beside a plain requests
  Session with the same (connect, read) timeouts (the baseline: it waits until the
  server stops trickling);
- close: seconds ``ServerConnection.close()`` takes with a request stuck there;
- batch: the makespan of one batch over simulators, without and with a slow-loris
  server in the cluster (its ``POST /prompt`` trickles), and how many frames it held.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import requests
from aiohttp import web

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.http import DEFAULT_TIMEOUT, STATUS_TIMEOUT, ServerConnection
from nuke_comfy_cluster.sim.process import SimProcess, stop_all

WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loris/f_####"}},
}


class Loris:
    """ComfyUI-shaped enough to look online; ``trickle_posts``: POST /prompt trickles;
    ``trickle_all``: every answer trickles."""

    def __init__(self, trickle: float, *, trickle_all: bool = False) -> None:
        self.trickle = trickle
        self.trickle_all = trickle_all
        self.posts = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(self._main()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/prompt", self._get_prompt)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/system_stats", self._json({"system": {"comfyui_version": "loris"}, "devices": []}))
        app.router.add_get("/queue", self._json({"queue_running": [], "queue_pending": []}))
        app.router.add_post("/queue", self._json({}))
        app.router.add_get("/history/{id}", self._json({}))
        app.router.add_get("/ws", self._ws)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _json(self, body: Any):  # noqa: ANN202
        async def handler(request: web.Request) -> web.StreamResponse:
            if self.trickle_all:
                return await self._trickled(request)
            return web.json_response(body)

        return handler

    async def _trickled(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100000"})
        await response.prepare(request)
        end = time.monotonic() + self.trickle
        try:
            while time.monotonic() < end and not self._stop.is_set():  # type: ignore[union-attr]
                await response.write(b" ")
                await asyncio.sleep(0.5)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _get_prompt(self, request: web.Request) -> web.StreamResponse:
        if self.trickle_all:
            return await self._trickled(request)
        return web.json_response({"exec_info": {"queue_remaining": 0}})

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.posts += 1
        return await self._trickled(request)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
        while not ws.closed and not self._stop.is_set():  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
        return ws

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _timed(fn) -> float:  # noqa: ANN001
    started = time.monotonic()
    try:
        fn()
    except Exception:  # noqa: BLE001 - the time to fail is the figure
        pass
    return time.monotonic() - started


def request_figures(trickle: float) -> Dict[str, float]:
    loris = Loris(trickle, trickle_all=True)
    url = f"http://127.0.0.1:{loris.port}/prompt"
    conn = ServerConnection(ServerConfig(name="loris", ip="127.0.0.1", port=loris.port))
    figures = {
        "ours_default": _timed(lambda: conn.get_json("prompt")),
        "ours_status_poll": _timed(lambda: conn.get_json("prompt", timeout=STATUS_TIMEOUT)),
    }
    box: List[float] = []
    stuck = threading.Thread(target=lambda: box.append(_timed(lambda: conn.get_json("prompt", total=3600))))
    stuck.start()
    time.sleep(1.0)
    figures["close"] = _timed(conn.close)
    stuck.join(10)
    session = requests.Session()
    session.trust_env = False
    figures["baseline_requests"] = _timed(lambda: session.get(url, timeout=DEFAULT_TIMEOUT).content)
    loris.close()
    return figures


def batch_makespan(frames: int, seconds: float, with_loris: bool, trickle: float) -> Dict[str, Any]:
    sims = [SimProcess(speed=1.0, seconds=seconds) for _ in range(2)]
    for sim in sims:
        sim.start()
    loris = Loris(trickle) if with_loris else None
    configs = [ServerConfig(name=f"sim{i}", ip="127.0.0.1", port=s.port, priority=i + 1) for i, s in enumerate(sims)]
    if loris is not None:
        configs.append(ServerConfig(name="loris", ip="127.0.0.1", port=loris.port, priority=0))
    out = tempfile.mkdtemp(prefix="ncc-loris-")
    try:
        with Cluster.from_servers(configs) as cluster:
            cluster.pool.update_all_server_status()
            started = time.monotonic()
            batch = cluster.submit_frames(WORKFLOW, range(1, frames + 1), output_dir=out, sequence_name="l")
            snap = batch.wait(trickle + 120)
            makespan = time.monotonic() - started
            closing = time.monotonic()
        closed = time.monotonic() - closing
        done = sum(1 for j in snap.jobs if j.state.value == "done")
        return {"makespan": makespan, "done": done, "close": closed, "posts": loris.posts if loris else 0}
    finally:
        if loris is not None:
            loris.close()
        stop_all(sims)
        shutil.rmtree(out, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_loris", description=__doc__.split("\n")[0])
    parser.add_argument("--trickle", type=float, default=30.0, help="seconds the loris trickles each answer")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=0.5, help="frame time on the simulators")
    args = parser.parse_args(argv)
    f = request_figures(args.trickle)
    print(f"request to a trickling server (it trickles {args.trickle:.0f} s):")
    print(f"  ours, default timeouts {DEFAULT_TIMEOUT}: given up after {f['ours_default']:.1f} s")
    print(f"  ours, status poll {STATUS_TIMEOUT}:        given up after {f['ours_status_poll']:.1f} s")
    print(f"  ours, close() with a request stuck:    {f['close']:.2f} s")
    print(f"  baseline, requests {DEFAULT_TIMEOUT}:     {f['baseline_requests']:.1f} s (until the server stopped)")
    without = batch_makespan(args.frames, args.seconds, False, args.trickle)
    with_loris = batch_makespan(args.frames, args.seconds, True, args.trickle)
    print(f"batch of {args.frames} frames x {args.seconds} s on 2 simulators:")
    print(f"  without the loris: {without['makespan']:.1f} s, {without['done']} done, close {without['close']:.2f} s")
    print(
        f"  with a loris (POST /prompt trickles): {with_loris['makespan']:.1f} s, {with_loris['done']} done, "
        f"close {with_loris['close']:.2f} s, frames sent to it {with_loris['posts']}"
    )
    return 0 if without["done"] == with_loris["done"] == args.frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
