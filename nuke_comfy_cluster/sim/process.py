"""Start and control simulator processes from tests, the demo and benchmarks.

::

    with SimProcess(speed=2.0, seconds=0.2) as sim:   # started, READY seen
        requests.get(sim.url + "/queue", timeout=2)
        sim.set_fault(fail_next=1)
        sim.sigstop(); ...; sim.sigcont()
        sim.kill(); sim.restart()                    # same port, empty queue

Each simulator runs in its own process group with its output in log files (a
full pipe can never block it), is told to exit if this process dies
(``--exit-with-parent``), and is stopped at interpreter exit in any case.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Dict, Iterable, List, Optional, Sequence

_READY = re.compile(rb"^SIM READY (\d+)\s*$", re.MULTILINE)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_live: set[SimProcess] = set()
_temp_dirs: set[str] = set()
_live_lock = threading.Lock()
_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_leftovers)
        _atexit_registered = True


def _register(proc: SimProcess) -> None:
    with _live_lock:
        _live.add(proc)
        _register_atexit()


def _unregister(proc: SimProcess) -> None:
    with _live_lock:
        _live.discard(proc)


def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
        temp_dirs = list(_temp_dirs)
    stop_all(leftovers, timeout=2.0)
    for path in temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


class SimStartError(RuntimeError):
    """The simulator did not print ``SIM READY`` in time (the log tail is in the message)."""


class SimProcess:
    """One simulator process: start, stop, crash, freeze, restart, faults."""

    def __init__(
        self,
        speed: float = 1.0,
        seconds: float = 1.0,
        jitter: float = 0.0,
        port: int = 0,
        output_dir: Optional[str] = None,
        input_dir: Optional[str] = None,
        name: Optional[str] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.speed = speed
        self.seconds = seconds
        self.jitter = jitter
        self.requested_port = port
        self.name = name
        self.extra_args = list(extra_args)
        self._output_dir = output_dir
        self._input_dir = input_dir
        self._tmp: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self._launches = 0
        self._stdout_path = ""
        self._stderr_path = ""
        self._stdout_handle: Any = None
        self._stderr_handle: Any = None
        self.port = 0

    # ---- properties -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc is not None else None

    @property
    def output_dir(self) -> str:
        return self._dirs()[0]

    @property
    def input_dir(self) -> str:
        return self._dirs()[1]

    @property
    def log_path(self) -> str:
        """stderr of the current (or last) run: the simulator's log."""
        return self._stderr_path

    def log_text(self) -> str:
        try:
            with open(self._stderr_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- lifecycle ------------------------------------------------------------------------

    def _workdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="comfy-simproc-")
            with _live_lock:
                _temp_dirs.add(self._tmp)
                _register_atexit()
        return self._tmp

    def _dirs(self) -> List[str]:
        if self._output_dir is None:
            self._output_dir = os.path.join(self._workdir(), "output")
        if self._input_dir is None:
            self._input_dir = os.path.join(self._workdir(), "input")
        return [self._output_dir, self._input_dir, os.path.join(self._workdir(), "temp")]

    def command(self, port: int) -> List[str]:
        output_dir, input_dir, temp_dir = self._dirs()
        cmd = [
            sys.executable,
            "-m",
            "nuke_comfy_cluster.sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--speed",
            repr(float(self.speed)),
            "--seconds",
            repr(float(self.seconds)),
            "--jitter",
            repr(float(self.jitter)),
            "--output-directory",
            output_dir,
            "--input-directory",
            input_dir,
            "--temp-directory",
            temp_dir,
            "--exit-with-parent",
        ]
        if self.name:
            cmd += ["--name", self.name]
        return cmd + self.extra_args

    def _launch(self, port: int) -> None:
        if self.alive:
            raise RuntimeError(f"simulator already running (pid {self.pid})")
        self._close_logs()
        workdir = self._workdir()
        self._launches += 1
        stem = os.path.join(workdir, f"sim-{self._launches}")
        self._stdout_path, self._stderr_path = stem + ".out", stem + ".log"
        self._stdout_handle = open(self._stdout_path, "wb")  # noqa: SIM115 - closed in _close_logs
        self._stderr_handle = open(self._stderr_path, "wb")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(
            self.command(port),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout_handle,
            stderr=self._stderr_handle,
            env=env,
            cwd=workdir,
            **kwargs,
        )
        _register(self)

    def _wait_ready(self, deadline: float) -> int:
        assert self._proc is not None
        while True:
            try:
                with open(self._stdout_path, "rb") as handle:
                    match = _READY.search(handle.read())
            except OSError:
                match = None
            if match:
                self.port = int(match.group(1))
                return self.port
            if self._proc.poll() is not None:
                raise SimStartError(
                    f"simulator exited with code {self._proc.returncode} before READY:\n{self.log_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise SimStartError(f"simulator not READY in time:\n{self.log_text()[-2000:]}")
            time.sleep(0.02)

    def start(self, timeout: float = 15.0) -> SimProcess:
        """Launch and wait (bounded) for ``SIM READY``; kills the child on failure."""
        if self.alive:
            raise RuntimeError(f"simulator already running (pid {self.pid})")
        port = self.port or self.requested_port
        deadline = time.monotonic() + timeout
        while True:
            self._launch(port)
            try:
                self._wait_ready(deadline)
                return self
            except SimStartError:
                self._hard_kill()
                # A restart on a fixed port may race the old socket's release: retry briefly.
                if port and "Address already in use" in self.log_text() and time.monotonic() < deadline - 0.3:
                    time.sleep(0.2)
                    continue
                raise
            except BaseException:
                self._hard_kill()
                raise

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.terminate()
            if os.name != "nt":
                # A SIGSTOPped process only acts on SIGTERM once continued.
                os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        self._close_logs()
        _unregister(self)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for the process."""
        self._terminate()
        self._reap(timeout)

    def _hard_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._close_logs()
        _unregister(self)

    def kill(self) -> None:
        """SIGKILL: a crash. Queue and history die with the process."""
        self._hard_kill()

    def wait(self, timeout: float) -> Optional[int]:
        """Wait up to ``timeout`` for the process to exit by itself; its return code or None."""
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_logs()
        _unregister(self)
        return code

    def sigstop(self) -> None:
        """Freeze the process: connections are accepted by the kernel, nothing is answered."""
        if self._proc is not None and self.alive:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        if self._proc is not None and self.alive:
            os.kill(self._proc.pid, signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> SimProcess:
        """Stop (if running) and start again on the same port, with empty memory."""
        if self.alive:
            self.stop()
        return self.start(timeout=timeout)

    def cleanup(self) -> None:
        """Stop and remove the temp folder this helper made (outputs included)."""
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            with _live_lock:
                _temp_dirs.discard(self._tmp)
            self._tmp = None

    def _close_logs(self) -> None:
        for handle in (self._stdout_handle, self._stderr_handle):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass
        self._stdout_handle = self._stderr_handle = None

    def __enter__(self) -> SimProcess:
        if not self.alive:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"SimProcess(speed={self.speed:g}, port={self.port}, pid={self.pid}, alive={self.alive})"

    # ---- admin routes ---------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, timeout: float = 3.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def set_fault(self, **faults: Any) -> Dict[str, Any]:
        """``POST /sim/fault``: e.g. ``set_fault(fail_next=2, latency=0.1)``; returns the fault state."""
        return self._admin("POST", "/sim/fault", faults)

    def get_faults(self) -> Dict[str, Any]:
        return self._admin("GET", "/sim/fault")

    def reset_faults(self) -> Dict[str, Any]:
        return self._admin("POST", "/sim/reset", {})

    def info(self) -> Dict[str, Any]:
        return self._admin("GET", "/sim/info")


def start_cluster(speeds: Iterable[float], timeout: float = 20.0, **kw: Any) -> List[SimProcess]:
    """Start one simulator per speed, in parallel; all READY or none left running."""
    procs = [SimProcess(speed=speed, **kw) for speed in speeds]
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc._launch(proc.requested_port)
        for proc in procs:
            proc._wait_ready(deadline)
    except BaseException:
        for proc in procs:
            proc._hard_kill()
            proc.cleanup()
        raise
    return procs


def stop_all(procs: Iterable[SimProcess], timeout: float = 5.0, cleanup: bool = True) -> None:
    """SIGTERM every process first, then reap each (SIGKILL after ``timeout``).

    With ``cleanup`` the temp folders the helpers made (default output/input
    folders and logs) are removed too; folders passed in are never touched.
    """
    procs = list(procs)
    for proc in procs:
        proc._terminate()
    for proc in procs:
        proc._reap(timeout)
        if cleanup:
            proc.cleanup()
