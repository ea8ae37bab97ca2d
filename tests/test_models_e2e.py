"""benchmarks.models_e2e and the --real plumbing: idle time by cause, timelines, a short run on simulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.models_e2e import blocks, loads
from benchmarks.real_servers import split_idle
from tests.conftest import REPO


def test_idle_after_the_next_prompt_was_sent_is_the_servers_own_pause():
    spans = [
        (0.0, 1.0, 0.0),  # sent at 0, ran 0-1
        (2.0, 3.0, 0.5),  # sent before the first ended: the 1 s gap is the server's (ComfyUI's gc)
        (4.0, 5.0, 3.6),  # sent 0.6 s after the second ended: 0.6 s ours, 0.4 s the server's
        (5.0, 6.0, None),  # back to back, send time unknown: no idle
    ]
    assert split_idle(spans) == {"server_pause_s": 1.4, "longest_pause_s": 1.0, "client_idle_s": 0.6}
    assert split_idle([]) == {"server_pause_s": 0.0, "longest_pause_s": 0.0, "client_idle_s": 0.0}


def test_timeline_blocks_and_loads_per_server():
    # [artist, start, end, loaded]: A twice (one load), then B with a load and a reload
    runs = {"fast": [[0, 0, 5, True], [0, 5, 6, False], [1, 6, 11, True], [1, 11, 16, True]], "slow": []}
    assert blocks(runs["fast"]) == "A2 B2*2 (ends 16.0 s)"
    assert blocks(runs["slow"]) == "-"
    assert loads(runs, 0) == {"fast": 1} and loads(runs, 1) == {"fast": 2}


def _run(*args: str, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.models_e2e", *args],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_short_run_on_simulators_reports_every_frame_load_and_plan():
    # shrunk times: this checks what the benchmark reports, not the scheduler's targets
    done = _run("--json", "--load-seconds", "0.4", "--seconds", "0.1", "--frames", "3", "--solo-frames", "4")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    r = json.loads(done.stdout)
    assert r["times_as_in_issue"] is False and r["load_s"] == 0.4
    two, one = r["two_artists"], r["one_artist"]
    # exhaustive plan for 2 x 3 frames of 0.1 s after a 0.4 s load on speeds 1 / 0.5 / 0.25
    assert two["plan_search"] == "exhaustive search"
    assert two["plan_max_s"] == pytest.approx(1.2) and two["plan_mean_s"] == pytest.approx(0.95)
    for i, artist in enumerate(two["artists"]):
        assert sum(artist["frames_per_server"].values()) == 3
        ran = [r for runs in two["timeline"].values() for r in runs if r[0] == i]
        assert len(ran) == 3  # every frame read back from the servers' /history, once
        # a server that rendered an artist's frames loaded that artist's model at least once
        assert set(artist["loads_per_server"]) == set(artist["frames_per_server"])
    assert sum(one["frames_per_server"].values()) == 4
    assert one["opt_s"] == pytest.approx(0.8)  # all 4 on the fastest: 0.4 + 4 x 0.1 (the next one's load costs 0.8)
    assert two["pass"] == (two["ratio_plan_max"] <= 1.25 and two["ratio_plan_mean"] <= 1.25)
    assert (done.returncode == 0) == (two["pass"] and one["pass"])


def test_real_mode_without_a_comfyui_source_says_so_and_exits_2():
    done = _run("--real", env_extra={"COMFYUI_SRC": "/nonexistent/ComfyUI.tar.gz"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "COMFYUI_SRC=/nonexistent/ComfyUI.tar.gz does not exist" in done.stderr
