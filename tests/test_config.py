"""NUKE_COMFYUI_SERVERS parsing, validation messages, fallbacks and the round trip."""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuke_comfy_cluster.core.config import (
    FIELDS,
    ConfigIssue,
    ConfigLoad,
    ServerConfig,
    load_config,
    parse_servers,
    preferred_server,
    redact,
    server_to_dict,
    servers_from_data,
    servers_to_json,
)


def one(text, **kw):
    servers, issues = parse_servers(text, **kw)
    return (
        servers,
        issues,
        [i.message for i in issues if i.level == "error"],
        [i.message for i in issues if i.level == "warning"],
    )


def entry(**fields):
    return json.dumps([fields])


# --------------------------------------------------------------------------- fields


def test_full_entry_is_read_with_every_field():
    text = json.dumps(
        [
            {
                "name": "gpu-a",
                "ip": "10.0.0.5",
                "port": 8189,
                "dir_local": "Z:/proj",
                "dir_remote": "/mnt/proj",
                "priority": 2,
                "enabled": False,
                "scheme": "HTTPS",
                "token": "s3cret",
                "headers": {"X-Api-Key": "k"},
                "max_in_flight": 3,
            }
        ]
    )
    servers, issues, errors, warnings = one(text)
    assert issues == []
    (s,) = servers
    assert (s.name, s.ip, s.port, s.dir_local, s.dir_remote) == ("gpu-a", "10.0.0.5", 8189, "Z:/proj", "/mnt/proj")
    assert (s.priority, s.enabled, s.scheme, s.token, s.headers, s.max_in_flight) == (
        2,
        False,
        "https",
        "s3cret",
        {"X-Api-Key": "k"},
        3,
    )
    assert s.base_url == "https://10.0.0.5:8189"


def test_defaults_for_optional_fields_and_null_means_not_given():
    servers, issues, errors, _ = one(entry(name="a", ip="h", port=None, priority=None, token=None))
    assert errors == []
    (s,) = servers
    assert (s.port, s.priority, s.enabled, s.scheme, s.token, s.headers, s.max_in_flight) == (
        8188,
        0,
        True,
        "http",
        None,
        {},
        0,
    )


def test_bad_port_message_names_origin_entry_name_and_field():
    text = json.dumps(
        [{"name": "gpu-a", "ip": "10.0.0.1", "port": 8188}, {"name": "gpu-b", "ip": "10.0.0.2", "port": "abc"}]
    )
    servers, issues, errors, _ = one(text)
    assert [s.name for s in servers] == ["gpu-a"]
    assert errors == ['NUKE_COMFYUI_SERVERS entry 2 ("gpu-b"): field "port": expected an integer 1-65535, got "abc"']
    (issue,) = issues
    assert (issue.index, issue.field, issue.level) == (1, "port", "error")
    assert str(issue) == issue.message


@pytest.mark.parametrize("port", [0, 65536, -1, True, False, 8188.0, 8188.5, [8188], {"p": 1}, "", "81 88", "0x1f"])
def test_invalid_ports_are_errors(port):
    servers, _, errors, _ = one(entry(name="a", ip="h", port=port))
    assert servers == []
    assert len(errors) == 1 and 'field "port"' in errors[0] and "1-65535" in errors[0]


def test_numeric_string_port_is_accepted_with_a_warning():
    servers, _, errors, warnings = one(entry(name="a", ip="h", port=" 8190 "))
    assert errors == [] and servers[0].port == 8190
    assert len(warnings) == 1 and 'field "port"' in warnings[0]


