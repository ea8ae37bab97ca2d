"""Makes the panel pictures in this folder (offscreen, no display needed)::

    python docs/images/make_screenshots.py [--binding pyside6|pyside2] [--out docs/images]

What they show: three simulated servers (speeds 1, 0.5, 0.25), one server that is
switched off (its port refuses), and a configuration entry with a mistake (the error
banner); a 12-frame batch whose running frames report their sampler steps. The panel
is grabbed at 420x360 and 600x400 (docked beside the viewer) and 1120x660, once some
frames are done and others running.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZES = ((420, 360, "panel_420x360.png"), (600, 400, "panel_600x400.png"), (1120, 660, "panel.png"))


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binding", choices=("pyside6", "pyside2"), default=None)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.binding:
        os.environ["NCC_QT_API"] = args.binding
    sys.path.insert(0, str(REPO))

    from nuke_comfy_cluster.core.api import Cluster
    from nuke_comfy_cluster.core.pool import ComfyUIServerPool
    from nuke_comfy_cluster.sim.process import start_cluster, stop_all
    from nuke_comfy_cluster.ui.panel import ClusterPanel
    from nuke_comfy_cluster.ui.qt import QtWidgets
    from nuke_comfy_cluster.ui.standalone import DEMO_SPEEDS, demo_jobs
    from nuke_comfy_cluster.ui.workers import wait_for_tasks

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["ncc-screenshots"])
    procs = start_cluster(list(DEMO_SPEEDS), seconds=4.0, extra_args=["--cache-none"])
    folder = tempfile.mkdtemp(prefix="ncc-shots-")
    entries = [
        {"name": f"sim-{speed:g}x", "ip": "127.0.0.1", "port": proc.port, "priority": i}
        for i, (speed, proc) in enumerate(zip(DEMO_SPEEDS, procs))
    ]
    entries.append({"name": "gpu-old", "ip": "127.0.0.1", "port": _closed_port(), "priority": 3})
    entries.append({"name": "gpu-new", "ip": "10.0.0.23", "port": "8188x"})  # the mistake
    config = Path(folder) / "comfyui_servers.json"
    config.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    pool = ComfyUIServerPool()
    pool.load_configuration({"NUKE_COMFYUI_SERVERS": str(config)})
    cluster = Cluster(pool)
    panel = ClusterPanel(cluster)
    code = 0
    batch = None
    try:
        panel.resize(*SIZES[-1][:2])
        panel.show()
        batch = cluster.submit_batch(demo_jobs(range(1001, 1013), sampler=True), name="shot010 comfy (12 frames)")
        panel.watch_batch(batch)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            app.processEvents()
            snap = batch.snapshot()
            stepping = any(j.state.value == "running" and j.progress_value > 0 for j in snap.jobs)
            if snap.done >= 3 and snap.running >= 2 and stepping and not panel.refreshing:
                break
            time.sleep(0.02)
        else:
            print("warning: took the pictures before the batch was under way", file=sys.stderr)
        panel.jobs.select_batch(batch.id)
        panel.jobs.tree.expand(panel.jobs.model.index(0, 0))
        for width, height, name in SIZES:
            panel.resize(width, height)
            for _ in range(20):
                app.processEvents()
                time.sleep(0.01)
            path = os.path.join(args.out, name)
            if panel.grab().save(path, "PNG"):
                print(f"saved {path}", file=sys.stderr)
            else:
                print(f"error: could not write {path}", file=sys.stderr)
                code = 1
    finally:
        if batch is not None:
            cluster.cancel(batch)
        panel.shutdown()
        panel.close()
        del panel
        wait_for_tasks()
        cluster.close()
        stop_all(procs)
    return code


if __name__ == "__main__":
    sys.exit(main())
