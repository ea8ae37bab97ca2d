"""Setup-aware dispatch: the cache state read from /queue, cold starts, probe take-back.

Unit tests of :mod:`nuke_comfy_cluster.core.cache_view`, then behaviour on simulator
processes whose loaders take time when they run (ComfyUI's cache semantics decide).
"""

from __future__ import annotations

import copy
import time

import requests

from nuke_comfy_cluster.core.cache_view import CacheView, loader_items, queue_tail, setup_owner
from tests.conftest import sim_configs
from tests.test_result_integrity import TXT2IMG


def _wf(model: str) -> dict:
    wf = copy.deepcopy(TXT2IMG)
    wf["4"]["inputs"]["ckpt_name"] = model
    return wf


def _item(number: int, prompt: dict, batch: str = "") -> list:
    extra = {"ncc_batch": batch} if batch else {"client_id": "someone"}
    return [number, f"p{number}", prompt, extra, ["9"]]


def test_loader_items_are_the_loaders_literal_inputs_not_their_links():
    wf = _wf("a.safetensors")
    wf["10"] = {
        "class_type": "LoraLoader",
        "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "x.safetensors"},
    }
    items = loader_items(wf)
    assert items == {
        ("CheckpointLoaderSimple", '{"ckpt_name": "a.safetensors"}'),
        ("LoraLoader", '{"lora_name": "x.safetensors"}'),
    }
    # per-frame values (seeds, text) are not part of it: every frame of a workflow has the same owner
    other_frame = copy.deepcopy(wf)
    other_frame["3"]["inputs"]["seed"] = 99
    assert setup_owner(loader_items(other_frame)) == setup_owner(items)
    assert setup_owner(loader_items(_wf("b.safetensors"))) != setup_owner(items)
    assert loader_items({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}) == frozenset()
    assert setup_owner(frozenset()) is None
    assert (
        loader_items("not a prompt") == frozenset() and loader_items({"1": "x", "2": {"class_type": 3}}) == frozenset()
    )


def test_queue_tail_is_the_highest_pending_number_else_the_running_prompt():
    a, b = _wf("a.safetensors"), _wf("b.safetensors")
    # ComfyUI hands out its pending heap unsorted: the tail is the highest number, not the last item
    assert queue_tail([_item(1, a)], [_item(7, b), _item(3, a)])[0] == 7
    assert queue_tail([_item(1, a)], [])[0] == 1
    assert queue_tail([], []) is None
    assert queue_tail([["bad"]], [["bad"], [None, "x", {}]]) is None


def test_warm_for_follows_the_tail_and_our_later_sends():
    ours = loader_items(_wf("a.safetensors"))
    view = CacheView()
    assert view.warm_for("B1", ours, []) == (False, None)  # never seen: taken as cold
    assert view.wants_fetch(0)
    view.seen(_item(5, _wf("b.safetensors")), at=100.0, queue_length=1)
    other = setup_owner(loader_items(_wf("b.safetensors")))
    assert view.warm_for("B1", ours, []) == (False, other)  # another workflow's models will be there
    assert view.warm_for("B1", ours, [99.0]) == (False, other)  # ours sent before the fetch: ahead of it
    assert view.warm_for("B1", ours, [100.5]) == (True, setup_owner(ours))  # ours sent after: behind it all
    assert not view.wants_fetch(1) and view.wants_fetch(2)
    view.seen(_item(6, _wf("a.safetensors")), at=101.0, queue_length=2)  # the same loaders: another batch of it
    assert view.warm_for("B1", ours, []) == (True, setup_owner(ours))
    view.seen(_item(7, {"1": {"class_type": "EmptyImage", "inputs": {}}}, batch="B1"), at=102.0, queue_length=3)
    assert view.warm_for("B1", ours, []) == (True, setup_owner(ours))  # our own batch's prompt
    view.seen(_item(8, _wf("b.safetensors")), at=103.0, queue_length=0)  # idle, b's models there
    assert view.warm_for("B1", ours, [], now=103.5) == (False, other)  # maybe between two of its frames
    view.seen(_item(8, _wf("b.safetensors")), at=103.8, queue_length=0)
    assert view.warm_for("B1", ours, [], now=104.1) == (False, None)  # idle long enough: nobody's to keep
    view.seen(_item(9, _wf("b.safetensors")), at=104.2, queue_length=1)
    assert view.warm_for("B1", ours, [], now=106.0) == (False, other)  # busy again
    view.seen(None, at=107.0, queue_length=0)  # a server that never ran anything
    assert view.warm_for("B1", ours, [], now=107.0) == (False, None)
    assert view.warm_for("B1", frozenset(), []) == (None, None)  # a workflow without loaders: nothing to say
    view.fetching = True
    assert not view.wants_fetch(5)
    view.failed(5)  # a failed look is not retried until the queue changes again
    assert not view.wants_fetch(5) and view.wants_fetch(6)


