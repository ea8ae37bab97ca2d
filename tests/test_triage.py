"""Whose fault is a failure: the classifier's rules, and the errors it reads (real 400 bodies)."""

from __future__ import annotations

import json

import pytest

from nuke_comfy_cluster.core.errors import ServerRejected, WorkflowError, user_message
from nuke_comfy_cluster.core.protocol import workflow_error_from_execution, workflow_error_from_rejection
from nuke_comfy_cluster.core.triage import (
    EXECUTION,
    REJECTION,
    BatchEvidence,
    Blame,
    error_signature,
)


def rejection(capture_dir, name, server="gpu1"):
    body = json.loads((capture_dir / name).read_text())["body_json"]
    return workflow_error_from_rejection(ServerRejected("400", status=400, body=body, server=server))


def missing_node(server):
    body = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node ControlNetApplyAdvanced does not exist.",
            "details": "Node ID '#12'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    return workflow_error_from_rejection(ServerRejected("400", status=400, body=body, server=server))


def oom(server, size="2.00 GiB"):
    data = {
        "prompt_id": "p",
        "node_id": "5",
        "node_type": "KSampler",
        "exception_type": "torch.OutOfMemoryError",
        "exception_message": f"CUDA out of memory. Tried to allocate {size}",
        "traceback": ["  File x\n"],
    }
    return workflow_error_from_execution(data, server)


# -- the node id ComfyUI gives is kept ------------------------------------------------------


def test_missing_class_keeps_node_id_and_type(captures):
    error = rejection(captures, "post_prompt_error_invalid_class.json")
    assert (error.node_id, error.node_type, error.error_type) == ("2", "NoSuchNodeClass", "invalid_prompt")
    assert "Node ID" not in error.message and "NoSuchNodeClass does not exist" in error.message
    assert user_message(error).startswith("Workflow error in node 2 (NoSuchNodeClass) on gpu1")


def test_node_errors_keep_node_type_and_input(captures):
    error = rejection(captures, "post_prompt_error_invalid_input.json")
    assert (error.node_id, error.node_type, error.error_type) == ("1", "EmptyImage", "value_smaller_than_min")
    assert error_signature(error) == ("value_smaller_than_min", "1", "EmptyImage", "height")
    error = rejection(captures, "post_prompt_error_missing_file_loadimage.json")
    assert (error.node_id, error.node_type) == ("1", "LoadImage")


def test_top_level_errors_without_a_node(captures):
    error = rejection(captures, "post_prompt_error_no_outputs.json")
    assert error.node_id is None and error.error_type == "prompt_no_outputs"


def test_first_node_error_in_number_order():
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {
            "10": {"errors": [{"type": "value_not_in_list", "message": "Value not in list"}], "class_type": "B"},
            "2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list"}], "class_type": "A"},
        },
    }
    error = workflow_error_from_rejection(ServerRejected("400", status=400, body=body))
    assert (error.node_id, error.node_type) == ("2", "A")


def test_execution_signature_ignores_the_free_text():
    assert error_signature(oom("a", "2.00 GiB")) == error_signature(oom("b", "512 MiB"))
    assert error_signature(oom("a"))[0] == "torch.OutOfMemoryError"


# -- the rules --------------------------------------------------------------------------------

SERVERS = ["gpu1", "gpu2", "gpu3"]


def test_rejection_where_others_accept_is_the_servers():
    ev = BatchEvidence()
    ev.accepted("gpu1")
    ev.accepted("gpu2")
    verdict = ev.failed("gpu3", missing_node("gpu3"), REJECTION, SERVERS)
    assert verdict.blame is Blame.SERVER and verdict.leave_out and verdict.requeue
    assert "gpu3" in ev.left_out and "ControlNetApplyAdvanced" in ev.left_out["gpu3"]
    assert ev.usable(SERVERS) == {"gpu1", "gpu2"}
    assert ev.summary(3).startswith("rendering on 2 of 3 servers: gpu3: ")


def test_rejection_without_evidence_holds_the_server_and_tries_another():
    ev = BatchEvidence()
    verdict = ev.failed("gpu1", missing_node("gpu1"), REJECTION, SERVERS)
    assert verdict.blame is Blame.UNDECIDED and verdict.requeue and verdict.leave_out
    ev.accepted("gpu2")  # the next server takes it: gpu1 stays out
    assert "gpu1" in ev.left_out


