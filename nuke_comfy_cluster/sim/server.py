"""The simulator's aiohttp application: ComfyUI's HTTP routes, its websocket, the fault switches.

Every ComfyUI route is served both at ``/x`` and ``/api/x``; the admin routes
(``/sim/fault``, ``/sim/reset``, ``/sim/info``) are not mirrored and ignore
the faults so a test can always reach them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import random
import signal
import socket
import sys
import uuid
from typing import Any, Awaitable, Callable, Dict, List, NamedTuple, Optional, Tuple

from aiohttp import web

from .executor import Executor, Timing
from .faults import FaultState
from .node_defs import CHECKPOINTS, UPSCALE_MODELS, object_info
from .nodes import Dirs
from .prompt_queue import PromptQueue
from .validation import validate_prompt

log = logging.getLogger("nuke_comfy_cluster.sim")

COMFYUI_VERSION = "0.3.39"
ERROR_500_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimSettings(NamedTuple):
    """Everything the command line decides."""

    dirs: Dirs
    host: str = "127.0.0.1"
    port: int = 0
    speed: float = 1.0
    seconds: float = 1.0
    jitter: float = 0.0
    seed: Optional[int] = None
    name: str = ""
    device_name: str = "Sim GPU"
    vram_gb: float = 24.0
    cache: bool = True
    previews: bool = False
    faults: Dict[str, Any] = {}
    #: when set, every route but /sim/* wants "Authorization: Bearer <token>" (as a reverse proxy would)
    require_token: str = ""
    #: node classes this server lacks (a box without a custom node): absent from /object_info, 400 on use
    without_nodes: Tuple[str, ...] = ()
    #: the checkpoint names CheckpointLoaderSimple accepts (the files in models/checkpoints)
    models: Tuple[str, ...] = tuple(CHECKPOINTS)
    #: a node class that fails with a CUDA out-of-memory execution_error when it runs
    fail_class: str = ""
    #: seconds (at speed 1) a loader node that actually runs adds to the prompt
    load_seconds: float = 0.0


def _empty(status: int = 200) -> web.Response:
    # ComfyUI's bare web.Response(): no body and no Content-Type header.
    return web.Response(status=status)


def _error_500() -> web.Response:
    return web.Response(status=500, text=ERROR_500_TEXT, content_type="text/plain")


class SimServer:
    """One simulated ComfyUI: queue, worker, websockets and faults on the running event loop."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.faults = FaultState()
        self.faults.update(dict(settings.faults))
        self.sockets: Dict[str, web.WebSocketResponse] = {}
        self._open: Dict[web.WebSocketResponse, Any] = {}
        self._outbox: Optional[asyncio.Queue[Tuple[str, Any, Optional[str]]]] = None
        self.queue = PromptQueue(self._queue_changed)
        self.executor = Executor(
            self.queue,
            self.publish,
            self.publish_binary,
            self.flush,
            settings.dirs,
            Timing(settings.speed, settings.seconds, settings.jitter, settings.load_seconds),
            random.Random(settings.seed),
            cache_enabled=settings.cache,
            previews=settings.previews,
            exit_hook=self.faults.take_exit,
            fail_class=settings.fail_class,
        )
        self.port = 0
        self._runner: Optional[web.AppRunner] = None
        self._tasks: List[asyncio.Task[Any]] = []

    # ---- messages --------------------------------------------------------------------------

    def _outbox_queue(self) -> asyncio.Queue[Tuple[str, Any, Optional[str]]]:
        if self._outbox is None:
            self._outbox = asyncio.Queue()
        return self._outbox

    def publish(self, event: str, data: Dict[str, Any], sid: Optional[str] = None) -> None:
        """Queue a JSON message: to socket ``sid``, or to every socket when ``sid`` is None."""
        self._outbox_queue().put_nowait(("text", {"type": event, "data": data}, sid))

    def publish_binary(self, payload: bytes, sid: Optional[str] = None) -> None:
        self._outbox_queue().put_nowait(("bytes", payload, sid))

    async def flush(self) -> None:
        await self._outbox_queue().join()

    def _queue_changed(self) -> None:
        self.publish("status", {"status": self._queue_info()})

    def _queue_info(self) -> Dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    async def _send(self, ws: web.WebSocketResponse, kind: str, payload: Any) -> None:
        try:
            if kind == "text":
                text = json.dumps(payload)
                if self.faults.take("malformed_ws"):
                    text = text[: len(text) // 2] + "\x00garbage"
                await asyncio.wait_for(ws.send_str(text), timeout=5.0)
            else:
                await asyncio.wait_for(ws.send_bytes(payload), timeout=5.0)
        except Exception as ex:  # noqa: BLE001 - a dead client must not stop the others
            log.debug("send to websocket failed: %r", ex)

    async def _publisher(self) -> None:
        outbox = self._outbox_queue()
        while True:
            kind, payload, sid = await outbox.get()
            try:
                if sid is None:
                    targets = list(self.sockets.values())
                else:
                    targets = [self.sockets[sid]] if sid in self.sockets else []
                for ws in targets:
                    await self._send(ws, kind, payload)
            finally:
                outbox.task_done()

    def drop_websockets(self) -> int:
        """Abort every websocket's connection: clients see an abnormal close (1006)."""
        dropped = 0
        for ws, transport in list(self._open.items()):
            if transport is not None and not transport.is_closing():
                transport.abort()
                dropped += 1
            self._open.pop(ws, None)
        self.sockets.clear()
        return dropped

    # ---- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.settings.require_token
        if token and not request.path.startswith("/sim/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {token}".encode()):
                # like a proxy: no hint of the expected value, and the given one is never logged
                return web.Response(status=401, text="401 Unauthorized", content_type="text/plain")
        return await handler(request)

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            return await handler(request)
        delay = self.faults.latency + self.faults.hang
        if delay > 0:
            await asyncio.sleep(delay)
        if self.faults.take("fail_next"):
            return _error_500()
        response = await handler(request)
        if (
            isinstance(response, web.Response)
            and response.content_type == "application/json"
            and isinstance(response.body, (bytes, bytearray))
            and self.faults.take("malformed_json")
        ):
            body = bytes(response.body)
            response.body = body[: max(1, len(body) // 2)]
        return response

    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            # What ComfyUI answers for an unknown path: 404, empty, octet-stream.
            return web.Response(status=404, body=b"", content_type="application/octet-stream")
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as ex:  # noqa: BLE001 - aiohttp's own 500 page, without the traceback noise
            log.warning("%s %s -> 500 (%s: %s)", request.method, request.path, type(ex).__name__, ex)
            return _error_500()

    # ---- app -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._auth_middleware, self._fault_middleware, self._error_middleware],
            client_max_size=512 * 1024**2,
        )
        comfy_routes: List[Tuple[str, str, Handler]] = [
            ("GET", "/ws", self.ws_handler),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_models),
            ("GET", "/models/{folder}", self.get_model_files),
            ("GET", "/extensions", self.get_extensions),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view_image),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("POST", "/history", self.post_history),
        ]
        for method, path, handler in comfy_routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_get("/", self.index)
        app.router.add_get("/sim/fault", self.sim_get_fault)
        app.router.add_post("/sim/fault", self.sim_post_fault)
        app.router.add_post("/sim/reset", self.sim_reset)
        app.router.add_get("/sim/info", self.sim_info)
        return app

    async def start(self) -> int:
        """Bind, start the worker, and return the port (``settings.port`` 0 picks a free one)."""
        host = self.settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":
                # Lets a restarted simulator take its old port while TIME_WAIT lingers.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.settings.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        try:
            runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        except TypeError:  # aiohttp < 3.9 takes shutdown_timeout on the site
            runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self._tasks = [
            asyncio.ensure_future(self._publisher()),
            asyncio.ensure_future(self.executor.run_forever()),
        ]
        return self.port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001
                log.exception("simulator task failed")
        closing = [ws.close(code=1001, message=b"Server shutdown") for ws in list(self._open)]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- websocket -------------------------------------------------------------------------

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            # Same as ComfyUI: the newest socket of a clientId replaces the old one in the
            # table, and whichever closes first removes the entry (see ws_duplicate_clientid).
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self._open[ws] = transport
        try:
            await self._send(ws, "text", {"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await self._send(ws, "text", {"type": "executing", "data": {"node": self.executor.last_node_id}})
            async for _msg in ws:
                pass  # clients' messages (feature flags...) are ignored, as 0.3.39 does
        finally:
            self.sockets.pop(sid, None)
            self._open.pop(ws, None)
        return ws

    # ---- routes ----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=f"<html><body>ComfyUI simulator {self.settings.name}</body></html>", content_type="text/html"
        )

    async def get_embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([])

    async def get_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(MODEL_FOLDERS)

    async def get_model_files(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return _empty(404)
        files = {"checkpoints": sorted(self.settings.models), "upscale_models": list(UPSCALE_MODELS)}
        return web.json_response(files.get(folder, []))

    async def get_extensions(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(["/extensions/core/groupNode.js", "/extensions/core/widgetInputs.js"])

    def _dir_by_type(self, kind: Optional[str]) -> Tuple[Optional[str], str]:
        kind = kind or "input"
        dirs = self.settings.dirs
        return {"input": dirs.input, "output": dirs.output, "temp": dirs.temp}.get(kind), kind

    async def upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file") or not getattr(image, "filename", None):
            return _empty(400)
        upload_dir, kind = self._dir_by_type(post.get("type"))  # type: ignore[arg-type]
        if upload_dir is None:
            return _empty(400)
        upload_dir = os.path.abspath(upload_dir)
        subfolder = str(post.get("subfolder", "") or "")
        folder = os.path.join(upload_dir, os.path.normpath(subfolder)) if subfolder else upload_dir
        filename = os.path.basename(str(image.filename))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, path)) != upload_dir:
            return _empty(400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        overwrite = post.get("overwrite")
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            counter = 1
            while os.path.exists(path):
                with open(path, "rb") as handle:
                    if hashlib.sha256(handle.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({counter}){ext}"
                path = os.path.join(folder, filename)
                counter += 1
        if not duplicate:
            with open(path, "wb") as handle:
                handle.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view_image(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return _empty(404)
        filename = query["filename"]
        base: Optional[str] = None
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if filename.endswith(suffix):
                filename = filename[: -len(suffix) - 1]  # and the character before, as ComfyUI cuts it
                base = self._dir_by_type(kind)[0]
        if not filename:
            return _empty(400)
        if filename[0] == "/" or ".." in filename:
            return _empty(400)
        if base is None:
            base = self._dir_by_type(query.get("type", "output"))[0]
        if base is None:
            return _empty(400)
        base = os.path.abspath(base)
        if "subfolder" in query:
            full = os.path.abspath(os.path.join(base, query["subfolder"]))
            if os.path.commonpath((full, base)) != base:
                return _empty(403)
            base = full
        filename = os.path.basename(filename)
        path = os.path.join(base, filename)
        if not os.path.isfile(path):
            return _empty(404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(
            path, headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        )

    async def system_stats(self, request: web.Request) -> web.StreamResponse:
        vram_total = int(self.settings.vram_gb * 1024**3)
        used = 0.55 if self.executor.running_prompt_id else 0.08
        vram_free = int(vram_total * (1.0 - used))
        ram_total = 64 * 1024**3
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": ram_total,
                    "ram_free": int(ram_total * 0.7),
                    "comfyui_version": COMFYUI_VERSION,
                    "python_version": sys.version,
                    "pytorch_version": "2.7.1+cu128",
                    "embedded_python": False,
                    "argv": list(sys.argv),
                },
                "devices": [
                    {
                        "name": f"cuda:0 {self.settings.device_name} : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": vram_total,
                        "vram_free": vram_free,
                        "torch_vram_total": vram_total,
                        "torch_vram_free": vram_free,
                    }
                ],
            }
        )

    async def get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._queue_info())

    def _object_info(self) -> Dict[str, Any]:
        input_dir = self.settings.dirs.input
        try:
            names = [
                n
                for n in os.listdir(input_dir)
                if os.path.isfile(os.path.join(input_dir, n))
                and (mimetypes.guess_type(n)[0] or "").startswith("image/")
            ]
        except OSError:
            names = []
        defs = object_info(names, sorted(self.settings.models), UPSCALE_MODELS)
        for missing in self.settings.without_nodes:
            defs.pop(missing, None)
        return defs

    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # malformed JSON -> 500 text/plain, as ComfyUI
        if not isinstance(body, dict):
            raise TypeError("request body must be a JSON object")
        if "number" in body:
            number: Any = float(body["number"])
        else:
            number = self.queue.next_number(bool(body.get("front")))
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        result = validate_prompt(prompt, self._object_info(), self.settings.dirs)
        extra_data = body.get("extra_data", {})
        if not isinstance(extra_data, dict):
            raise TypeError("extra_data must be a JSON object")
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            log.info("invalid prompt: %s", result.error["message"] if result.error else "?")
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
        prompt_id = str(uuid.uuid4())
        self.queue.put((number, prompt_id, prompt, extra_data, result.good_outputs))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def get_object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._object_info())

    async def get_object_info_node(self, request: web.Request) -> web.StreamResponse:
        node_class = request.match_info["node_class"]
        info = self._object_info()
        return web.json_response({node_class: info[node_class]} if node_class in info else {})

    async def get_history(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        return web.json_response(self.queue.history(max_items=max_items, offset=offset))

    async def get_history_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.queue.history(request.match_info["prompt_id"]))

    async def get_queue(self, request: web.Request) -> web.StreamResponse:
        running, pending = self.queue.current()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("clear"):
            self.queue.wipe()
        for prompt_id in body.get("delete") or []:
            self.queue.delete_pending(prompt_id)
        return _empty()

    async def post_interrupt(self, request: web.Request) -> web.StreamResponse:
        self.executor.interrupt()
        return _empty()

    async def post_free(self, request: web.Request) -> web.StreamResponse:
        return _empty()

    async def post_history(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("clear"):
            self.queue.wipe_history()
        for prompt_id in body.get("delete") or []:
            self.queue.delete_history(prompt_id)
        return _empty()

    # ---- admin -----------------------------------------------------------------------------

    async def sim_get_fault(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.as_dict())

    async def sim_post_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            drop = self.faults.update(changes)
        except ValueError as ex:
            return web.json_response({"error": str(ex)}, status=400)
        state = self.faults.as_dict()
        if drop:
            state["dropped_websockets"] = self.drop_websockets()
        log.info("faults now %s", state)
        return web.json_response(state)

    async def sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.faults.reset()
        return web.json_response(self.faults.as_dict())

    async def sim_info(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        return web.json_response(
            {
                "name": s.name,
                "pid": os.getpid(),
                "port": self.port,
                "speed": s.speed,
                "seconds": s.seconds,
                "jitter": s.jitter,
                "output_dir": s.dirs.output,
                "input_dir": s.dirs.input,
                "temp_dir": s.dirs.temp,
                "queue_remaining": self.queue.remaining(),
                "running_prompt_id": self.executor.running_prompt_id,
                "websockets": len(self._open),
            }
        )


async def serve(settings: SimSettings, exit_with_parent: bool = False) -> None:
    """Run until SIGTERM/SIGINT (or the parent process exits); prints ``SIM READY <port>``."""
    server = SimServer(settings)
    port = await server.start()
    if not settings.name:
        server.settings = settings = settings._replace(name=f"sim:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    watcher = asyncio.ensure_future(_watch_parent(stop)) if exit_with_parent else None
    log.info(
        "%s listening on http://%s:%d (speed %g, seconds %g, jitter %g) output=%s input=%s",
        settings.name,
        settings.host,
        port,
        settings.speed,
        settings.seconds,
        settings.jitter,
        settings.dirs.output,
        settings.dirs.input,
    )
    sys.stdout.write(f"SIM READY {port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        log.info("%s shutting down", settings.name)
        await server.stop()


async def _watch_parent(stop: asyncio.Event) -> None:
    # A test runner killed with SIGKILL cannot stop its simulators: they notice and leave.
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            log.warning("parent process %d is gone: exiting", parent)
            stop.set()
