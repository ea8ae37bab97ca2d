"""Reading ComfyUI's answers to ``POST /prompt`` and ``execution_error`` into our errors."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from .errors import ServerRejected, WorkflowError


def parse_prompt_response(body: Any, server: str) -> str:
    """200 ``{"prompt_id", "number", "node_errors"}`` -> the prompt id."""
    if not isinstance(body, dict) or not isinstance(body.get("prompt_id"), str) or not body["prompt_id"]:
        raise ServerRejected(f"{server}: POST /prompt answered without a prompt_id", body=body, server=server)
    return body["prompt_id"]


_NODE_ID = re.compile(r"Node ID '#([^']+)'")
_MISSING_CLASS = re.compile(r"Cannot execute because node (.+) does not exist\.?$")


def _node_order(node_id: Any) -> Tuple[int, Any]:
    """Numeric node ids in number order ("2" before "10"), others after, by text."""
    text = str(node_id)
    return (0, int(text)) if text.isdigit() else (1, text)


def workflow_error_from_rejection(exc: ServerRejected, job_id: Optional[str] = None) -> WorkflowError:
    """A 400 from ``POST /prompt``: the first node error (node, class, message) or the top error.

    A top-level error names its node only inside ``details`` (``"Node ID '#2'"``, for a
    missing class or a node without ``class_type``): the id and the class are read from
    there so the user is told which node."""
    body = exc.body if isinstance(exc.body, dict) else {}
    top = body.get("error") if isinstance(body.get("error"), dict) else {}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    for node_id in sorted(node_errors, key=_node_order):
        entry = node_errors[node_id]
        if not isinstance(entry, dict):
            continue
        errors = entry.get("errors") if isinstance(entry.get("errors"), list) else []
        first: Dict[str, Any] = errors[0] if errors and isinstance(errors[0], dict) else {}
        message = str(first.get("message", "invalid"))
        details = first.get("details")
        if details:
            message = f"{message}: {details}"
        return WorkflowError(
            f"ComfyUI rejected the workflow: {message}",
            node_id=str(node_id),
            node_type=str(entry.get("class_type", "")) or None,
            details=body,
            server=exc.server,
            url=exc.url,
            job_id=job_id,
            error_type=str(first.get("type") or top.get("type") or "") or None,
        )
    message = str(top.get("message") or "invalid prompt")
    details = top.get("details")
    node_id: Optional[str] = None
    node_type: Optional[str] = None
    found = _NODE_ID.search(details) if isinstance(details, str) else None
    if found:
        node_id = found.group(1)
        missing = _MISSING_CLASS.search(message)
        node_type = missing.group(1) if missing else None
        details = None  # said by node_id now, not "Node ID '#2'" in the sentence
    if details:
        message = f"{message}: {details}"
    return WorkflowError(
        f"ComfyUI rejected the workflow: {message}",
        node_id=node_id,
        node_type=node_type,
        details=body,
        server=exc.server,
        url=exc.url,
        job_id=job_id,
        error_type=str(top.get("type") or "") or None,
    )


def workflow_error_from_execution(data: Dict[str, Any], server: str, job_id: Optional[str] = None) -> WorkflowError:
    """``execution_error`` data (websocket or history messages) -> WorkflowError."""
    exc_type = data.get("exception_type") or ""
    message = str(data.get("exception_message") or "execution failed").strip()
    if exc_type:
        message = f"{exc_type}: {message}"
    tb = data.get("traceback")
    if isinstance(tb, list):
        tb = "".join(str(line) for line in tb)
    return WorkflowError(
        message,
        node_id=None if data.get("node_id") is None else str(data.get("node_id")),
        node_type=None if data.get("node_type") is None else str(data.get("node_type")),
        traceback=tb if isinstance(tb, str) else None,
        details=data,
        server=server,
        job_id=job_id,
        error_type=str(exc_type) or None,
    )