@pytest.mark.parametrize(
    "ip, stored",
    [
        ("10.0.0.5", "10.0.0.5"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[fe80::1%eth0]", "fe80::1%eth0"),
        ("2001:db8::42", "2001:db8::42"),
        ("localhost", "localhost"),
        ("gpu-1.studio.lan", "gpu-1.studio.lan"),
        ("gpu1.", "gpu1."),
        (" 10.0.0.5 ", "10.0.0.5"),
    ],
)
def test_valid_addresses(ip, stored):
    servers, _, errors, _ = one(entry(name="a", ip=ip))
    assert errors == [] and servers[0].ip == stored


@pytest.mark.parametrize(
    "ip, hint",
    [
        ("http://10.0.0.5", "url"),
        ("10.0.0.5:8188", 'put the port in "port"'),
        ("256.1.1.1", "IPv4"),
        ("10.0.0", "IPv4"),
        ("[10.0.0.1]", "IPv6"),
        ("::g", "IPv6"),
        ("-gpu", "host name"),
        ("gpu..lan", "host name"),
        ("gpu lan", "host name"),
        ("", "host name"),
        ("a" * 64, "host name"),
        (5, "host name"),
    ],
)
def test_invalid_addresses(ip, hint):
    servers, issues, errors, _ = one(entry(name="a", ip=ip))
    assert servers == [] and len(errors) == 1
    assert 'field "ip"' in errors[0] and hint in errors[0]


def test_underscore_host_is_kept_with_a_warning():
    servers, _, errors, warnings = one(entry(name="a", ip="gpu_box"))
    assert errors == [] and servers[0].ip == "gpu_box" and "'_'" in warnings[0]


def test_missing_ip_is_an_error():
    servers, _, errors, _ = one(entry(name="a", port=1))
    assert servers == [] and 'field "ip": missing' in errors[0]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://gpu1.studio:443", ("gpu1.studio", 443, "https")),
        ("https://gpu1.studio", ("gpu1.studio", 443, "https")),
        ("http://gpu1.studio", ("gpu1.studio", 80, "http")),
        ("http://10.0.0.5:8188/", ("10.0.0.5", 8188, "http")),
        ("HTTP://[::1]:8190", ("::1", 8190, "http")),
    ],
)
def test_url_is_split(url, expected):
    servers, _, errors, _ = one(entry(name="a", url=url))
    assert errors == []
    s = servers[0]
    assert (s.ip, s.port, s.scheme) == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "ftp://gpu1"},
        {"url": "gpu1:8188"},
        {"url": "http://gpu1/comfy"},
        {"url": "http://gpu1:99999"},
        {"url": "http://[::1"},
        {"url": 5},
        {"url": "https://gpu1:443", "ip": "gpu2"},
        {"url": "https://gpu1:443", "port": 8188},
        {"url": "https://gpu1:443", "scheme": "http"},
    ],
)
def test_bad_or_conflicting_urls(fields):
    servers, _, errors, _ = one(entry(name="a", **fields))
    assert servers == [] and errors and 'field "url"' in errors[0]


def test_url_agreeing_with_ip_and_port_is_fine():
    servers, _, errors, _ = one(entry(name="a", url="https://gpu1:443", ip="GPU1", port=443, scheme="https"))
    assert errors == [] and servers[0].port == 443


def test_url_password_is_never_echoed():
    _, _, errors, _ = one(entry(name="a", url="https://bob:hunter2@gpu1"))
    assert errors and "hunter2" not in errors[0] and "bob" not in errors[0]


def test_unknown_keys_warn_with_a_suggestion_and_underscore_keys_are_comments():
    servers, _, errors, warnings = one(entry(name="a", ip="h", prot=1, host="x", _comment="hi", zzz=1))
    assert errors == [] and len(servers) == 1
    assert any('unknown field "prot"' in w and 'did you mean "port"' in w for w in warnings)
    assert any('unknown field "host"' in w and 'did you mean "ip"' in w for w in warnings)
    assert any('unknown field "zzz" ignored' in w and "did you mean" not in w for w in warnings)
    assert not any("_comment" in w for w in warnings)


def test_missing_name_defaults_to_host_port_with_a_warning():
    servers, _, errors, warnings = one('[{"ip": "10.0.0.5", "port": 8190}, {"ip": "::1"}]')
    assert errors == []
    assert [s.name for s in servers] == ["10.0.0.5:8190", "[::1]:8188"]
    assert len(warnings) == 2 and all('field "name": missing' in w for w in warnings)


@pytest.mark.parametrize("name", ["", "   ", 5, ["a"], "a\nb"])
def test_bad_names_are_errors(name):
    servers, _, errors, _ = one(entry(name=name, ip="h"))
    assert servers == [] and 'field "name"' in errors[0]


