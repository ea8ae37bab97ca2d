"""Cancel from the node's button and from Nuke's progress bar reaches the servers."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Dict, List, Set

import pytest

from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.sim.process import SimProcess, start_cluster, stop_all

from .conftest import WORKFLOWS, server_dicts
from .fake_nuke import FakeNuke
from .test_submit import make_node, reads, submit, wait

pytestmark = pytest.mark.integration

#: long enough that nothing finishes by itself while the test cancels
SLOW_SECONDS = 4.0


@pytest.fixture(scope="module")
def slow_sims():
    procs = start_cluster([1.0, 1.0], seconds=SLOW_SECONDS)
    for p, name in zip(procs, ("slow-a", "slow-b")):
        p.name = name
    yield procs
    stop_all(procs)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def ours_on_server(sim: SimProcess, prompt_ids: Set[str]) -> List[str]:
    queue = _get(sim.url + "/queue")
    return [item[1] for item in queue["queue_running"] + queue["queue_pending"] if item[1] in prompt_ids]


def history(sim: SimProcess, prompt_id: str) -> Dict[str, Any]:
    return _get(sim.url + "/history/" + prompt_id).get(prompt_id, {})


def _start_and_wait_until_running(fake: FakeNuke, configure, slow_sims, tmp_path) -> Any:
    configure(server_dicts(slow_sims))
    node = make_node(fake, WORKFLOWS / "fast.json", N.MODE_RANGE, tmp_path / "out", **{N.K_FROM_INPUT: False})
    fake.user_set(node, N.K_FIRST, 1)
    fake.user_set(node, N.K_LAST, 6)
    run = submit(fake, node)

    def running() -> bool:
        batch = run.batch
        return batch is not None and batch.snapshot().count(JobState.RUNNING) >= 1

    fake.pump(running, 20, "a frame running on a server")
    return node, run


def _assert_cancelled_on_servers(run: Any, slow_sims: List[SimProcess], pressed: float) -> None:
    snapshot = run.final
    assert snapshot.state == "cancelled"
    assert snapshot.done == 0
    assert time.monotonic() - pressed < SLOW_SECONDS  # well before the frames could have finished
    sent = {j.prompt_id: j.server for j in snapshot.jobs if j.prompt_id}
    assert sent, "no prompt had reached a server: the test proves nothing"
    by_name = {s.name: s for s in slow_sims}
    deadline = time.monotonic() + 10
    while any(ours_on_server(s, set(sent)) for s in slow_sims):
        assert time.monotonic() < deadline, "our prompts are still queued or running on the servers"
        time.sleep(0.1)
    for prompt_id, server in sent.items():
        entry = history(by_name[server], prompt_id)
        # deleted while pending (no history) or interrupted while running: never rendered
        if entry:
            events = [m[0] for m in entry["status"]["messages"]]
            assert "execution_interrupted" in events and "execution_success" not in events


def test_the_cancel_button_reaches_the_servers(fake: FakeNuke, configure, slow_sims, tmp_path):
    node, run = _start_and_wait_until_running(fake, configure, slow_sims, tmp_path)
    pressed = time.monotonic()
    fake.press(node, N.K_CANCEL)
    assert node[N.K_STATUS].value() == "Cancelling..."
    wait(fake, run, timeout=15)

    _assert_cancelled_on_servers(run, slow_sims, pressed)
    assert node[N.K_STATUS].value().startswith("Cancelled: 0 of 6 frames done, 6 cancelled")
    assert fake.messages == []  # cancelling is not a failure: no message box
    assert reads(fake) == []
    assert fake.tasks[-1].closed


def test_the_progress_bar_cancel_reaches_the_servers(fake: FakeNuke, configure, slow_sims, tmp_path):
    node, run = _start_and_wait_until_running(fake, configure, slow_sims, tmp_path)
    pressed = time.monotonic()
    fake.tasks[-1].cancel()  # the artist presses cancel on Nuke's progress bar
    wait(fake, run, timeout=15)

    _assert_cancelled_on_servers(run, slow_sims, pressed)
    assert node[N.K_STATUS].value().startswith("Cancelled")
