"""The standalone window: ``--demo --screenshot`` works headless and stops everything it started."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.qt, pytest.mark.integration]


def test_demo_screenshot_headless(tmp_path, qapp):
    from nuke_comfy_cluster.ui.qt import QtGui

    png = tmp_path / "shots" / "panel.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nuke_comfy_cluster.ui.standalone",
            "--demo",
            "--frames",
            "6",
            "--seconds",
            "0.6",
            "--screenshot",
            str(png),
            "--timeout",
            "40",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "saved " + str(png) in proc.stderr
    assert "took the screenshot after" not in proc.stderr, "the first refresh should come well within the timeout"
    for bad in ("Traceback", "QThread: Destroyed", "still running"):
        assert bad not in proc.stderr, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QtGui.QImage(str(png))
    assert image.width() == 1120 and image.height() == 660


def test_bad_size_is_a_usage_error(qapp):
    from nuke_comfy_cluster.ui.standalone import main

    assert main(["panel", "--size", "big"]) == 2