def test_duplicate_names_keep_the_first_and_report_the_later_ones():
    text = json.dumps(
        [
            {"name": "gpu", "ip": "a"},
            {"name": "other", "ip": "b"},
            {"name": "GPU", "ip": "c"},
            {"name": "gpu", "ip": "d"},
        ]
    )
    servers, issues, errors, _ = one(text)
    assert [(s.name, s.ip) for s in servers] == [("gpu", "a"), ("other", "b")]
    assert len(errors) == 2 and all("duplicate name" in e and "entry 1" in e for e in errors)
    assert [i.index for i in issues] == [2, 3]


def test_enabled_priority_scheme_and_max_in_flight_checks():
    _, _, errors, _ = one(entry(name="a", ip="h", enabled="maybe"))
    assert 'field "enabled": expected true or false' in errors[0]
    servers, _, errors, warnings = one(entry(name="a", ip="h", enabled="false", priority="3"))
    assert errors == [] and servers[0].enabled is False and servers[0].priority == 3 and len(warnings) == 2
    _, _, errors, _ = one(entry(name="a", ip="h", priority=1.5))
    assert 'field "priority"' in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", priority=True))
    assert 'field "priority"' in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", scheme="wss"))
    assert 'field "scheme"' in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", max_in_flight=-1))
    assert 'field "max_in_flight"' in errors[0]


def test_secrets_are_checked_without_being_shown():
    _, _, errors, _ = one(entry(name="a", ip="h", token="top\nsecret"))
    assert 'field "token"' in errors[0] and "secret" not in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", token=123456789))
    assert 'field "token"' in errors[0] and "123456789" not in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", headers={"X-Key": "val\r\nue-secret"}))
    assert 'field "headers"' in errors[0] and "X-Key" in errors[0] and "secret" not in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", headers={"Bad Name": "v"}))
    assert "not a valid HTTP header name" in errors[0]
    _, _, errors, _ = one(entry(name="a", ip="h", headers=["x"]))
    assert 'field "headers"' in errors[0]


@pytest.mark.parametrize(
    "secret", ["REPLACE-WITH-YOUR-TOKEN", "<token>", "changeme", "***", "your-api-key", "xxxxxxxx", "{{ TOKEN }}"]
)
def test_placeholder_secrets_are_flagged_without_being_shown(secret):
    servers, _, errors, warnings = one(entry(name="a", ip="h", token=secret))
    assert errors == [] and servers[0].token == secret
    assert len(warnings) == 1 and 'field "token"' in warnings[0] and "placeholder" in warnings[0]
    assert secret not in warnings[0]
    _, _, errors, warnings = one(entry(name="a", ip="h", headers={"X-Api-Key": secret}))
    assert errors == [] and len(warnings) == 1 and "X-Api-Key" in warnings[0] and "placeholder" in warnings[0]


@pytest.mark.parametrize("secret", ["sk-12abXYz9", "d41d8cd98f00b204e9800998ecf8427e", "my-token-2024", "Tok3n"])
def test_real_looking_secrets_are_not_flagged(secret):
    _, _, errors, warnings = one(entry(name="a", ip="h", token=secret, headers={"X-Key": secret}))
    assert errors == [] and warnings == []


def test_the_example_proxy_file_warns_about_its_placeholders():
    from tests.conftest import REPO

    text = (REPO / "examples" / "servers-reverse-proxy.json").read_text(encoding="utf-8")
    _, _, errors, warnings = one(text)
    assert errors == [] and sum("placeholder" in w for w in warnings) == 2


def test_bearer_prefix_is_removed_from_the_token():
    servers, _, errors, warnings = one(entry(name="a", ip="h", token="Bearer abc"))
    assert errors == [] and servers[0].token == "abc" and "Bearer" in warnings[0] and "abc" not in warnings[0]


def test_half_a_path_mapping_warns():
    _, _, errors, warnings = one(entry(name="a", ip="h", dir_local="Z:/proj"))
    assert errors == [] and 'field "dir_remote"' in warnings[0]


def test_duplicate_json_keys_warn():
    _, _, errors, warnings = one('[{"name": "a", "ip": "h", "port": 1, "port": 2}]')
    assert errors == [] and 'key "port" is given more than once' in warnings[0]


# --------------------------------------------------------------------------- document shapes


