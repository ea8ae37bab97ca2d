"""The old single-server API (GET/POST/check_connection) served by the pool."""

from __future__ import annotations

import pytest

from nuke_comfy_cluster.core import compat
from nuke_comfy_cluster.core.pool import ComfyUIServerPool
from tests.conftest import sim_configs

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(start_sims):
    a, b = start_sims([1.0, 1.0], seconds=0.2)
    b.kill()
    pool = ComfyUIServerPool(sim_configs([a, b]), use_websocket=False)
    compat.set_default_pool(pool)
    yield pool
    compat.set_default_pool(None)
    pool.close()


def test_get_post_check_connection_use_the_cluster(pool):
    assert compat.GET("prompt") == {"exec_info": {"queue_remaining": 0}}
    assert compat.check_connection() is True
    assert compat.check_connection("sim1") is False  # named, and down
    answer = compat.POST("prompt", {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}, "client_id": "x"})
    assert answer is None  # rejected: logged, not raised, as the old API did
    assert compat.GET("prompt", server="sim1") is None


def test_default_pool_reads_the_environment(monkeypatch, start_sims):
    (a,) = start_sims([1.0], seconds=0.2)
    monkeypatch.setenv("NUKE_COMFYUI_IP", "127.0.0.1")
    monkeypatch.setenv("NUKE_COMFYUI_PORT", str(a.port))
    compat.set_default_pool(None)
    try:
        assert compat.check_connection() is True
        assert compat.default_pool().config_load.source == "single"
    finally:
        from nuke_comfy_cluster.core import api

        cluster, api._default = api._default, None
        if cluster is not None:
            cluster.close()
        compat.set_default_pool(None)