def test_an_idle_server_shows_the_last_prompt_it_ran(start_sims):
    (sim,) = start_sims([1.0], seconds=0.05)
    wf = _wf("sim_sd15.safetensors")
    r = requests.post(f"http://127.0.0.1:{sim.port}/prompt", json={"prompt": wf, "client_id": "x"}, timeout=10)
    assert r.status_code == 200, r.text

    class _Server:  # the two calls CacheView.fetch makes, on a real socket
        name = "sim0"

        class connection:  # noqa: N801
            @staticmethod
            def get_json(path, params=None):
                return requests.get(f"http://127.0.0.1:{sim.port}/{path}", params=params, timeout=10).json()

        @staticmethod
        def update_queue_detail():
            body = requests.get(f"http://127.0.0.1:{sim.port}/queue", timeout=10).json()
            return body["queue_running"], body["queue_pending"]

    deadline = time.monotonic() + 20
    while requests.get(f"http://127.0.0.1:{sim.port}/queue", timeout=10).json()["queue_running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tail, at, ended = CacheView.fetch(_Server)  # nothing queued: /history?max_items=1
    assert tail is not None and tail[1] == r.json()["prompt_id"]
    assert loader_items(tail[2]) == loader_items(wf)
    assert ended is not None and at - 20 < ended <= at  # when it ended, from its status messages
    view = CacheView()
    view.seen(tail, at, 0, ended=at - 5.0)  # idle for 5 s before our first look: nobody's models
    assert view.warm_for("B1", loader_items(_wf("other.safetensors")), [], now=at) == (False, None)


def _loads(port: int) -> int:
    """Prompts that ran their checkpoint loader there (it is not in execution_cached)."""
    n = 0
    for entry in requests.get(f"http://127.0.0.1:{port}/history", timeout=10).json().values():
        messages = dict((m[0], m[1]) for m in entry["status"].get("messages", []))
        if "execution_start" in messages and "4" not in messages.get("execution_cached", {}).get("nodes", []):
            n += 1
    return n


def test_two_artists_with_different_models_keep_to_their_servers(start_sims, tmp_path):
    """Two Clusters (two Nuke sessions that never talk) submit at once, each with its own
    checkpoint: each keeps to the servers its model is loaded on instead of reloading on
    every frame. Without the cache state read from /queue they interleave (10-16 loads)."""
    from nuke_comfy_cluster.core.api import Cluster

    models = "sim_sd15.safetensors,other.safetensors"
    sims = start_sims([1.0, 1.0], seconds=0.15, extra_args=["--load-seconds", "1.0", "--models", models])
    clusters = [Cluster.from_servers(sim_configs(sims), ledger=False) for _ in range(2)]
    try:
        for c in clusters:
            c.pool.update_all_server_status(force=True)
        time.sleep(0.5)  # websockets connect
        batches = [
            c.submit_frames(_wf(m), range(1, 11), output_dir=str(tmp_path / m), sequence_name="s", base_seed=1)
            for c, m in zip(clusters, models.split(","))
        ]
        snaps = [b.wait(120) for b in batches]
    finally:
        for c in clusters:
            c.close()
    assert all(s.state == "done" for s in snaps), [s.message for s in snaps]
    total = sum(_loads(s.port) for s in sims)
    # one probe per artist and server at most (4), then each stays where its model is
    assert total <= 5, total


def test_a_cold_first_frame_on_a_slow_gpu_is_taken_back(start_sims, tmp_path):
    """Nothing known: every server gets a probe frame. The slow GPU's would load its model for
    20 s while the two fast ones finish the whole batch in about 2 s: once that is clear it is
    interrupted (only our prompt runs there) and the frame is rendered elsewhere, with no attempt
    spent and the server not blamed."""
    from nuke_comfy_cluster.core.api import Cluster

    sims = start_sims([1.0, 1.0, 0.05], seconds=0.1, extra_args=["--load-seconds", "1.0"])
    with Cluster.from_servers(sim_configs(sims), ledger=False) as cluster:
        cluster.pool.update_all_server_status(force=True)
        time.sleep(0.5)  # websockets connect
        batch = cluster.submit_frames(TXT2IMG, range(1, 13), output_dir=str(tmp_path), sequence_name="s", base_seed=1)
        snap = batch.wait(120)
    assert snap.state == "done", snap.message
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"s.{f:04d}.png" for f in range(1, 13)]
    taken = [j for j in snap.jobs if any("taken back from sim2" in h for h in j.history)]
    assert len(taken) == 1, [j.history for j in snap.jobs]
    assert taken[0].server != "sim2" and taken[0].attempts == 1 and not taken[0].failed_servers
    slow = requests.get(f"http://127.0.0.1:{sims[2].port}/history", timeout=10).json()
    statuses = [dict((m[0], m[1]) for m in e["status"]["messages"]) for e in slow.values()]
    assert any("execution_interrupted" in m for m in statuses), statuses
    assert not any("execution_success" in m for m in statuses)  # it never finished a frame there