def test_identical_rejection_everywhere_is_the_workflows_and_readmits():
    ev = BatchEvidence()
    first = ev.failed("gpu1", missing_node("gpu1"), REJECTION, SERVERS)
    second = ev.failed("gpu2", missing_node("gpu2"), REJECTION, SERVERS)
    assert first.blame is second.blame is Blame.UNDECIDED
    verdict = ev.failed("gpu3", missing_node("gpu3"), REJECTION, SERVERS)
    assert verdict.blame is Blame.WORKFLOW and not verdict.requeue and not verdict.leave_out
    assert set(verdict.readmit) == {"gpu1", "gpu2"} and not ev.left_out
    assert "node 12 (ControlNetApplyAdvanced)" in verdict.message


def test_frame_specific_rejection_after_others_accepted_other_frames():
    # frame 5's input is broken everywhere: the servers it visits are left out on the way,
    # and come back once the last one says the same
    ev = BatchEvidence()
    for s in SERVERS:
        ev.accepted(s)
    assert ev.failed("gpu1", missing_node("gpu1"), REJECTION, SERVERS).blame is Blame.SERVER
    assert ev.failed("gpu2", missing_node("gpu2"), REJECTION, SERVERS).blame is Blame.SERVER
    verdict = ev.failed("gpu3", missing_node("gpu3"), REJECTION, SERVERS)
    assert verdict.blame is Blame.WORKFLOW and set(verdict.readmit) == {"gpu1", "gpu2"}
    assert not ev.left_out


def test_single_server_error_is_the_workflows_at_once():
    ev = BatchEvidence()
    assert ev.failed("gpu1", missing_node("gpu1"), REJECTION, ["gpu1"]).blame is Blame.WORKFLOW
    ev = BatchEvidence()
    assert ev.failed("gpu1", oom("gpu1"), EXECUTION, ["gpu1"]).blame is Blame.WORKFLOW


def test_down_servers_do_not_delay_the_verdict():
    # gpu3 is down (not a candidate): gpu1 and gpu2 failing identically decides
    ev = BatchEvidence()
    ev.failed("gpu1", missing_node("gpu1"), REJECTION, ["gpu1", "gpu2"])
    assert ev.failed("gpu2", missing_node("gpu2"), REJECTION, ["gpu2"]).blame is Blame.WORKFLOW


def test_recurring_execution_error_leaves_the_server_out_after_the_second():
    ev = BatchEvidence()
    ev.succeeded("gpu1")
    ev.succeeded("gpu2")
    first = ev.failed("gpu3", oom("gpu3", "1 GiB"), EXECUTION, SERVERS)
    assert first.blame is Blame.SERVER and first.requeue and not first.leave_out
    assert "gpu3" not in ev.left_out
    second = ev.failed("gpu3", oom("gpu3", "3 GiB"), EXECUTION, SERVERS)
    assert second.blame is Blame.SERVER and second.leave_out and second.requeue
    assert ev.usable(SERVERS) == {"gpu1", "gpu2"}


def test_execution_error_everywhere_is_the_workflows():
    ev = BatchEvidence()
    verdicts = [ev.failed(s, oom(s), EXECUTION, SERVERS) for s in SERVERS]
    assert [v.blame for v in verdicts] == [Blame.UNDECIDED, Blame.UNDECIDED, Blame.WORKFLOW]
    assert verdicts[-1].message.startswith("Workflow error in node 5 (KSampler)")


def test_different_errors_are_not_the_same_error():
    ev = BatchEvidence()
    ev.failed("gpu1", missing_node("gpu1"), REJECTION, ["gpu1", "gpu2"])
    other = WorkflowError("boom", node_id="3", node_type="X", error_type="value_not_in_list", server="gpu2")
    assert error_signature(other) != error_signature(missing_node("gpu1"))
    verdict = ev.failed("gpu2", other, REJECTION, ["gpu1", "gpu2"])
    # nobody can run it, each for its own reason: the batch fails with every reason, nobody readmitted
    assert verdict.blame is Blame.WORKFLOW and verdict.readmit == () and "gpu1" in ev.left_out
    assert verdict.message.startswith("No server can run this workflow: gpu2: boom (node 3, X); gpu1: ")


@pytest.mark.parametrize("kind", [REJECTION, EXECUTION])
def test_left_out_for_another_reason_is_not_a_candidate(kind):
    ev = BatchEvidence()
    ev.leave_out("gpu3", "gpu3: no node ControlNetApplyAdvanced")
    error = missing_node if kind == REJECTION else oom
    ev.failed("gpu1", error("gpu1"), kind, SERVERS)
    verdict = ev.failed("gpu2", error("gpu2"), kind, SERVERS)
    assert verdict.blame is Blame.WORKFLOW and "gpu3" in ev.left_out
