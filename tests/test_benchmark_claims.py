"""The figures README.md and docs/LOAD_BALANCING.md quote, re-measured in CI (ratios, not times).

Each benchmark runs as the guides show it, in a subprocess, with ``--json``; the
rows the guides quote are then checked against what the guides claim. Times depend
on the machine, ratios to OPT (and to the baselines run in the same invocation) do
not, so only ratios are asserted. About a minute in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def run_json(*argv: str, timeout: float) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run(
        [sys.executable, "-m", *argv, "--json"], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(
            f"{' '.join(argv)} printed no JSON (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def rows(doc: Dict[str, Any], name: str, frames: Any = None) -> List[Dict[str, Any]]:
    found = [r for r in doc["scenarios"] if r["name"] == name and (frames is None or r["frames"] == frames)]
    assert found, f"no row {name!r} frames={frames} in {[(r['name'], r['frames']) for r in doc['scenarios']]}"
    return found


@pytest.mark.timeout(180)
def test_scheduler_benchmark_rows():
    """LOAD_BALANCING.md, "Virtual time": 200-frame batches within about 1 % of OPT on every
    server set, 24 frames on two servers within 3 %; everything at once 1.5 x OPT on two GPUs
    and 2.5-2.9 x on four and eight; small jobs beside a 200-frame job near their fair share,
    where everything at once makes them wait 4-8 x. (Virtual time: the figures do not depend
    on the machine; ``--quick`` runs 5 seeds instead of 20, hence the small margins.)"""
    single = run_json("benchmarks.scheduler", "--quick", "--only", "push, 1 client", timeout=150)
    for row in rows(single, "push, 1 client", 200):
        assert row["mean_ratio_opt"] <= 1.015, row
    (two,) = [r for r in rows(single, "push, 1 client", 24) if r["servers"].startswith("2 GPUs")]
    assert two["mean_ratio_opt"] <= 1.03, two
    for row in rows(single, "push, 1 client"):
        at_once = min(row["baselines"][k]["mean_ratio_opt"] for k in ("round_robin", "least_queue"))
        gpus = int(row["servers"].split()[0])
        assert at_once >= (1.45 if gpus == 2 else 2.4), row
        assert row["mean_ratio_opt"] * 1.3 < at_once, row

    mixed = run_json("benchmarks.scheduler", "--quick", "--only", "mixed", timeout=150)
    for row in rows(mixed, "push, mixed 200+3x24"):
        assert row["worst_client_fair_share"] <= 1.10, row
        for k in ("round_robin", "least_queue"):
            assert row["baselines"][k]["worst_client_fair_share"] >= 4.0, row


@pytest.mark.timeout(300)
def test_e2e_benchmark_rows():
    """README.md, "How the work is spread": on simulators of speeds 1 / 0.5 / 0.25, 24 frames
    in 1.01 x OPT, the fastest server alone 1.9 x, everything at once 2.3 x. CI machines are
    loaded, so ours is held to the benchmark's target (1.10 x OPT). Round robin and the
    fastest server alone cannot beat their plan (8 frames on the 0.25 server: >= 2.29 x; 24
    frames on the fastest: >= 1.71 x). Least queue polls every server before each submit, so
    on a loaded machine the fast server drains while it submits and it does better than 2.3 x
    (1.77 x seen): it is only held to be clearly worse than ours."""
    doc = run_json("benchmarks.e2e", "--quick", timeout=280)
    (row,) = doc["scenarios"]
    assert row["frames"] == 24 and row["speeds"] == [1.0, 0.5, 0.25], row
    ours = row["ours"]["ratio_opt"]
    base = {k: v["ratio_opt"] for k, v in row["baselines"].items()}
    assert ours <= 1.10, row
    assert base["fastest_server_sequential"] >= 1.7, base
    assert base["round_robin_all_at_once"] >= 2.2, base
    assert base["least_queue_all_at_once"] >= 1.5, base
    assert ours * 1.3 < min(base.values()), (ours, base)
    per = row["ours"]["frames_per_server"]
    assert per.get("sim0", 0) > per.get("sim1", 0) > per.get("sim2", 0), per  # the fast server takes the most
    assert row["ours"]["get_queue_in_dispatch"] == 0, row["ours"]