# --------------------------------------------------------------------------- the scheduler's side


def _ld(name, *, warm=False, owner=None, queue=0, queued=0, running_since=None, at=0.0):
    from nuke_comfy_cluster.core.scheduler import ServerLoad

    return ServerLoad(
        name=name,
        priority=0,
        queue_remaining=queue,
        observed_at=at,
        ours_queued=queued,
        ours_running_since=running_since,
        warm=warm,
        cache_owner=owner,
    )


def _sched(clock, **kw):
    import random

    from nuke_comfy_cluster.core.scheduler import Scheduler

    return Scheduler(lambda: clock[0], rng=random.Random(3), **kw)


def test_blind_probes_are_staggered_when_the_workflow_loads_models():
    """Two artists starting at the same instant would each probe every server, and every
    server would load both models. With the cache state told, one probe goes now (to a server
    drawn at random) and each other one at its own moment within the spread."""
    clock = [0.0]
    s = _sched(clock, spread=0.5)
    first = s.plan([_ld("a"), _ld("b"), _ld("c")], 10)
    assert len(first) == 1
    assert s.next_wakeup is not None and 0.15 <= s.next_wakeup <= 0.5  # at least a third of the spread
    sent = set(first)
    for _ in range(10):
        clock[0] = s.next_wakeup
        loads = [_ld(n, queued=1 if n in sent else 0, queue=1 if n in sent else 0, at=clock[0]) for n in "abc"]
        got = s.plan(loads, 10 - len(sent))
        assert len(got) == 1 and not sent & set(got)
        sent |= set(got)
        if sent == {"a", "b", "c"}:
            break
    assert sent == {"a", "b", "c"}
    # a workflow without loaders (nothing to say about the cache): every idle server at once
    plain = _sched([0.0])
    assert sorted(plain.plan([_ld("a", warm=None), _ld("b", warm=None), _ld("c", warm=None)], 10)) == ["a", "b", "c"]
    # the random first server: over seeds, more than one server goes first
    import random

    from nuke_comfy_cluster.core.scheduler import Scheduler

    firsts = {Scheduler(lambda: 0.0, rng=random.Random(k)).plan([_ld("a"), _ld("b")], 4)[0] for k in range(12)}
    assert firsts == {"a", "b"}


def test_no_blind_probe_over_another_workflows_models_while_ours_is_out():
    clock = [0.0]
    s = _sched(clock, spread=0.5)
    (first,) = s.plan([_ld("a"), _ld("b")], 10)
    other = "b" if first == "a" else "a"
    clock[0] = 5.0  # long after every draw
    busy = [_ld(first, queued=1, queue=1, at=5.0), _ld(other, owner="theirs", at=5.0)]
    assert s.plan(busy, 9) == []  # another workflow's models there, between two of its frames
    free = [_ld(first, queued=1, queue=1, at=5.0), _ld(other, owner=None, at=5.0)]
    assert s.plan(free, 9) == [other]  # nobody's models to keep: probe it


