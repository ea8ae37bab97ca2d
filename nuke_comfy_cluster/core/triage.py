"""Whose fault is a failed frame: the server's or the workflow's?

A ``400`` from ``POST /prompt`` or an ``execution_error`` on one server says little
alone: a box may lack a node or a model, or run out of memory, while the others
render the same workflow fine. The rules (issue 11), applied per batch:

- an error that every server able to run the batch returns identically is the
  workflow's: report it once (node id, type, message); servers left out on the way
  for that same error are readmitted (it was never theirs);
- a rejection (400) on a server while another server accepted this workflow is the
  server's: leave it out of the batch, send the frame elsewhere, say so once;
- an execution error on a server while another server rendered this workflow is
  the server's for that frame (the frame goes elsewhere); the second such failure
  leaves the server out of the batch (a small GPU out of memory is not fed every
  frame);
- without evidence either way yet (nobody else tried), the frame goes elsewhere and
  a rejecting server is held back until the next answer decides.

"Identically" compares :func:`error_signature`: ComfyUI's error type (or the
exception's class), node id, node class and the input named, never the free text
(an out-of-memory message carries sizes that differ between GPUs).

:func:`classify` is pure; :class:`BatchEvidence` keeps what each server did with one
batch and applies the verdicts. Both belong to the dispatcher's loop thread.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, Mapping, Optional, Set, Tuple

from .errors import WorkflowError, user_message

Signature = Tuple[str, str, str, str]

REJECTION = "rejection"  # 400 from POST /prompt with ComfyUI's error / node_errors
EXECUTION = "execution"  # execution_error (websocket or history)

#: execution failures of one kind on one server before it is left out of the batch
STRIKES_TO_LEAVE_OUT = 2


class Blame(str, enum.Enum):
    SERVER = "server"
    WORKFLOW = "workflow"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class Verdict:
    """What to do after a failure."""

    blame: Blame
    leave_out: bool  # stop sending this batch's frames to the server
    requeue: bool  # run the frame again on another server (False: the frame fails)
    message: str  # for the batch's log and message, once
    readmit: Tuple[str, ...] = ()  # servers left out for this same error: it was the workflow's


@dataclass
class ServerRecord:
    """What one server did with one batch's workflow."""

    accepted: int = 0  # POST /prompt answered with a prompt id
    succeeded: int = 0  # frames rendered
    failures: Dict[Signature, int] = field(default_factory=dict)


def _input_name(error: WorkflowError) -> str:
    body = error.details if isinstance(error.details, Mapping) else {}
    node_errors = body.get("node_errors")
    if not isinstance(node_errors, Mapping) or error.node_id is None:
        return ""
    entry = node_errors.get(error.node_id)
    errors = entry.get("errors") if isinstance(entry, Mapping) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
    extra = first.get("extra_info") if isinstance(first.get("extra_info"), Mapping) else {}
    name = extra.get("input_name")
    return str(name) if name is not None else ""


def describe(error: WorkflowError) -> str:
    """The error in a few words, without the server: ``<message> (node 2, ImageInvert)``."""
    where = ", ".join(x for x in (f"node {error.node_id}" if error.node_id else "", error.node_type or "") if x)
    return f"{error.message} ({where})" if where else error.message


def error_signature(error: WorkflowError) -> Signature:
    """What makes two servers' errors "the same" (free text only when there is no type)."""
    kind = error.error_type or error.message
    return (str(kind), error.node_id or "", error.node_type or "", _input_name(error))


