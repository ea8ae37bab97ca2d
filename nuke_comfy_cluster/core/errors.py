"""The one error tree of nuke_comfy_cluster.

::

    ClusterError                    root: every error the project raises on purpose
    +-- ConfigError                 bad configuration (carries the issues found)
    +-- ServerError                 something went wrong talking to one server
    |   +-- ServerUnavailable       connection refused / reset / DNS / websocket lost
    |   +-- ServerTimeout           connect or read timeout (the server may be hung)
    |   +-- ServerRejected          HTTP error status (4xx / 5xx) or a malformed body
    |       +-- MalformedResponse   a body not shaped as the protocol says (also a ValueError)
    +-- WorkflowError               ComfyUI refused or failed the workflow itself
    |                               (validation, execution_error): never retried elsewhere
    +-- NoServerAvailable           no enabled, online server could take the work
    +-- JobCancelled                the job or batch was cancelled by the user

Every error carries the server name, URL and job id where they are known, so one
helper (:func:`user_message`) can turn any of them into a sentence for an artist.
"""

from __future__ import annotations

from typing import Any, Optional


class ClusterError(Exception):
    """Root of every error the project raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        server: Optional[str] = None,
        url: Optional[str] = None,
        job_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.server = server
        self.url = url
        self.job_id = job_id

    def __str__(self) -> str:
        return self.message


class ConfigError(ClusterError):
    """The configuration cannot be used; ``issues`` lists what was found."""

    def __init__(self, message: str, issues: Any = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.issues = list(issues)


class ServerError(ClusterError):
    """Talking to one server failed: infrastructure, may be retried elsewhere."""

    #: True when the request may have reached the server (a POST that timed out
    #: may still run there: never blindly resend it).
    may_have_reached_server = False


class ServerUnavailable(ServerError):
    """Connection refused, reset, name not resolved, or websocket lost."""


class ServerTimeout(ServerError):
    """No answer in time: the server may be hung or overloaded."""

    may_have_reached_server = True


class ServerRejected(ServerError):
    """The server answered with an error status or a body we cannot read."""

    def __init__(self, message: str, *, status: Optional[int] = None, body: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.body = body

    @property
    def is_server_fault(self) -> bool:
        """5xx and unreadable bodies are infrastructure faults; 4xx are not."""
        return self.status is None or self.status >= 500

    @property  # type: ignore[override]
    def may_have_reached_server(self) -> bool:
        """Something answered, so the request got there; only a 4xx says it was refused unprocessed
        (a 2xx with a garbled body, or a proxy's 502/504, may hide a queued prompt)."""
        return self.status is None or not 400 <= self.status < 500


class MalformedResponse(ServerRejected, ValueError):
    """A server's answer (``/queue``, ``/history``, ``/prompt``...) is not shaped as the protocol says.

    Also a ValueError, so callers that parse with ``except ValueError`` keep working.
    """


class WorkflowError(ClusterError):
    """ComfyUI refused (validation) or failed (execution_error) the workflow."""

    def __init__(
        self,
        message: str,
        *,
        node_id: Optional[str] = None,
        node_type: Optional[str] = None,
        traceback: Optional[str] = None,
        details: Any = None,
        error_type: Optional[str] = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.node_id = node_id
        self.node_type = node_type
        self.traceback = traceback
        self.details = details
        #: ComfyUI's error type ("value_not_in_list", "invalid_prompt") or the exception's
        #: class ("torch.OutOfMemoryError"): what tells two servers' errors apart
        self.error_type = error_type


class NoServerAvailable(ClusterError):
    """No enabled, online server can take the work (or the pinned one is down)."""


class JobCancelled(ClusterError):
    """The job or batch was cancelled."""


def user_message(exc: BaseException) -> str:
    """One sentence for an artist, naming the server and what happened."""
    if isinstance(exc, WorkflowError):
        where = ""
        if exc.node_id or exc.node_type:
            where = " in node {}{}".format(exc.node_id or "?", f" ({exc.node_type})" if exc.node_type else "")
        server = f" on {exc.server}" if exc.server else ""
        return f"Workflow error{where}{server}: {exc.message}"
    if isinstance(exc, ClusterError):
        prefix = f"{exc.server}: " if exc.server and exc.server not in exc.message else ""
        return prefix + exc.message
    return f"Unexpected error: {type(exc).__name__}: {exc}"
