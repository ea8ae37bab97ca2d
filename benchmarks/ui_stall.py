"""How long the panel's GUI event loop is ever blocked, with 20 servers of which 5 hang.

``python -m benchmarks.ui_stall [--json] [--servers 20] [--hung 5] [--refreshes 4] [--frames 40]``

Twenty simulator processes, five of them frozen with SIGSTOP (they accept TCP and
never answer: every request to them waits for its read timeout). The panel runs on
a real cluster (websockets, background polling, dispatcher) while it is refreshed
over and over and a batch of frames runs; a 5 ms precise QTimer on the GUI thread
measures the longest gap between its ticks, minus its interval: the longest stall.
The baseline, in the same run, is the same refresh done the naive way, on the GUI
thread. Target: the panel's longest stall under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

TARGET_MS = 50.0
HEARTBEAT_MS = 5
SPEEDS = (1.0, 0.5, 0.25)


class Heartbeat:
    """Gaps between ticks of a precise timer on the GUI thread."""

    def __init__(self, QtCore: Any) -> None:  # noqa: N803
        self.gaps: List[float] = []
        self._last: Optional[float] = None
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps = []
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> Dict[str, float]:
        self.timer.stop()
        gaps = sorted(self.gaps) or [0.0]
        interval = HEARTBEAT_MS / 1000.0
        return {
            "max_stall_ms": max(0.0, gaps[-1] - interval) * 1000.0,
            "p99_gap_ms": gaps[int(0.99 * (len(gaps) - 1))] * 1000.0,
            "ticks": len(self.gaps),
        }


def _wait(QtCore: Any, exec_: Callable[..., Any], done: Callable[[], bool], timeout: float) -> bool:  # noqa: N803
    """Run the GUI event loop until ``done()`` or ``timeout`` seconds (checked every 20 ms)."""
    loop = QtCore.QEventLoop()
    deadline = time.monotonic() + timeout
    check = QtCore.QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: loop.quit() if done() or time.monotonic() > deadline else None)
    check.start()
    if not done():
        exec_(loop)
    check.stop()
    return done()


def _control_run(
    QtCore: Any, exec_: Callable[..., Any], beat: Heartbeat, cluster: Any, refreshes: int, jobs: List[Any]
) -> Dict[str, Any]:  # noqa: N803
    import threading

    done = threading.Event()

    def work() -> None:
        batch = cluster.submit_batch(jobs, name="control")
        for _ in range(refreshes):
            cluster.pool.update_all_server_status(force=True)
        batch.wait(60.0)
        done.set()

    beat.start()
    thread = threading.Thread(target=work, name="ui-stall-control", daemon=True)
    thread.start()
    _wait(QtCore, exec_, done.is_set, 90.0)
    result = beat.stop()
    thread.join(5.0)
    return result


def measure(servers: int, hung: int, refreshes: int, frames: int, seconds: float) -> Dict[str, Any]:
    if sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from nuke_comfy_cluster.core.api import Cluster
    from nuke_comfy_cluster.core.config import ServerConfig
    from nuke_comfy_cluster.core.http import STATUS_TIMEOUT
    from nuke_comfy_cluster.sim.process import start_cluster, stop_all
    from nuke_comfy_cluster.ui.panel import ClusterPanel
    from nuke_comfy_cluster.ui.qt import BINDING, QtCore, QtWidgets, exec_
    from nuke_comfy_cluster.ui.standalone import demo_jobs
    from nuke_comfy_cluster.ui.workers import wait_for_tasks

    _app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["ui_stall"])  # kept alive for the run
    speeds = [SPEEDS[i % len(SPEEDS)] for i in range(servers)]
    started = time.monotonic()
    procs = start_cluster(speeds, seconds=seconds, timeout=60.0, extra_args=["--cache-none"])
    startup_s = time.monotonic() - started
    frozen = procs[len(procs) - hung :]
    cluster = None
    panel = None
    try:
        # the simulators stand in for GPU boxes elsewhere on the network: they must not
        # compete with the panel for this machine's CPU more than remote servers would
        for proc in procs:
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, 15)
            except (AttributeError, OSError):
                pass
        for proc in frozen:
            proc.sigstop()
        configs = [
            ServerConfig(name=f"sim{i:02d}", ip="127.0.0.1", port=p.port, priority=i % 3) for i, p in enumerate(procs)
        ]
        cluster = Cluster.from_servers(configs)  # websockets, background polling, dispatcher: all running
        beat = Heartbeat(QtCore)

        # --- control: the same core work with no panel at all (plain threads): what the
        # machine and the core's own threads cost an idle Qt event loop ----------------
        control = _control_run(QtCore, exec_, beat, cluster, refreshes, demo_jobs(list(range(501, 501 + frames))))

        panel = ClusterPanel(cluster, auto_refresh=False)
        panel.resize(1100, 700)
        # the window's first polish, layout and paint are a one-time cost, reported apart
        shown = time.perf_counter()
        panel.show()
        QtWidgets.QApplication.processEvents()
        first_show_ms = (time.perf_counter() - shown) * 1000.0
        _wait(QtCore, exec_, lambda: False, 0.5)
        refresh_times: List[float] = []
        panel.refresh_finished.connect(refresh_times.append)
        batch_box: List[Any] = []
        panel.batch_watched.connect(lambda batch_id: batch_box.append(panel.batch(batch_id)))

        # --- first use: one refresh and a 3-frame batch, cold (lazy imports, first
        # connections, first layout of the jobs view): reported, not the target ----------
        beat.start()
        warm_jobs = demo_jobs([9001, 9002, 9003])
        panel.submit_in_background(lambda: cluster.submit_batch(warm_jobs, name="warm-up"), "bench-warm-up")
        panel.refresh()
        _wait(QtCore, exec_, lambda: bool(refresh_times) and bool(batch_box) and batch_box[0].finished, 60.0)
        cold = beat.stop()
        panel.jobs.clear_finished()
        del refresh_times[:], batch_box[:]

        # --- ours: refreshes on worker threads while a batch runs -------------------------
        beat.start()
        jobs = demo_jobs(list(range(1, frames + 1)))
        panel.submit_in_background(lambda: cluster.submit_batch(jobs, name="ui_stall"), "bench-submit")
        for i in range(refreshes):
            if not panel.refresh():
                _wait(QtCore, exec_, lambda: not panel.refreshing, 30.0)
                panel.refresh()
            _wait(QtCore, exec_, lambda n=i: len(refresh_times) > n, 30.0)
        _wait(QtCore, exec_, lambda: bool(batch_box) and batch_box[0].finished, 60.0)
        ours = beat.stop()
        batch = batch_box[0].snapshot() if batch_box else None
        snap = panel.snapshot
        offline = sorted(s.name for s in snap.servers if not s.status.reachable) if snap else []

        # --- baseline: the same refresh, synchronously on the GUI thread -------------------
        sync_times: List[float] = []

        def sync_refresh() -> None:
            t = time.monotonic()
            panel._apply_snapshot(cluster.pool.update_all_server_status(force=True))  # noqa: SLF001
            sync_times.append(time.monotonic() - t)

        beat.start()
        baseline_rounds = 2
        for i in range(baseline_rounds):
            QtCore.QTimer.singleShot(0, sync_refresh)
            _wait(QtCore, exec_, lambda n=i: len(sync_times) > n, 30.0)
        baseline = beat.stop()
    finally:
        if panel is not None:
            panel.shutdown()
            panel.close()
        wait_for_tasks()
        for proc in frozen:
            proc.sigcont()  # so closing the websockets to them does not wait for timeouts
        if cluster is not None:
            cluster.close()
        stop_all(procs)

    return {
        "binding": BINDING,
        "servers": servers,
        "hung": hung,
        "status_timeout_s": list(STATUS_TIMEOUT),
        "simulators_started_in_s": round(startup_s, 2),
        "first_show_ms": round(first_show_ms, 1),
        "offline_after_refresh": offline,
        "control_no_panel": control,
        "first_use": cold,
        "panel": {
            "refreshes": len(refresh_times),
            "refresh_s": _stats(refresh_times),
            **ours,
        },
        "baseline_gui_thread": {
            "refreshes": len(sync_times),
            "refresh_s": _stats(sync_times),
            **baseline,
        },
        "batch": None
        if batch is None
        else {
            "frames": len(batch.jobs),
            "done": batch.done,
            "failed": batch.failed,
            "state": batch.state,
            "makespan_s": batch.makespan,
        },
        "target_ms": TARGET_MS,
        "target_met": ours["max_stall_ms"] < TARGET_MS,
    }


def _stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": statistics.mean(values), "max": max(values)}


def _report(result: Dict[str, Any]) -> str:
    ours, base = result["panel"], result["baseline_gui_thread"]

    def row(label: str, data: Dict[str, Any]) -> str:
        refresh = data["refresh_s"]
        times = "{:.2f} s / {:.2f} s".format(refresh["mean"], refresh["max"]) if refresh["mean"] is not None else "-"
        return "{:<34} {:>10.1f} ms {:>10.1f} ms   {:>18}   {}".format(
            label, data["max_stall_ms"], data["p99_gap_ms"], times, data["refreshes"]
        )

    lines = [
        "ui_stall ({}): {} simulated servers, {} frozen with SIGSTOP; status read timeout {} s".format(
            result["binding"], result["servers"], result["hung"], result["status_timeout_s"][1]
        ),
        "{:<34} {:>13} {:>13}   {:>18}   {}".format(
            "", "longest stall", "p99 tick gap", "refresh mean/max", "refreshes"
        ),
        row("panel (refresh on QThread workers)", ours),
        row("baseline (refresh on GUI thread)", base),
        "{:<34} {:>10.1f} ms {:>10.1f} ms   (same core work, plain threads, no panel)".format(
            "control (no panel)", result["control_no_panel"]["max_stall_ms"], result["control_no_panel"]["p99_gap_ms"]
        ),
    ]
    batch = result["batch"]
    if batch:
        lines.append(
            "batch during the panel run: {}/{} frames done ({}){}".format(
                batch["done"],
                batch["frames"],
                batch["state"],
                " in {:.1f} s".format(batch["makespan_s"]) if batch["makespan_s"] else "",
            )
        )
    lines.append("offline after refresh: {}".format(", ".join(result["offline_after_refresh"]) or "none"))
    lines.append(
        "not counted above: first show of the window {:.0f} ms; first use (cold refresh + 3 frames) "
        "longest stall {:.1f} ms".format(result["first_show_ms"], result["first_use"]["max_stall_ms"])
    )
    lines.append(
        "target: longest stall < {:.0f} ms -> {}".format(
            result["target_ms"], "met" if result["target_met"] else "MISSED"
        )
    )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui_stall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--servers", type=int, default=20, help="simulated servers (default 20)")
    parser.add_argument("--hung", type=int, default=5, help="how many of them are frozen (default 5)")
    parser.add_argument("--refreshes", type=int, default=4, help="refreshes of the panel (default 4)")
    parser.add_argument("--frames", type=int, default=40, help="frames of the batch submitted meanwhile (default 40)")
    parser.add_argument("--seconds", type=float, default=0.5, help="frame time at speed 1 (default 0.5)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 <= args.hung < args.servers:
        parser.error("--hung must be between 0 and --servers - 1")
    result = measure(args.servers, args.hung, args.refreshes, args.frames, args.seconds)
    print(json.dumps(result, indent=2) if args.json else _report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
