"""Real ComfyUI servers for the test tier: build once, start N on free loopback ports, stop by PID.

::

    comfy = build_comfyui()                     # scripts/real_comfyui.sh, cached in .real-comfyui/
    servers = start_servers(comfy, [dict(name="fast", speed=1.0), dict(name="bare", custom_nodes=False)])
    servers[0].url; servers[0].kill(); servers[0].restart(); stop_servers(servers)

Each server has its own input/output/user/temp folders and log file, its own
speed for the test-only nodes (``NCC_TEST_SPEED``), and optionally its own
checkpoint names (empty files in its own models folder) so the "checkpoint
missing on one box" case is real. Servers run in their own process group and
are stopped by the PID we started, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CUSTOM_NODES = Path(__file__).resolve().parent / "custom_nodes"
BUILD_SCRIPT = REPO / "scripts" / "real_comfyui.sh"
#: First start on a loaded 2-core machine: imports of torch and 700 nodes.
START_TIMEOUT = float(os.environ.get("NCC_REAL_START_TIMEOUT", "150"))


class ComfyBuild:
    """A built ComfyUI: its venv's Python and its source folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "venv" / "bin" / "python"
        self.comfy = root / "ComfyUI"

    def install_custom_nodes(self) -> None:
        """Copy the test-only nodes in (every session: an edit needs no rebuild)."""
        target = self.comfy / "custom_nodes"
        for source in CUSTOM_NODES.glob("*.py"):
            shutil.copyfile(source, target / source.name)


def source_available() -> Optional[str]:
    """The ComfyUI source the tier would use, or None."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "source"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def build_comfyui() -> ComfyBuild:
    """Build (or reuse) the venv; raises with the script's output when it fails."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "build"], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/real_comfyui.sh build failed (exit {result.returncode})")
    build = ComfyBuild(Path(result.stdout.strip().splitlines()[-1]))
    build.install_custom_nodes()
    return build


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RealServer:
    """One real ComfyUI process with its own folders."""

    def __init__(
        self,
        build: ComfyBuild,
        name: str,
        *,
        speed: float = 1.0,
        custom_nodes: bool = True,
        checkpoints: Sequence[str] = (),
        oom: bool = False,
        output_dir: Optional[str] = None,
        workdir: Optional[str] = None,
    ) -> None:
        self.build = build
        self.name = name
        self.speed = speed
        self.custom_nodes = custom_nodes
        self.checkpoints = list(checkpoints)
        self.oom = oom
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"ncc-real-{name}-"))
        self.input_dir = self.workdir / "input"
        self.output_dir = Path(output_dir) if output_dir else self.workdir / "output"
        self.node_log = self.workdir / "nodes.jsonl"
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self.launches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"comfyui-{self.launches}.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def node_runs(self) -> List[Dict[str, Any]]:
        """What the test-only nodes actually ran on this server (cache misses), oldest first."""
        try:
            lines = self.node_log.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _models_config(self) -> Path:
        checkpoints = self.workdir / "models" / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        for name in self.checkpoints:
            (checkpoints / name).write_bytes(b"")  # listed by name only; never loaded
        config = self.workdir / "extra_model_paths.yaml"
        config.write_text(f"ncc_test:\n  base_path: {self.workdir / 'models'}\n  checkpoints: checkpoints\n")
        return config

    def command(self) -> List[str]:
        for folder in (self.input_dir, self.output_dir, self.workdir / "user", self.workdir / "temp"):
            folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.build.python),
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--cpu",
            "--disable-auto-launch",
            "--input-directory",
            str(self.input_dir),
            "--output-directory",
            str(self.output_dir),
            "--user-directory",
            str(self.workdir / "user"),
            "--temp-directory",
            str(self.workdir / "temp"),
            "--extra-model-paths-config",
            str(self._models_config()),
        ]
        if not self.custom_nodes:
            cmd.append("--disable-all-custom-nodes")
        return cmd

    def launch(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        if not self.port:
            self.port = free_port()
        self.launches += 1
        env = dict(os.environ)
        env.update(
            NCC_TEST_SPEED=repr(float(self.speed)),
            NCC_TEST_LOG=str(self.node_log),
            NCC_TEST_OOM="1" if self.oom else "0",
            PYTHONUNBUFFERED="1",
            # one thread each: several servers share two cores with the rest of the machine
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=str(self.build.comfy),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, deadline: float) -> None:
        while True:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not answering after {START_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.25)

    def start(self) -> RealServer:
        self.launch()
        try:
            self.wait_ready(time.monotonic() + START_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the process we started (a crash: queue and history are lost)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> RealServer:
        """Stop (if running) and start again on the same port, with empty memory."""
        self.stop()
        deadline = time.monotonic() + 30
        while not _port_free(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} of {self.name} still taken")
            time.sleep(0.2)
        return self.start()

    def post_json(self, path: str, body: Any, timeout: float = 10.0) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
        return json.loads(data) if data else None

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def __repr__(self) -> str:
        return f"RealServer({self.name!r}, port={self.port}, pid={self.pid}, alive={self.alive})"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_servers(build: ComfyBuild, specs: Iterable[Dict[str, Any]]) -> List[RealServer]:
    """Start one server per spec (RealServer keyword arguments) in parallel; all up or none left."""
    servers = [RealServer(build, **spec) for spec in specs]
    deadline = time.monotonic() + START_TIMEOUT
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(deadline)
    except BaseException:
        stop_servers(servers, cleanup=True)
        raise
    return servers


def stop_servers(servers: Iterable[RealServer], cleanup: bool = True) -> None:
    servers = list(servers)
    for server in servers:
        if server.alive:
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGTERM)
    for server in servers:
        server.stop()
        if cleanup:
            shutil.rmtree(server.workdir, ignore_errors=True)