def test_a_queued_cold_probe_behind_another_workflow_is_taken_back_once_a_server_is_measured():
    """Our first frame waits behind another artist's work on a server we know nothing of,
    while a measured server is ours: it is asked back before it starts (it would load our
    model over theirs), once."""
    clock = [0.0]
    s = _sched(clock, spread=0.0, withdraw_probes=True)
    assert sorted(s.plan([_ld("a"), _ld("b")], 10)) == ["a", "b"]  # spread 0: no stagger
    s.job_started("a", 0.0, cold=True)
    clock[0] = 3.0
    s.job_finished("a", 0.0, 3.0, setup_s=2.0, cold=True)  # a: 2 s load + 1 s frame
    assert s.watching  # b's cold probe is still out
    loads = [_ld("a", warm=True, at=3.0), _ld("b", queue=2, queued=1, at=3.0)]  # theirs runs on b, ours waits
    s.plan(loads, 8)
    assert s.withdrawals == ["b"]
    s.job_withdrawn("b")
    s.plan([_ld("a", warm=True, queued=1, queue=1, at=3.0), _ld("b", queue=1, at=3.0)], 8)
    assert s.withdrawals == []
    # alone on the cluster (nobody else's work ahead of it) a queued probe stays
    t = [0.0]
    alone = _sched(t, spread=0.0, withdraw_probes=True)
    alone.plan([_ld("a"), _ld("b")], 10)
    alone.job_started("a", 0.0, cold=True)
    t[0] = 3.0
    alone.job_finished("a", 0.0, 3.0, setup_s=2.0, cold=True)
    alone.plan([_ld("a", warm=True, at=3.0), _ld("b", queue=1, queued=1, at=3.0)], 8)
    assert alone.withdrawals == []


def test_the_summary_says_where_the_models_were_loaded_and_how_long_it_took(start_sims, tmp_path):
    """The CLI summary (and BatchSnapshot.loads for the panel and the node) names the servers
    that loaded the workflow's models for this batch, how often and for how long."""
    from nuke_comfy_cluster.cli.progress import summary_table
    from nuke_comfy_cluster.core.api import Cluster

    (sim,) = start_sims([1.0], seconds=0.05, extra_args=["--load-seconds", "0.5"])
    with Cluster.from_servers(sim_configs([sim]), ledger=False) as cluster:
        snap = cluster.submit_frames(TXT2IMG, range(1, 4), output_dir=str(tmp_path), sequence_name="s").wait(60)
    assert snap.state == "done", snap.message
    ((server, count, seconds),) = snap.loads
    assert server == "sim0" and count == 1 and 0.4 < seconds < 3.0, snap.loads
    table = summary_table(snap).splitlines()
    assert table[0].split() == ["SERVER", "FRAMES", "MEAN", "FRAME", "TIME", "MODEL", "LOADS"]
    assert table[1].split()[:2] == ["sim0", "3"] and table[1].endswith(f"1 ({seconds:.1f} s)"), table


def test_a_first_frame_with_a_trivial_setup_is_never_taken_back():
    """An unchanging cheap node (an EmptyImage) counts as setup too; with a setup that small a
    first frame is just a frame, and taking it back would only send it twice."""
    clock = [0.0]
    s = _sched(clock, spread=0.0, withdraw_probes=True)
    s.plan([_ld("a"), _ld("b")], 4)
    s.job_started("a", 0.0, cold=True)
    s.job_started("b", 0.0, cold=True)
    clock[0] = 1.0
    s.job_finished("a", 0.0, 1.0, setup_s=0.01, cold=True)  # 1 % of the frame
    clock[0] = 50.0  # b's first frame has run 50 frame times: slow, but no load to blame
    s.plan([_ld("a", warm=True, at=50.0), _ld("b", queue=1, running_since=0.0, at=50.0)], 0)
    assert s.withdrawals == []
    # the same with a real load (half a frame) is taken back
    t = [0.0]
    s2 = _sched(t, spread=0.0, withdraw_probes=True)
    s2.plan([_ld("a"), _ld("b")], 4)
    s2.job_started("a", 0.0, cold=True)
    s2.job_started("b", 0.0, cold=True)
    t[0] = 1.5
    s2.job_finished("a", 0.0, 1.5, setup_s=0.5, cold=True)
    t[0] = 50.0
    s2.plan([_ld("a", warm=True, at=50.0), _ld("b", queue=1, running_since=0.0, at=50.0)], 0)
    assert s2.withdrawals == ["b"]