def test_servers_wrapper_object_and_single_object():
    servers, _, errors, warnings = one('{"servers": [{"name": "a", "ip": "h"}], "version": 1}')
    assert errors == [] and warnings == [] and servers[0].name == "a"
    servers, _, errors, warnings = one('{"name": "a", "ip": "h"}')
    assert errors == [] and servers[0].name == "a" and "not an array" in warnings[0]
    servers, _, errors, _ = one('{"servers": {"name": "a"}}')
    assert servers == [] and '"servers" must be an array' in errors[0]
    servers, _, errors, _ = one('{"foo": 1}')
    assert servers == [] and '"foo"' in errors[0]


@pytest.mark.parametrize("text", ["5", '"x"', "null", "true"])
def test_wrong_top_level_types(text):
    servers, _, errors, _ = one(text)
    assert servers == [] and "expected an array" in errors[0]


def test_empty_text_and_empty_list():
    assert one("   ")[2] == ["NUKE_COMFYUI_SERVERS is empty"]
    servers, issues, errors, warnings = one("[]")
    assert servers == [] and errors == [] and warnings == ["NUKE_COMFYUI_SERVERS holds no servers"]


def test_entry_that_is_not_an_object():
    servers, issues, errors, _ = one('[{"name": "a", "ip": "h"}, 7, "b"]')
    assert len(servers) == 1 and len(errors) == 2
    assert errors[0].startswith("NUKE_COMFYUI_SERVERS entry 2: expected an object")
    assert [i.index for i in issues] == [1, 2]


def test_syntax_error_names_line_and_column_with_a_caret():
    text = '[\n  {"name": "a", "ip": "h"},\n  {"name": "b" "ip": "h"}\n]'
    servers, issues, errors, _ = one(text)
    assert servers == []
    (issue,) = issues
    assert (issue.line, issue.column) == (3, 16)
    head, excerpt, caret = issue.message.split("\n")
    assert head.startswith("NUKE_COMFYUI_SERVERS is not valid JSON at line 3, column 16")
    assert excerpt.strip() == '{"name": "b" "ip": "h"}'
    assert excerpt[caret.index("^")] == '"' and excerpt[caret.index("^") - 1] == " "
    assert excerpt[caret.index("^") - 2] == '"'  # the closing quote of "b" is just before


def test_syntax_error_in_a_long_single_line_keeps_the_caret_on_the_culprit():
    good = ",".join(json.dumps({"name": f"s{i}", "ip": f"10.0.0.{i}"}) for i in range(20))
    text = "[" + good + ', {"name": "bad" "ip": "h"}]'
    _, issues, _, _ = one(text)
    (issue,) = issues
    _, excerpt, caret = issue.message.split("\n")
    assert len(excerpt) < 90
    assert excerpt[caret.index("^")] == '"' and excerpt[caret.index("^") - 2 : caret.index("^")] == '" '


@pytest.mark.parametrize(
    "text, hint",
    [
        ('[{"name": "a", "dir_local": "C:\\proj"}]', "backslash"),
        ("[{'name': 'a'}]", "double quotes"),
        ('[{"name": "a", "ip": "h"},]', "comma after the last item"),
        ('[{"name": "a", "ip": "h",}]', "comma after the last item"),
    ],
)
def test_syntax_error_hints(text, hint):
    _, _, errors, _ = one(text)
    assert hint in errors[0]


def test_entry_issues_carry_their_line_in_multi_line_text():
    text = '[\n  {"name": "a", "ip": "h"},\n\n  {"name": "b",\n   "ip": "h", "port": 0}\n]'
    _, issues, errors, _ = one(text)
    assert issues[0].line == 4 and "at line 4" in errors[0]
    wrapped = '{"version": 1,\n "servers": [\n  {"name": "b", "port": 0}]}'
    _, issues, _, _ = one(wrapped)
    assert issues[0].line == 3


def test_origin_names_the_file():
    _, _, errors, _ = one('[{"name": "a"}]', origin="/tmp/x.json")
    assert errors[0].startswith("/tmp/x.json entry 1")


def test_huge_numbers_and_deep_nesting_do_not_raise():
    assert one("[" + "1" * 5000 + "]")[2]
    assert one("[" * 100000)[2]
    assert one("[" * 3000 + "]" * 3000)[2]


def test_servers_from_data_accepts_decoded_json():
    servers, issues = servers_from_data([{"name": "a", "ip": "h"}, {"ip": 1}], origin="editor")
    assert [s.name for s in servers] == ["a"] and issues[0].message.startswith("editor entry 2")


