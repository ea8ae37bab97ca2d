"""Fuzzing the parsers that read untrusted input: any input gives a result or a project error.

"Project error" means the tree in ``core/errors.py`` (``ClusterError``); anything
else escaping (KeyError, TypeError, RecursionError, ...) is a bug, and so is a
hang (every test has a timeout). Inputs are random JSON and text, and mutations
of the real ComfyUI 0.3.39 answers in the protocol captures, so the fuzzer spends
its budget near the shapes a server really sends. Budgets are bounded for CI.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuke_comfy_cluster.core.config import ServerConfig, load_config, parse_servers, redact, servers_to_json
from nuke_comfy_cluster.core.config_store import import_config
from nuke_comfy_cluster.core.errors import ClusterError, ConfigError, ServerRejected, WorkflowError, user_message
from nuke_comfy_cluster.core.events import EventType, ServerEvent, parse_message
from nuke_comfy_cluster.core.jobs import OutputFile
from nuke_comfy_cluster.core.paths import is_under, normalize, safe_join, to_local, to_remote
from nuke_comfy_cluster.core.protocol import (
    parse_prompt_response,
    workflow_error_from_execution,
    workflow_error_from_rejection,
)
from nuke_comfy_cluster.core.results import (
    history_error,
    history_outputs,
    history_status,
    outputs_from_node_output,
    parse_history_entry,
)
from nuke_comfy_cluster.core.server import ComfyUIServer, parse_queue, parse_queue_remaining
from nuke_comfy_cluster.core.state import DeviceInfo, ServerSnapshot
from tests.conftest import load_capture, protocol_dir

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

_odd_text = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\x00", "\ud800", ".", "/", "\\", ":", "\u202e"]),
    max_size=30,
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _odd_text
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_odd_text, children, max_size=4),
    max_leaves=25,
)


def _paths(doc: Any, prefix: tuple = ()) -> List[tuple]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, prefix + (i,))
    return found


@st.composite
def mutated(draw: Any, original: Any) -> Any:
    """The original document with 1-4 values replaced by random JSON or removed."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(_json)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(_json)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return doc


def _body(name: str) -> Any:
    return load_capture(name)["body_json"]


