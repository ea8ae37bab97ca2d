from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from nuke_comfy_cluster.core.events import EventType, parse_message
from tests.conftest import protocol_dir


def test_every_captured_frame_parses():
    seen = set()
    for path in sorted((protocol_dir() / "captures").glob("ws_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("frame") != "text":
                continue
            event = parse_message("a", json.dumps(record["msg"]), 0.0)
            assert event is not None, (path.name, line)
            seen.add(event.type)
    assert {EventType.STATUS, EventType.EXECUTION_START, EventType.EXECUTED, EventType.EXECUTION_SUCCESS,
            EventType.EXECUTION_ERROR, EventType.EXECUTION_INTERRUPTED, EventType.PROGRESS} <= seen


def test_status_queue_remaining_and_prompt_id():
    e = parse_message("a", '{"type":"status","data":{"status":{"exec_info":{"queue_remaining":3}}}}', 1.0)
    assert e.type is EventType.STATUS and e.queue_remaining == 3 and e.prompt_id is None
    e = parse_message("a", '{"type":"executing","data":{"node":"2","prompt_id":"p"}}', 1.0)
    assert e.prompt_id == "p" and e.node == "2" and not e.is_final


def test_bad_queue_values_are_not_trusted():
    for value in ('-1', '"3"', 'true', 'null', '1.5'):
        e = parse_message("a", '{"type":"status","data":{"status":{"exec_info":{"queue_remaining":%s}}}}' % value, 0)
        assert e.queue_remaining is None


@given(st.one_of(st.text(), st.binary(), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
    lambda c: st.one_of(st.lists(c), st.dictionaries(st.text(), c)), max_leaves=20).map(json.dumps)))
def test_parse_never_raises(text):
    event = parse_message("a", text, 0.0)
    if event is not None:
        assert event.queue_remaining is None or event.queue_remaining >= 0
        assert event.node is None or isinstance(event.node, str)