# --------------------------------------------------------------------------- load_config


def test_unset_means_default_server():
    load = load_config({})
    assert isinstance(load, ConfigLoad)
    assert load.source == "default" and load.ok and load.path is None
    assert [(s.ip, s.port) for s in load.servers] == [("127.0.0.1", 8188)]
    assert load.notice == (
        "NUKE_COMFYUI_SERVERS, NUKE_COMFYUI_IP and NUKE_COMFYUI_PORT are not set — using the default server 127.0.0.1:8188"
    )


@pytest.mark.parametrize("value", [None, "", "   \t\n"])
def test_unset_or_blank_servers_fall_back_to_single_variables(value):
    env = {
        "NUKE_COMFYUI_IP": "10.0.0.5",
        "NUKE_COMFYUI_PORT": "8190",
        "NUKE_COMFYUI_DIR_LOCAL": "Z:/proj",
        "NUKE_COMFYUI_DIR_REMOTE": "/mnt/proj",
    }
    if value is not None:
        env["NUKE_COMFYUI_SERVERS"] = value
    load = load_config(env)
    assert load.source == "single" and load.ok
    (s,) = load.servers
    assert (s.ip, s.port, s.dir_local, s.dir_remote, s.name) == (
        "10.0.0.5",
        8190,
        "Z:/proj",
        "/mnt/proj",
        "10.0.0.5:8190",
    )
    assert "using single server 10.0.0.5:8190 from NUKE_COMFYUI_IP/PORT" in load.notice
    assert ("is not set" if value is None else "is empty") in load.notice


def test_bad_single_port_names_the_variable_and_uses_8188():
    load = load_config({"NUKE_COMFYUI_PORT": "abc", "NUKE_COMFYUI_IP": "gpu"})
    assert load.servers[0].port == 8188 and load.servers[0].ip == "gpu"
    assert load.errors == ('NUKE_COMFYUI_PORT: expected an integer 1-65535, got "abc"; using 8188',)
    assert not load.ok


def test_port_only_uses_localhost():
    load = load_config({"NUKE_COMFYUI_PORT": "9000"})
    assert load.source == "single" and (load.servers[0].ip, load.servers[0].port) == ("127.0.0.1", 9000)
    assert load.notice.endswith("from NUKE_COMFYUI_PORT")


def test_bad_single_ip_is_an_error():
    load = load_config({"NUKE_COMFYUI_IP": "http://10.0.0.5:8188"})
    assert load.servers[0].ip == "127.0.0.1" and load.errors[0].startswith("NUKE_COMFYUI_IP:")


def test_inline_servers():
    env = {"NUKE_COMFYUI_SERVERS": ' [{"name": "a", "ip": "h"}, {"name": "b", "ip": "i"}] ', "NUKE_COMFYUI_IP": "x"}
    load = load_config(env)
    assert load.source == "inline" and load.ok and [s.name for s in load.servers] == ["a", "b"]
    assert load.notice == "Using 2 servers from NUKE_COMFYUI_SERVERS (inline JSON)"


def test_partially_bad_inline_keeps_good_entries_and_says_so():
    env = {"NUKE_COMFYUI_SERVERS": '[{"name": "a", "ip": "h"}, {"name": "b", "ip": "h", "port": "x"}]'}
    load = load_config(env)
    assert load.source == "inline" and [s.name for s in load.servers] == ["a"] and not load.ok
    assert load.notice == "Using 1 server from NUKE_COMFYUI_SERVERS (inline JSON); 1 entry skipped because of errors"


def test_file_source_with_tilde_and_variables(tmp_path):
    folder = tmp_path / "home" / ".nuke"
    folder.mkdir(parents=True)
    path = folder / "comfyui_servers.json"
    path.write_text(json.dumps({"servers": [{"name": n, "ip": "h"} for n in "abc"]}), encoding="utf-8")
    for value in (
        "~/.nuke/comfyui_servers.json",
        "$HOME/.nuke/comfyui_servers.json",
        "${HOME}/.nuke/comfyui_servers.json",
    ):
        load = load_config({"NUKE_COMFYUI_SERVERS": value, "HOME": str(tmp_path / "home")})
        assert load.source == "file" and load.ok, load.issues
        assert load.path == str(path)
        assert load.notice == f"Using 3 servers from {path} (NUKE_COMFYUI_SERVERS)"


