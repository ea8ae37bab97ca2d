from __future__ import annotations

from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.http import ServerConnection, auth_headers, base_url, ws_url


def test_urls_for_ipv4_ipv6_and_https():
    assert base_url(ServerConfig("a", "10.0.0.5", 8188)) == "http://10.0.0.5:8188"
    assert base_url(ServerConfig("a", "::1", 8188)) == "http://[::1]:8188"
    assert ws_url(ServerConfig("a", "gpu1.studio", 443, scheme="https"), "c1") == "wss://gpu1.studio:443/ws?clientId=c1"
    assert ws_url(ServerConfig("a", "10.0.0.5", 8188), "c1") == "ws://10.0.0.5:8188/ws?clientId=c1"


def test_token_becomes_bearer_header_and_never_shows_in_repr():
    cfg = ServerConfig("a", "h", 1, token="s3cret", headers={"X-Key": "k3y"})
    assert auth_headers(cfg) == {"X-Key": "k3y", "Authorization": "Bearer s3cret"}
    conn = ServerConnection(cfg)
    assert "s3cret" not in repr(cfg) and "k3y" not in repr(cfg)
    assert conn.session.headers["Authorization"] == "Bearer s3cret"
    conn.close()
