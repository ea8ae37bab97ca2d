"""Setup-aware scheduling against real ComfyUI 0.3.39: its own node cache decides what loads.

The loader stand-in (custom_nodes/ncc_test_nodes.py) sleeps each time ComfyUI actually
runs it, i.e. when the previous prompt on that server had another model; its log says
which prompts loaded. Like a real checkpoint load, it cannot be interrupted mid-load.
"""

from __future__ import annotations

import time

import pytest

from nuke_comfy_cluster.core.api import Cluster

from .helpers import assert_sequence, configs, sampler_workflow, tag_colour, unique

pytestmark = [pytest.mark.real, pytest.mark.integration, pytest.mark.timeout(600)]


def test_two_artists_with_different_models_keep_to_their_servers(fleet, tmp_path):
    """Two Nuke sessions that never talk submit at once, each with its own model, on two
    servers of the same speed: the best plan loads each model once on its own server. Each
    artist keeps to the server its model is loaded on; without the cache state read from
    /queue both interleave on both servers and most frames reload."""
    servers = [fleet["fast"], fleet["mid"]]
    models = [unique("artA"), unique("artB")]
    frames = range(1, 9)
    clusters = [Cluster.from_servers(configs(servers), ledger=False) for _ in models]
    try:
        for cluster in clusters:
            cluster.pool.update_all_server_status(force=True)
        time.sleep(0.5)  # websockets connect
        batches = [
            cluster.submit_frames(
                sampler_workflow(model, 0.3, 1.5), frames, output_dir=str(tmp_path / model), sequence_name="s"
            )
            for cluster, model in zip(clusters, models)
        ]
        snaps = [batch.wait(300) for batch in batches]
    finally:
        for cluster in clusters:
            cluster.close()
    for snap, model in zip(snaps, models):
        assert snap.state == "done", snap.message
        assert_sequence(str(tmp_path / model), "s", frames, lambda f: tag_colour(f"{f:04d}"))
    loads = {
        s.name: [r["model"] for r in s.node_runs() if r["kind"] == "load" and r["model"] in models] for s in servers
    }
    total = sum(len(v) for v in loads.values())
    print(f"\n[real] two artists, 8 frames each on 2 servers: loads {loads}; per server {[s.servers for s in snaps]}")
    # each artist's probe may load on both servers (4); after that each keeps to its own
    assert total <= 5, loads