def test_quoted_path_is_unquoted_with_a_warning(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[{"name": "a", "ip": "h"}]', encoding="utf-8")
    load = load_config({"NUKE_COMFYUI_SERVERS": f'"{path}"'})
    assert load.source == "file" and load.ok and "quotes" in load.warnings[0]


def test_file_with_bom_is_read(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(b'\xef\xbb\xbf[{"name": "a", "ip": "h"}]')
    assert load_config({"NUKE_COMFYUI_SERVERS": str(path)}).source == "file"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_file_from_powershell_is_read_with_a_warning(tmp_path, encoding):
    path = tmp_path / "s.json"
    path.write_bytes('[{"name": "a", "ip": "h"}]\r\n'.encode(encoding))
    load = load_config({"NUKE_COMFYUI_SERVERS": str(path)})
    assert load.source == "file" and [s.name for s in load.servers] == ["a"] and load.ok
    assert len(load.warnings) == 1 and "UTF-" in load.warnings[0] and "save it as UTF-8" in load.warnings[0]


def test_a_latin1_file_is_refused_naming_the_byte(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes('[{"name": "caf\u00e9", "ip": "h"}]'.encode("latin-1"))
    load = load_config({"NUKE_COMFYUI_SERVERS": str(path)})
    assert load.source == "default" and "not UTF-8 text (byte 0xe9" in load.errors[0]


def test_entry_lines_are_found_in_one_pass_over_the_text():
    """Finding each entry's line once recounted from the start: minutes for a 10 MB file."""
    from nuke_comfy_cluster.core.config_parse import _entry_lines

    class Counting(str):
        scanned = 0

        def count(self, sub, start=0, end=None):  # type: ignore[override]
            end = len(self) if end is None else end
            Counting.scanned += max(0, end - start)
            return str.count(self, sub, start, end)

    n = 3000
    plain = json.dumps([{"name": f"s{i}", "ip": "h", "port": 1} for i in range(n)], indent=2)
    lines = _entry_lines(Counting(plain))
    assert lines is not None and len(lines) == n and lines[:2] == [2, 7] and lines[-1] == 2 + 5 * (n - 1)
    assert Counting.scanned <= 2 * len(plain)


def test_missing_file_falls_back_and_says_so(tmp_path):
    missing = tmp_path / "nope.json"
    load = load_config({"NUKE_COMFYUI_SERVERS": str(missing), "NUKE_COMFYUI_IP": "10.0.0.5"})
    assert load.source == "single"
    assert (
        load.notice
        == f"NUKE_COMFYUI_SERVERS points to a missing file {missing} — using single server 10.0.0.5:8188 from NUKE_COMFYUI_IP"
    )
    assert load.errors == (f"NUKE_COMFYUI_SERVERS: cannot read {missing}: file not found",)


def test_folder_instead_of_file(tmp_path):
    load = load_config({"NUKE_COMFYUI_SERVERS": str(tmp_path)})
    assert load.source == "default" and "folder" in load.notice and "folder" in load.errors[0]


def test_invalid_file_falls_back_with_line_and_column(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[\n  {"name": "a",\n   "ip" "h"}\n]', encoding="utf-8")
    load = load_config({"NUKE_COMFYUI_SERVERS": str(path), "NUKE_COMFYUI_IP": "10.0.0.5", "NUKE_COMFYUI_PORT": "8188"})
    assert load.source == "single"
    assert load.notice == (
        f"NUKE_COMFYUI_SERVERS file {path} is invalid at line 3, column 9 — using single server 10.0.0.5:8188 "
        "from NUKE_COMFYUI_IP/PORT"
    )
    assert load.errors[0].startswith(f"{path} is not valid JSON at line 3, column 9")


def test_inline_invalid_matches_the_documented_notice():
    load = load_config({"NUKE_COMFYUI_SERVERS": '[{"name": "a",\n\n "ip" 1}]', "NUKE_COMFYUI_IP": "10.0.0.5"})
    assert load.notice.startswith("NUKE_COMFYUI_SERVERS is invalid at line 3, column 7 — using single server")


@pytest.mark.parametrize(
    "value, phrase",
    [
        ("[]", "holds no servers"),
        ('[{"name": 1}, {"ip": 2}]', "has no usable entry (2 entries with errors)"),
        ("[1, 2", "is invalid at line 1, column 6"),
        ('{"servers": 5}', "is invalid"),
    ],
)
def test_no_usable_entry_falls_back_to_default(value, phrase):
    load = load_config({"NUKE_COMFYUI_SERVERS": value})
    assert load.source == "default" and load.servers[0].port == 8188
    assert phrase in load.notice and "NUKE_COMFYUI_IP/PORT are not set either — using the default server" in load.notice


def test_notice_is_exactly_one_line(tmp_path):
    weird = tmp_path / "a\nb.json"
    for env in ({}, {"NUKE_COMFYUI_SERVERS": str(weird)}, {"NUKE_COMFYUI_SERVERS": "[\n\n{"}):
        load = load_config(env)
        assert "\n" not in load.notice and load.notice


def test_environment_is_read_at_call_time(monkeypatch):
    monkeypatch.delenv("NUKE_COMFYUI_SERVERS", raising=False)
    monkeypatch.setenv("NUKE_COMFYUI_IP", "10.9.9.9")
    assert load_config().servers[0].ip == "10.9.9.9"
    monkeypatch.setenv("NUKE_COMFYUI_SERVERS", '[{"name": "z", "ip": "h"}]')
    assert load_config().servers[0].name == "z"


def test_none_enabled_is_mentioned():
    load = load_config({"NUKE_COMFYUI_SERVERS": '[{"name": "a", "ip": "h", "enabled": false}]'})
    assert load.source == "inline" and load.notice.endswith("; none is enabled")


def test_issue_accessors():
    load = ConfigLoad(
        servers=(),
        source="default",
        notice="n",
        path=None,
        issues=(ConfigIssue("w", "warning"), ConfigIssue("e", "error", line=1)),
    )
    assert load.warnings == ("w",) and load.errors == ("e",) and not load.ok


# --------------------------------------------------------------------------- output and redaction


def test_server_to_dict_order_and_secrets():
    s = ServerConfig("a", "h", 1, scheme="https", token="t", headers={"X": "y"}, max_in_flight=2)
    assert list(server_to_dict(s)) == [
        "name",
        "ip",
        "port",
        "dir_local",
        "dir_remote",
        "priority",
        "enabled",
        "scheme",
        "max_in_flight",
        "token",
        "headers",
    ]
    assert "token" not in server_to_dict(s, include_secrets=False)
    assert "headers" not in server_to_dict(s, include_secrets=False)
    text = servers_to_json([s], include_secrets=False)
    assert text.endswith("}\n]\n") and "t" not in json.loads(text)[0].get("token", "")


def test_redact_masks_secrets_everywhere():
    s = ServerConfig("a", "h", token="tok-123", headers={"X-Api-Key": "key-456"})
    assert redact({"X-Api-Key": "key-456"}) == {"X-Api-Key": "***"}
    assert redact(s)["token"] == "***" and redact(s)["headers"] == {"X-Api-Key": "***"}
    text = servers_to_json([s]) + " Authorization: Bearer abc.def https://u:p@h/"
    masked = redact(text)
    for secret in ("tok-123", "key-456", "abc.def", "u:p"):
        assert secret not in masked
    assert '"X-Api-Key": "***"' in masked and '"name": "a"' in masked
    assert "tok-123" not in repr(s) and "key-456" not in repr(s)


def test_preferred_server():
    servers = [
        ServerConfig("a", priority=2),
        ServerConfig("b", priority=1, enabled=False),
        ServerConfig("c", priority=1),
        ServerConfig("d", priority=1),
    ]
    assert preferred_server(servers).name == "c"
    assert preferred_server([ServerConfig("x", enabled=False)]) is None


def test_base_url_brackets_ipv6():
    assert ServerConfig("a", ip="::1", port=1).base_url == "http://[::1]:1"
    assert ServerConfig("a", ip="fe80::1%eth0").base_url == "http://[fe80::1%25eth0]:8188"
    assert ServerConfig("a", ip="::1").host_port == "[::1]:8188"


# --------------------------------------------------------------------------- properties

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_field_values = _json_scalars | st.sampled_from(
    ["10.0.0.1", "::1", "[::1]", "gpu", "8188", "https://h:1", "http", "true"]
)
_server_like = st.dictionaries(st.sampled_from(FIELDS + ("prot", "_c")), _field_values, max_size=8)
_documents = (
    _json_values
    | st.lists(_server_like, max_size=4)
    | st.fixed_dictionaries({"servers": st.lists(_server_like | _json_values, max_size=3)})
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text()
    | _documents.map(json.dumps)
    | st.tuples(_documents.map(json.dumps), st.integers(0, 50)).map(lambda t: t[0][: t[1]] + t[0][t[1] + 1 :])
)
def test_any_text_gives_servers_and_issues(text):
    servers, issues = parse_servers(text)
    assert all(isinstance(s, ServerConfig) for s in servers)
    assert all(isinstance(i, ConfigIssue) and i.level in ("error", "warning") for i in issues)
    assert len({s.name.casefold() for s in servers}) == len(servers)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_any_json_value_gives_servers_and_issues(data):
    servers, issues = servers_from_data(data, origin="x")
    assert all(isinstance(s, ServerConfig) for s in servers)
    assert all(isinstance(i, ConfigIssue) for i in issues)
    for s in servers:
        assert 1 <= s.port <= 65535 and s.scheme in ("http", "https") and s.name


_clean_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z")
_hosts = st.lists(_label, min_size=1, max_size=3).map(".".join).filter(lambda h: not re.fullmatch(r"[0-9.]+", h))
_valid_servers = st.builds(
    ServerConfig,
    name=_clean_text.map(str.strip).filter(bool),
    ip=st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str) | _hosts,
    port=st.integers(1, 65535),
    dir_local=_clean_text,
    dir_remote=_clean_text,
    priority=st.integers(-1000, 10**12),
    enabled=st.booleans(),
    scheme=st.sampled_from(["http", "https"]),
    token=st.none() | _clean_text.map(str.strip).filter(lambda t: t and not t.lower().startswith("bearer ")),
    headers=st.dictionaries(st.from_regex(r"\A[A-Za-z0-9-]{1,10}\Z"), _clean_text, max_size=3),
    max_in_flight=st.integers(0, 64),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_valid_servers, max_size=5, unique_by=lambda s: s.name.casefold()))
def test_round_trip_through_json(servers):
    text = servers_to_json(servers)
    assert text.endswith("\n")
    parsed, issues = parse_servers(text)
    assert [i for i in issues if i.level == "error"] == []
    assert [server_to_dict(s) for s in parsed] == [server_to_dict(s) for s in servers]
    assert parsed == servers


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
@pytest.mark.timeout(10)
def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(str(fifo))
    load = load_config({"NUKE_COMFYUI_SERVERS": str(fifo)})
    assert load.source == "default" and "not a regular file" in load.errors[0]


_env_values = st.text(max_size=40) | st.sampled_from(
    ["[", "{", "[]", "~", "~nobody/x", "$HOME", "%X%", "${", '"', "''", "\x00", "8188", "::1", "[::1]", "0"]
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "NUKE_COMFYUI_SERVERS",
                "NUKE_COMFYUI_IP",
                "NUKE_COMFYUI_PORT",
                "NUKE_COMFYUI_DIR_LOCAL",
                "NUKE_COMFYUI_DIR_REMOTE",
                "HOME",
            ]
        ),
        _env_values,
    )
)
def test_any_environment_gives_a_config(environ):
    load = load_config(environ)
    assert load.servers and load.source in ("file", "inline", "single", "default")
    assert load.notice and "\n" not in load.notice
    if load.source in ("single", "default"):
        assert len(load.servers) == 1


@pytest.mark.parametrize("key", ["X-Key\n", "X-Key\r\nEvil: 1", ""])
def test_header_names_cannot_smuggle_line_breaks(key):
    servers, _, errors, _ = one(entry(name="a", ip="h", headers={key: "v"}))
    assert servers == [] and "not a valid HTTP header name" in errors[0]


def test_host_and_port_text_cannot_end_in_a_line_break():
    assert one(entry(name="a", ip="h", port="8188\n"))[0][0].port == 8188  # stripped, with a warning
    assert one(entry(name="a", ip="gpu\n.lan"))[0] == []