def _ws_frames() -> List[Dict[str, Any]]:
    frames = []
    for name in ("ws_A_success.jsonl", "ws_A_runtime_error.jsonl", "ws_A_interrupted.jsonl", "ws_A_cached.jsonl"):
        with open(protocol_dir() / "captures" / name, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                record = json.loads(line)
                message = record.get("msg") if isinstance(record, dict) else None
                if isinstance(message, dict) and "type" in message:
                    frames.append(message)
    assert frames, "no websocket frames found in the captures"
    return frames


HISTORY = _body("history_prompt_success.json")
HISTORY_ERROR = _body("history_prompt_runtime_error.json")
QUEUE = _body("get_queue_busy_1running_2pending.json")
PROMPT_STATUS = _body("get_prompt_busy.json")
PROMPT_OK = _body("post_prompt_success.json")
PROMPT_400 = _body("post_prompt_error_invalid_input.json")
SYSTEM_STATS = _body("system_stats.json")
WS_FRAMES = _ws_frames()
HISTORY_ID = next(iter(HISTORY))
HISTORY_ERROR_ID = next(iter(HISTORY_ERROR))


def test_the_mutation_bases_are_what_a_real_server_sends():
    # guards the strategies below: if the captures were not parsed, the fuzzing would be blind
    assert history_status(parse_history_entry(HISTORY, HISTORY_ID)) == "success"
    assert history_outputs(parse_history_entry(HISTORY, HISTORY_ID))
    assert history_error(parse_history_entry(HISTORY_ERROR, HISTORY_ERROR_ID))
    assert [len(x) for x in parse_queue(QUEUE)] == [1, 2]
    assert parse_queue_remaining(PROMPT_STATUS) == 3
    assert parse_prompt_response(PROMPT_OK, "a")
    assert {f["type"] for f in WS_FRAMES} >= {"execution_start", "executed", "execution_success", "status"}


# --------------------------------------------------------------------------- /history


def _check_history(body: Any, prompt_id: str) -> None:
    try:
        entry = parse_history_entry(body, prompt_id)
    except ClusterError:
        return
    if entry is None:
        return
    assert isinstance(entry, dict)
    files = history_outputs(entry)
    assert all(isinstance(f, OutputFile) and isinstance(f.filename, str) for f in files)
    assert all(isinstance(f.subfolder, str) and f.type == "output" for f in files)
    assert isinstance(history_status(entry), str)
    data = history_error(entry)
    assert isinstance(data, dict)
    if data:
        error = workflow_error_from_execution(data, "a", "job")
        assert isinstance(error, WorkflowError) and isinstance(user_message(error), str)


@FUZZ
@given(mutated(HISTORY) | mutated(HISTORY_ERROR) | _json)
def test_history_parsers(body):
    for prompt_id in (HISTORY_ID, HISTORY_ERROR_ID, ""):
        _check_history(body, prompt_id)


# --------------------------------------------------------------------------- /queue, GET /prompt, POST /prompt


@FUZZ
@given(mutated(QUEUE) | _json)
def test_queue_parser(body):
    try:
        running, pending = parse_queue(body)
    except ClusterError:
        return
    assert isinstance(running, list) and isinstance(pending, list)
    assert all(isinstance(item[1], str) for item in running + pending)


@FUZZ
@given(mutated(PROMPT_STATUS) | _json)
def test_queue_remaining_parser(body):
    try:
        value = parse_queue_remaining(body)
    except ClusterError:
        return
    assert isinstance(value, int) and not isinstance(value, bool) and value >= 0


@FUZZ
@given(mutated(PROMPT_OK) | mutated(PROMPT_400) | _json, st.sampled_from([200, 400, 500, None]))
def test_prompt_answers(body, status):
    try:
        assert isinstance(parse_prompt_response(body, "a"), str)
    except ClusterError:
        pass
    error = workflow_error_from_rejection(ServerRejected("x", status=status, body=body, server="a"), "job")
    assert isinstance(error, WorkflowError) and isinstance(user_message(error), str)


class _Answers:
    """A connection whose every GET answers one given (decoded) body: the server's view of garbage."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.base_url = "http://127.0.0.1:1"
        self.name = "fuzz"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def get_json(self, path: str, params: Any = None, *, timeout: Any = None, job_id: Any = None) -> Any:
        return self.body

    def close(self) -> None:
        pass


@FUZZ
@given(mutated(PROMPT_STATUS) | mutated(SYSTEM_STATS) | mutated(QUEUE) | _json)
def test_a_server_answering_garbage_is_a_status_not_an_exception(body):
    server = ComfyUIServer(ServerConfig("fuzz", "127.0.0.1", 1), connection=_Answers(body))  # type: ignore[arg-type]
    snap = server.update_status(with_system_stats=True)
    assert isinstance(snap, ServerSnapshot)
    ok, sentence = server.test_connection()
    assert isinstance(ok, bool) and isinstance(sentence, str)
    try:
        running, pending = server.update_queue_detail()
        assert isinstance(running, list) and isinstance(pending, list)
    except ClusterError:
        pass
    try:
        assert isinstance(server.device_info(refresh=True), DeviceInfo)
    except ClusterError:
        pass


# --------------------------------------------------------------------------- websocket


def _use_event(event: ServerEvent) -> None:
    """What the pool and the dispatcher read from an event."""
    assert isinstance(event.type, EventType) and isinstance(event.data, dict)
    assert event.prompt_id is None or isinstance(event.prompt_id, str)
    remaining = event.queue_remaining
    assert remaining is None or (isinstance(remaining, int) and remaining >= 0)
    assert event.node is None or isinstance(event.node, str)
    assert isinstance(event.is_final, bool)
    if event.type is EventType.EXECUTED:
        files = outputs_from_node_output(str(event.data.get("node")), event.data.get("output"))
        assert all(isinstance(f.filename, str) for f in files)
    if event.type is EventType.EXECUTION_ERROR:
        error = workflow_error_from_execution(event.data, "a", "job")
        assert isinstance(user_message(error), str)


@FUZZ
@given(st.sampled_from(WS_FRAMES).flatmap(mutated).map(json.dumps) | _json.map(json.dumps) | _odd_text | st.binary())
def test_websocket_messages(text):
    event = parse_message("a", text, 0.0)
    if event is not None:
        _use_event(event)


@FUZZ
@given(st.sampled_from(WS_FRAMES).map(json.dumps), st.integers(0, 400), st.binary(max_size=8))
def test_truncated_and_garbled_websocket_frames(text, cut, garbage):
    # what the simulator's malformed_ws fault and a broken proxy do: cut a frame, append bytes
    for broken in (text[:cut], text[:cut] + garbage.decode("latin-1"), text[:cut] + "\x00garbage"):
        event = parse_message("a", broken, 0.0)
        if event is not None:
            _use_event(event)


# --------------------------------------------------------------------------- configuration


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "ip",
                    "port",
                    "token",
                    "headers",
                    "url",
                    "scheme",
                    "priority",
                    "enabled",
                    "dir_local",
                    "dir_remote",
                    "max_in_flight",
                ]
            ),
            _json,
            max_size=8,
        ),
        max_size=4,
    )
)
def test_configuration_entries(entries):
    servers, issues = parse_servers(json.dumps(entries))
    assert all(isinstance(s, ServerConfig) and 1 <= s.port <= 65535 for s in servers)
    assert all(i.level in ("error", "warning") for i in issues)
    # whatever was read can be written back and read again to the same servers
    again, issues2 = parse_servers(servers_to_json(servers))
    assert again == servers and not [i for i in issues2 if i.level == "error"]
    assert isinstance(redact(servers_to_json(servers)), str)


@FUZZ
@given(st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()))
def test_configuration_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "servers.json"
    path.write_bytes(data)
    try:
        servers, issues = import_config(path)
    except ConfigError:
        return
    assert all(isinstance(s, ServerConfig) for s in servers)
    load = load_config({"NUKE_COMFYUI_SERVERS": str(path)})
    assert load.servers and "\n" not in load.notice


@pytest.mark.timeout(30)
def test_pathologically_deep_documents_are_refused_not_crashed():
    deep = "[" * 200_000 + "]" * 200_000
    servers, issues = parse_servers(deep)
    assert servers == [] and issues[0].level == "error"
    assert parse_message("a", deep, 0.0) is None
    assert parse_message("a", '{"type": "status", "data": ' + deep + "}", 0.0) is None


# --------------------------------------------------------------------------- paths


@FUZZ
@given(_odd_text, _odd_text, _odd_text)
def test_path_mapping_is_total(path, dir_local, dir_remote):
    assert isinstance(to_remote(path, dir_local, dir_remote), str)
    assert isinstance(to_local(path, dir_local, dir_remote), str)
    assert isinstance(normalize(path), str)
    assert isinstance(is_under(path, dir_local), bool)


_NAMES = st.sampled_from(
    [
        "..",
        ".",
        "...",
        "../x",
        "/etc/passwd",
        "C:\\x",
        "C:x",
        "\\\\srv\\share\\x",
        "//srv/share/x",
        "a\x00b",
        "CON",
        "nul.png",
        "a:b",
        "x/../../y",
        "\u202egnp.exe",
        "\uff0e\uff0e",
        "a" * 300,
        "ok.png",
        "sub/ok.png",
    ]
)


@FUZZ
@given(_NAMES | _odd_text | st.none() | st.integers(), _NAMES | _odd_text)
def test_safe_join_never_leaves_its_folder(tmp_path_factory, subfolder, filename):
    folder = str(tmp_path_factory.mktemp("out"))
    try:
        path = safe_join(folder, subfolder, filename)
    except ClusterError:
        return
    real, base = os.path.realpath(path), os.path.realpath(folder)
    assert os.path.commonpath([real, base]) == base and real != base
    assert "\x00" not in path
