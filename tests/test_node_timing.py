"""Setup vs per-frame split from two frames' prompts and the executing marks."""

from __future__ import annotations

from nuke_comfy_cluster.core.node_timing import split_times, static_nodes
from nuke_comfy_cluster.core.templating import frame_prompt

WF = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": "%d", "model": ["1", 0], "positive": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
}


def test_static_nodes_are_the_ones_no_frame_changes_and_not_downstream_of_one():
    prompts = [frame_prompt(WF, 1), frame_prompt(WF, 2)]
    assert static_nodes(prompts) == {"1", "2"}  # the sampler varies; the save is downstream of it


def test_a_single_prompt_takes_loaders_as_setup():
    assert static_nodes([WF]) == {"1"}


def test_split_times_cold_and_warm():
    static = frozenset({"1", "2"})
    marks = [("1", 10.0), ("2", 14.0), ("3", 14.5), ("4", 15.5)]
    assert split_times(marks, 15.6, static, []) == (4.5, True)
    warm = [("3", 20.0), ("4", 21.0)]
    assert split_times(warm, 21.1, static, ["1", "2"]) == (0.0, False)
    assert split_times([], 1.0, frozenset(), []) == (None, None)


def test_the_dispatcher_learns_the_model_load_apart_from_the_frame(start_sims, tmp_path):
    """Against a simulator whose loader takes 0.6 s when it runs (ComfyUI's cache decides):
    the first frame on the server is cold and its load is timed from the executing events."""
    from nuke_comfy_cluster.core.api import Cluster
    from tests.conftest import sim_configs
    from tests.test_result_integrity import TXT2IMG

    (sim,) = start_sims([1.0], seconds=0.2, extra_args=["--load-seconds", "0.6"])
    with Cluster.from_servers(sim_configs([sim])) as cluster:
        batch = cluster.submit_frames(TXT2IMG, range(1, 5), output_dir=str(tmp_path), sequence_name="m", base_seed=1)
        snap = batch.wait(60)
        sched = cluster.dispatcher._learned  # noqa: SLF001 - what the next batch starts from
    assert snap.state == "done", snap.message
    assert set(batch.loads) == {"sim0"} and 0.4 < batch.loads["sim0"] < 3.0, batch.loads
    learned = next(iter(sched.values()))
    frame = learned.expected_frame_time("sim0")
    assert frame is not None and frame < 0.6, frame  # the per-frame estimate is clean of the load


def test_learned_costs_carry_over_to_the_next_session(start_sims, tmp_path):
    """A second Cluster (another Nuke session) starts the same workflow warm: its scheduler
    knows every server's frame and load time before any of its frames ran (no probes)."""
    from nuke_comfy_cluster.core.api import Cluster
    from tests.conftest import sim_configs
    from tests.test_result_integrity import TXT2IMG

    procs = start_sims([1.0, 0.5], seconds=0.2, extra_args=["--load-seconds", "0.4"])
    with Cluster.from_servers(sim_configs(procs)) as first:
        snap = first.submit_frames(TXT2IMG, range(1, 21), output_dir=str(tmp_path / "a"), sequence_name="a", base_seed=1).wait(60)
    assert snap.state == "done"
    with Cluster.from_servers(sim_configs(procs)) as second:
        batch = second.submit_frames(TXT2IMG, range(1, 3), output_dir=str(tmp_path / "b"), sequence_name="b", base_seed=2)
        import time

        deadline = time.monotonic() + 5
        while batch.id not in second.dispatcher._schedulers and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.01)
        sched = second.dispatcher._schedulers[batch.id]  # noqa: SLF001
        known = {n: sched.expected_frame_time(n) for n in ("sim0", "sim1")}
        batch.wait(60)
    # every server that rendered a warm frame (its second) in the first session is known now
    warm = [name for name, n in snap.servers.items() if n >= 2]
    assert warm and all(known[name] is not None for name in warm), (known, snap.servers)
    if all(known.values()):
        assert known["sim1"] > known["sim0"]  # the slower server is known to be slower
