"""Compatibility and rejection reading against real ComfyUI 0.3.39: the pre-check must refuse
exactly what the server refuses, and keep the node id ComfyUI names."""

from __future__ import annotations

import pytest
import requests

from nuke_comfy_cluster.core.compatibility import CompatState, check_servers
from nuke_comfy_cluster.core.errors import ServerRejected
from nuke_comfy_cluster.core.protocol import workflow_error_from_rejection
from nuke_comfy_cluster.core.server import ComfyUIServer

from .helpers import configs, sampler_workflow, unique

pytestmark = pytest.mark.real


def checkpoint_workflow(ckpt: str):
    # validated (the loader feeds an output) but never run here: only POST /prompt's verdict is asked
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "compat"}},
    }


def test_precheck_agrees_with_real_comfyui(fleet):
    fast, bare = fleet["fast"], fleet["bare"]
    servers = [ComfyUIServer(c) for c in configs([fast, bare])]
    try:
        custom = sampler_workflow(unique("compat"))
        results = check_servers(servers, custom, deadline=10.0)
        assert results["fast"].state is CompatState.COMPATIBLE
        assert "bare: no node NccTestLoader" in results["bare"].reasons
        missing_ckpt = checkpoint_workflow("flux1-dev.safetensors")
        results_ckpt = check_servers(servers, missing_ckpt, deadline=10.0)
        assert results_ckpt["fast"].reasons == ("fast: no checkpoint flux1-dev.safetensors",)
        assert check_servers(servers, checkpoint_workflow("a.safetensors"), deadline=10.0)["fast"].compatible
        # the server's own verdict on what the pre-check refused: a 400 each, naming the node
        answer = requests.post(bare.url + "/prompt", json={"prompt": custom, "client_id": "t"}, timeout=10)
        assert answer.status_code == 400
        error = workflow_error_from_rejection(ServerRejected("400", status=400, body=answer.json(), server="bare"))
        assert (error.node_id, error.node_type) == ("1", "NccTestLoader")
        answer = requests.post(fast.url + "/prompt", json={"prompt": missing_ckpt, "client_id": "t"}, timeout=10)
        assert answer.status_code == 400
        error = workflow_error_from_rejection(ServerRejected("400", status=400, body=answer.json(), server="fast"))
        assert (error.node_id, error.node_type, error.error_type) == (
            "1",
            "CheckpointLoaderSimple",
            "value_not_in_list",
        )
    finally:
        for s in servers:
            s.close()
