"""The cluster panel in its own window: ``python -m nuke_comfy_cluster panel [--demo] [--screenshot PNG]``.

``--demo`` starts three simulator processes of mixed speed on free loopback ports,
points a cluster at them and submits a short animation so the jobs view has
something to show; everything it started is stopped on exit. ``--screenshot``
waits for the first refresh (and, with ``--demo``, for frames to be under way),
saves the window as a PNG and exits 0; without a display it renders offscreen.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, List, Optional, Sequence

log = logging.getLogger(__name__)

DEMO_SPEEDS = (1.0, 0.5, 0.25)
#: a tiny API-format workflow the simulator runs; the colour is varied per frame so no
#: frame is answered from the server's cache
DEMO_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "panel_demo/shot010_####"}},
}

#: the same with a sampler: ComfyUI reports its steps (``progress`` messages), the jobs view
#: shows them ("step 7/12"); the seed is varied per frame
DEMO_SAMPLER_WORKFLOW = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim_sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["1", 0],
            "seed": 0,
            "steps": 12,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["2", 0],
            "negative": ["3", 0],
            "latent_image": ["4", 0],
            "denoise": 1.0,
        },
    },
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "panel_demo/shot010_####"}},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nuke_comfy_cluster panel",
        description="Open the ComfyUI cluster panel in its own window.",
    )
    parser.add_argument(
        "--demo", action="store_true", help="start three simulated servers (speeds 1, 0.5, 0.25) and use them"
    )
    parser.add_argument("--screenshot", metavar="PNG", help="save the window as PNG after the first refresh, then exit")
    parser.add_argument("--frames", type=int, default=12, help="frames of the demo animation (default 12; 0: none)")
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="demo frame time on the fastest server (default 1.5)"
    )
    parser.add_argument("--size", default="1120x660", help="window size WIDTHxHEIGHT (default 1120x660)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="--screenshot gives up waiting after this (default 60 s)"
    )
    return parser


def _needs_offscreen() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return False
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def demo_jobs(frames: Sequence[int], sampler: bool = False) -> List[Any]:
    """One job per frame, each a different prompt (the simulator caches identical ones):
    its own colour, or with ``sampler`` its own seed and sampler steps to report."""
    from ..core.jobs import Job
    from ..core.templating import frame_prompt

    jobs = []
    for i, frame in enumerate(frames):
        if sampler:
            prompt = frame_prompt(DEMO_SAMPLER_WORKFLOW, frame)
            prompt["5"]["inputs"]["seed"] = frame
        else:
            prompt = frame_prompt(DEMO_WORKFLOW, frame)
            prompt["1"]["inputs"]["color"] = (0x204060 + frame * 9973) % 0xFFFFFF
        jobs.append(Job(prompt, index=i, label=f"frame {frame}", frame=frame))
    return jobs


def start_demo_cluster(seconds: float) -> Any:
    """(cluster, simulator processes): three simulators of mixed speed and a cluster on them."""
    from ..core.api import Cluster
    from ..core.config import ConfigLoad, ServerConfig
    from ..sim.process import start_cluster

    procs = start_cluster(list(DEMO_SPEEDS), seconds=seconds, extra_args=["--cache-none"])
    configs = [
        ServerConfig(name=f"sim-{speed:g}x", ip="127.0.0.1", port=proc.port, priority=i)
        for i, (speed, proc) in enumerate(zip(DEMO_SPEEDS, procs))
    ]
    cluster = Cluster.from_servers(configs)
    notice = "Demo: {} simulated ComfyUI servers on 127.0.0.1 (speeds {})".format(
        len(configs), ", ".join(f"{s:g}x" for s in DEMO_SPEEDS)
    )
    cluster.pool.set_servers(configs, ConfigLoad(tuple(configs), "inline", notice))
    return cluster, procs


def _make_window(cluster: Any) -> Any:
    from .panel import ClusterPanel
    from .qt import QAction, QtGui, QtWidgets

    class ClusterWindow(QtWidgets.QMainWindow):
        """A main window around one panel; closing it closes the panel (and its threads)."""

        def __init__(self) -> None:
            super().__init__()
            self.setWindowTitle("ComfyUI Cluster")
            self.panel = ClusterPanel(cluster, self)
            self.setCentralWidget(self.panel)
            menu = self.menuBar().addMenu("&Cluster")
            for text, slot, shortcut in (
                ("&Refresh", self.panel.refresh, "F5"),
                ("&Configure servers…", self.panel.open_config_editor, "Ctrl+,"),
                (None, None, None),
                ("&Quit", self.close, "Ctrl+Q"),
            ):
                if text is None:
                    menu.addSeparator()
                    continue
                action = QAction(text, self)
                action.setShortcut(QtGui.QKeySequence(shortcut))
                action.triggered.connect(slot)
                menu.addAction(action)

        def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
            if self.panel.closed or self.panel.close():
                event.accept()
            else:
                event.ignore()

    return ClusterWindow()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the standalone panel; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["panel"]:
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size expects WIDTHxHEIGHT, got {args.size!r}", file=sys.stderr)
        return 2
    if args.screenshot and _needs_offscreen():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif _needs_offscreen():
        # Qt would abort the process (exit 134) trying to open a window nobody can see
        print("error: no display: use --screenshot PNG or set DISPLAY", file=sys.stderr)
        return 2

    try:
        from .qt import QtCore, QtWidgets, apply_binding_fixes, exec_
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .workers import wait_for_tasks

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0] if sys.argv else "ncc-panel"])
    apply_binding_fixes()
    procs: List[Any] = []
    cluster = None
    window = None
    result = {"code": 0}
    try:
        if args.demo:
            print("starting 3 simulated ComfyUI servers on 127.0.0.1 …", file=sys.stderr)
            cluster, procs = start_demo_cluster(args.seconds)
        else:
            from ..core.api import default_cluster

            cluster = default_cluster()
        window = _make_window(cluster)
        window.resize(width, height)
        window.show()
        panel = window.panel

        if args.demo and args.frames > 0:
            frames = list(range(1001, 1001 + args.frames))
            demo = cluster

            def submit() -> Any:
                # blocks on the first status poll when needed: a worker thread, never the GUI
                return demo.submit_batch(demo_jobs(frames, sampler=True), name=f"shot010 comfy ({len(frames)} frames)")

            panel.submit_in_background(submit, "demo-submit")

        if args.screenshot:
            _schedule_screenshot(app, window, args, result, QtCore)
        exec_(app)
    finally:
        if window is not None:
            window.panel.shutdown()
            window.close()
            window.deleteLater()
        wait_for_tasks()
        if cluster is not None:
            cluster.close()
        if procs:
            from ..sim.process import stop_all

            stop_all(procs)
    return result["code"]


def _schedule_screenshot(app: Any, window: Any, args: Any, result: dict, QtCore: Any) -> None:  # noqa: N803
    """Poll (GUI thread, no I/O) until the picture is worth taking, then save it and quit."""
    panel = window.panel
    state = {"refreshed": False, "deadline": time.monotonic() + args.timeout, "done": False}
    panel.refresh_finished.connect(lambda _s: state.__setitem__("refreshed", True))
    want_jobs = args.demo and args.frames > 0

    def ready() -> bool:
        if not state["refreshed"]:
            return False
        if not want_jobs:
            return True
        batches = panel.jobs.model.batches()
        if not batches:
            return False
        snap = batches[0]
        # a picture with work in flight: some frames done, others running on several servers
        return snap.finished or (snap.done >= max(1, len(snap.jobs) // 3) and snap.running >= 1)

    def take() -> None:
        if state["done"]:
            return
        timed_out = time.monotonic() > state["deadline"]
        if not (ready() or timed_out):
            return
        state["done"] = True
        timer.stop()
        if timed_out:
            print(f"warning: took the screenshot after {args.timeout:.0f} s without a full refresh", file=sys.stderr)
        batches = panel.jobs.model.batches()
        if batches:
            panel.jobs.select_batch(batches[0].id)
            panel.jobs.tree.expand(panel.jobs.model.index(0, 0))
        app.processEvents()
        path = os.path.abspath(args.screenshot)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if window.grab().save(path, "PNG"):
            print(f"saved {path}", file=sys.stderr)
        else:
            print(f"error: could not write {path}", file=sys.stderr)
            result["code"] = 1
        window.close()
        app.quit()

    timer = QtCore.QTimer(window)
    timer.setInterval(100)
    timer.timeout.connect(take)
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