def classify(
    server: str,
    signature: Signature,
    kind: str,
    records: Mapping[str, ServerRecord],
    candidates: Iterable[str],
    error_text: str = "",
) -> Verdict:
    """The verdict for ``server`` failing with ``signature`` (already counted in ``records``).

    ``candidates``: the servers that could run this batch now (enabled, reachable, compatible
    and not left out for another reason). Servers that already failed with the same signature
    count as tried whatever their state, so a down server never delays a verdict it cannot change.
    """
    returned = {name for name, r in records.items() if r.failures.get(signature)}
    returned.add(server)
    able = set(candidates) | returned
    text = error_text or signature[0]
    others = [r for name, r in records.items() if name != server]
    if able <= returned:
        readmit = tuple(sorted(returned - {server}))
        return Verdict(Blame.WORKFLOW, False, False, text, readmit)
    if kind == REJECTION:
        if any(r.accepted or r.succeeded for r in others):
            return Verdict(
                Blame.SERVER,
                True,
                True,
                f"{server} left out of this batch: {text} (other servers accept this workflow)",
            )
        return Verdict(Blame.UNDECIDED, True, True, f"{server} refused the workflow: {text}; trying another server")
    strikes = records[server].failures.get(signature, 0) if server in records else 1
    leave = strikes >= STRIKES_TO_LEAVE_OUT
    if any(r.succeeded for r in others):
        if leave:
            message = f"{server} left out of this batch after {strikes} failures the other servers do not have: {text}"
        else:
            message = f"{server} failed a frame that other servers render ({text}); trying it elsewhere"
        return Verdict(Blame.SERVER, leave, True, message)
    if leave:
        return Verdict(Blame.UNDECIDED, True, True, f"{server} held back after {strikes} failures ({text})")
    return Verdict(Blame.UNDECIDED, False, True, f"{server} failed a frame ({text}); trying another server")


class BatchEvidence:
    """What each server did with one batch, and the servers left out of it (with why)."""

    def __init__(self) -> None:
        self.records: Dict[str, ServerRecord] = {}
        #: server -> the sentence saying why it is left out of this batch
        self.left_out: Dict[str, str] = {}
        self._left_for: Dict[str, Optional[Signature]] = {}

    def _record(self, server: str) -> ServerRecord:
        return self.records.setdefault(server, ServerRecord())

    def accepted(self, server: str) -> None:
        self._record(server).accepted += 1

    def succeeded(self, server: str) -> None:
        self._record(server).succeeded += 1

    def leave_out(self, server: str, reason: str) -> None:
        """Leave a server out for a reason found elsewhere (e.g. incompatible: compatibility.py)."""
        self.left_out[server] = reason
        self._left_for[server] = None

    def failed(self, server: str, error: WorkflowError, kind: str, candidates: Iterable[str]) -> Verdict:
        """Count a workflow failure on ``server`` and apply the verdict to :attr:`left_out`."""
        signature = error_signature(error)
        record = self._record(server)
        record.failures[signature] = record.failures.get(signature, 0) + 1
        able = [c for c in candidates if c not in self.left_out or self._left_for.get(c) == signature]
        verdict = classify(server, signature, kind, self.records, able, describe(error))
        if verdict.leave_out:
            self.left_out[server] = f"{server}: {describe(error)}"
            self._left_for[server] = signature
        for name in verdict.readmit:
            if self._left_for.get(name) == signature:
                self.left_out.pop(name, None)
                self._left_for.pop(name, None)
        if verdict.blame is Blame.WORKFLOW:
            others = [reason for name, reason in self.left_out.items() if name != server]
            if others:  # each server fails in its own way: nobody can run it, say every reason
                message = "No server can run this workflow: " + "; ".join([f"{server}: {describe(error)}"] + others)
            else:
                message = user_message(error)
            verdict = replace(verdict, message=message)
        return verdict

    def usable(self, servers: Iterable[str]) -> Set[str]:
        """The ``servers`` not left out of this batch."""
        return {s for s in servers if s not in self.left_out}

    def summary(self, total: int) -> str:
        """``rendering on 2 of 3 servers: gpu3 left out ...`` (empty when none is left out)."""
        if not self.left_out:
            return ""
        used = max(0, total - len(self.left_out))
        return f"rendering on {used} of {total} servers: " + "; ".join(self.left_out.values())

    def to_json(self) -> Dict[str, Any]:
        return {
            "left_out": dict(self.left_out),
            "servers": {
                name: {"accepted": r.accepted, "succeeded": r.succeeded, "failures": sum(r.failures.values())}
                for name, r in self.records.items()
            },
        }
