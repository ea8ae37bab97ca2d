"""The old ComfyUI-for-Nuke env.py accessors keep working, cluster-aware."""

from __future__ import annotations

import json

import pytest

from nuke_comfy_cluster.core import env

SERVERS = json.dumps(
    [
        {"name": "slow", "ip": "10.0.0.9", "port": 9009, "priority": 5, "dir_local": "A:/", "dir_remote": "/a"},
        {"name": "off", "ip": "10.0.0.1", "port": 9001, "priority": 0, "enabled": False},
        {"name": "best", "ip": "10.0.0.2", "port": 9002, "priority": 1, "dir_local": "Z:/proj", "dir_remote": "/mnt/p"},
        {"name": "tie", "ip": "10.0.0.3", "port": 9003, "priority": 1},
    ]
)


def test_defaults_with_nothing_set():
    e = {}
    assert env.NUKE_COMFYUI_SERVERS(e) == ""
    assert env.NUKE_COMFYUI_IP(e) == "127.0.0.1"
    assert env.NUKE_COMFYUI_PORT(e) == 8188
    assert env.NUKE_COMFYUI_DIR_LOCAL(e) == ""
    assert env.NUKE_COMFYUI_DIR_REMOTE(e) == ""


def test_single_variables_as_the_old_plugin_read_them():
    e = {
        "NUKE_COMFYUI_IP": "192.168.1.20",
        "NUKE_COMFYUI_PORT": "8189",
        "NUKE_COMFYUI_DIR_LOCAL": "//nas/comfy",
        "NUKE_COMFYUI_DIR_REMOTE": "/home/u/ComfyUI",
    }
    assert env.NUKE_COMFYUI_IP(e) == "192.168.1.20"
    assert env.NUKE_COMFYUI_PORT(e) == 8189
    assert isinstance(env.NUKE_COMFYUI_PORT(e), int)
    assert env.NUKE_COMFYUI_DIR_LOCAL(e) == "//nas/comfy"
    assert env.NUKE_COMFYUI_DIR_REMOTE(e) == "/home/u/ComfyUI"


@pytest.mark.parametrize("port", ["abc", "0", "70000", "", "8188.5"])
def test_bad_port_gives_8188(port):
    assert env.NUKE_COMFYUI_PORT({"NUKE_COMFYUI_PORT": port}) == 8188


def test_servers_give_the_preferred_enabled_server():
    e = {"NUKE_COMFYUI_SERVERS": SERVERS}
    assert env.NUKE_COMFYUI_SERVERS(e) == SERVERS
    assert env.NUKE_COMFYUI_IP(e) == "10.0.0.2"
    assert env.NUKE_COMFYUI_PORT(e) == 9002
    assert env.NUKE_COMFYUI_DIR_LOCAL(e) == "Z:/proj"
    assert env.NUKE_COMFYUI_DIR_REMOTE(e) == "/mnt/p"


def test_explicit_single_variables_win_over_servers():
    e = {"NUKE_COMFYUI_SERVERS": SERVERS, "NUKE_COMFYUI_IP": "10.1.1.1", "NUKE_COMFYUI_DIR_REMOTE": "/r"}
    assert env.NUKE_COMFYUI_IP(e) == "10.1.1.1"
    assert env.NUKE_COMFYUI_PORT(e) == 9002  # not set explicitly: the preferred server's
    assert env.NUKE_COMFYUI_DIR_REMOTE(e) == "/r"
    assert env.NUKE_COMFYUI_DIR_LOCAL(e) == "Z:/proj"


def test_invalid_explicit_values_count_as_unset():
    e = {"NUKE_COMFYUI_SERVERS": SERVERS, "NUKE_COMFYUI_IP": "http://x:1", "NUKE_COMFYUI_PORT": "x"}
    assert env.NUKE_COMFYUI_IP(e) == "10.0.0.2"
    assert env.NUKE_COMFYUI_PORT(e) == 9002


def test_servers_file(tmp_path):
    path = tmp_path / "servers.json"
    path.write_text(SERVERS, encoding="utf-8")
    e = {"NUKE_COMFYUI_SERVERS": str(path)}
    assert env.NUKE_COMFYUI_SERVERS(e) == str(path)
    assert (env.NUKE_COMFYUI_IP(e), env.NUKE_COMFYUI_PORT(e)) == ("10.0.0.2", 9002)


@pytest.mark.parametrize(
    "value", ["[not json", "[]", "/no/such/file.json", '[{"name": "a", "enabled": false, "ip": "h"}]']
)
def test_unusable_servers_fall_back_to_defaults(value):
    e = {"NUKE_COMFYUI_SERVERS": value}
    assert env.NUKE_COMFYUI_IP(e) == "127.0.0.1"
    assert env.NUKE_COMFYUI_PORT(e) == 8188
    assert env.NUKE_COMFYUI_DIR_LOCAL(e) == ""


def test_ipv6_comes_without_brackets():
    assert env.NUKE_COMFYUI_IP({"NUKE_COMFYUI_IP": "[::1]"}) == "::1"


def test_read_at_call_time_from_os_environ(monkeypatch):
    for name in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert env.NUKE_COMFYUI_PORT() == 8188
    monkeypatch.setenv("NUKE_COMFYUI_PORT", "9100")
    assert env.NUKE_COMFYUI_PORT() == 9100
    monkeypatch.delenv("NUKE_COMFYUI_PORT")
    monkeypatch.setenv("NUKE_COMFYUI_SERVERS", SERVERS)
    assert env.NUKE_COMFYUI_IP() == "10.0.0.2"


def test_nuke_user_folder(tmp_path):
    assert env.NUKE_COMFYUI_NUKE_USER({"NUKE_COMFYUI_NUKE_USER": "/x"}) == "/x"
    assert env.NUKE_COMFYUI_NUKE_USER({"HOME": str(tmp_path)}) == str(tmp_path / ".nuke")
