"""Sending one frame: ``POST /prompt`` with the attempt's marks, and what its answer means.

Each attempt carries a token in ``extra_data`` (and, through ``extra_pnginfo``, in
every PNG it saves), so a prompt can be told apart from every other attempt of the
same frame. A submit whose answer never came may still run: it is remembered as
an orphan (:mod:`.recovery`). A rejection is sorted into the workflow's fault
(ComfyUI's own validation answer) or the server's (:mod:`.triage`).

Mixed into the Dispatcher; the POST runs on an I/O worker, the rest on the loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Optional

from .delivery import prompt_digest
from .errors import ClusterError, ServerError, ServerRejected, ServerUnavailable, WorkflowError, user_message
from .jobs import Batch, Job, JobError
from .protocol import parse_prompt_response, workflow_error_from_rejection
from .recovery import _Orphan
from .server import ComfyUIServer
from .state import JobState
from .triage import REJECTION

log = logging.getLogger("nuke_comfy_cluster.core.dispatch")


def _comfy_rejection(body: Any) -> bool:
    """ComfyUI's own 4xx answer to ``POST /prompt`` (a validation error) carries ``error`` /
    ``node_errors``; a reverse proxy's 401/403/413 does not and is no fault of the workflow."""
    return isinstance(body, dict) and ("error" in body or "node_errors" in body)


class SubmitMixin:
    """Submitting, mixed into the Dispatcher (its state is made there)."""

    def _start_submit(self, batch: Batch, job: Job, server: ComfyUIServer) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %s -> %s (%s)", batch.name, job.label, server.name, self._why(batch, job, server.name))
        self._submitting[job.id] = job
        token = uuid.uuid4().hex
        with batch.lock:
            job.server = server.name
            job.attempts += 1
            job.attempt_token = token
        self._by_token[token] = (batch, job)
        self._touch(batch)
        prompt = job.prompt
        prepare = batch.prepare

        def work() -> None:
            requested_id = str(uuid.uuid4())
            sent_at = time.time()
            try:
                body_prompt = prepare(prompt, server) if prepare is not None else prompt
                digest = prompt_digest(body_prompt)
                marker = {"batch": batch.id, "job": job.id, "attempt": token}
                body = {
                    "prompt": body_prompt,
                    "client_id": self.pool.client_id,
                    "prompt_id": requested_id,  # newer ComfyUI honours it; 0.3.39 ignores it
                    # SaveImage writes extra_pnginfo into the PNG: each file names the attempt that made it
                    "extra_data": {
                        "ncc_job": job.id,
                        "ncc_attempt": token,
                        "ncc_batch": batch.id,
                        "extra_pnginfo": {"ncc": marker},
                    },
                }
                answer = server.connection.post_json("prompt", body, job_id=job.id)
                prompt_id = parse_prompt_response(answer, server.name)
            except Exception as e:  # noqa: BLE001 - every outcome goes back to the loop
                error = e
                self._call(lambda: self._submit_failed(batch, job, server, token, requested_id, error))
                return
            self._call(lambda: self._submitted(batch, job, server, token, prompt_id, sent_at, digest))

        self._io(work)

    def _submitted(
        self,
        batch: Batch,
        job: Job,
        server: ComfyUIServer,
        token: str,
        prompt_id: str,
        sent_at: float,
        digest: Optional[str] = None,
    ) -> None:
        self._submitting.pop(job.id, None)
        if job.attempt_token != token or job.state.finished:
            # cancelled (or otherwise resolved) while the POST was under way: remove it again
            self._orphans.append(_Orphan(server.name, token, prompt_id, time.monotonic()))
            self._check_orphans(server.name)
            return
        server.note_submitted(time.time())
        batch.evidence.accepted(server.name)
        with batch.lock:
            job.prompt_id = prompt_id
            job.sent_digest = digest
            job.state = JobState.SUBMITTED
            job.queued_at = sent_at
            job.last_news = time.monotonic()
        self._by_prompt[prompt_id] = (batch, job)
        self._touch(batch)
        if job.cancel_requested:
            self._io(lambda: self._cancel_on_server(batch, server, [job]))
            return
        for event in self._early.pop(prompt_id, []):
            self._handle_job_event(batch, job, event)

    def _submit_failed(
        self, batch: Batch, job: Job, server: ComfyUIServer, token: str, requested_id: str, exc: BaseException
    ) -> None:
        self._submitting.pop(job.id, None)
        self._by_token.pop(token, None)
        # no answer in time, or one we could not read: the prompt may be queued there all the same
        maybe_queued = isinstance(exc, ServerError) and exc.may_have_reached_server
        if job.cancel_requested:
            if maybe_queued:
                self._orphans.append(_Orphan(server.name, token, None, time.monotonic()))
            self._finish(batch, job, JobState.CANCELLED, JobError("cancelled", "cancelled by the user"))
            return
        if (
            isinstance(exc, ServerRejected)
            and exc.status is not None
            and 400 <= exc.status < 500
            and _comfy_rejection(exc.body)
        ):
            self._workflow_failed(batch, job, server.name, workflow_error_from_rejection(exc, job.id), REJECTION)
            return
        if isinstance(exc, WorkflowError):
            self._finish(batch, job, JobState.FAILED, JobError.from_exception(exc, server.name))
            return
        if maybe_queued:
            self._orphans.append(_Orphan(server.name, token, None, time.monotonic()))
        if isinstance(exc, ClusterError):
            reason = user_message(exc)
        else:
            log.error("submit of %s to %s failed unexpectedly", job.label, server.name, exc_info=exc)
            reason = f"{server.name}: unexpected {type(exc).__name__}: {exc}"
        if isinstance(exc, ServerError):
            server.record_failure(reason)
            if not isinstance(exc, ServerRejected):
                server.mark_unreachable(reason)
            if isinstance(exc, ServerUnavailable):
                # the prompt never got there: evidence against the server, not the frame. When
                # every server dies at once, refused submits must not use up the frame's attempts
                # (it would fail instead of waiting for a server to come back).
                with batch.lock:
                    job.attempts = max(0, job.attempts - 1)
        self._requeue(batch, job, server.name, reason)

    def _workflow_rejected(self, batch: Batch, job: Optional[Job], error: WorkflowError) -> None:
        """A validation error fails the same way on every frame: stop the batch, report once."""
        info = JobError.from_exception(error, error.server)
        if job is not None:
            self._finish(batch, job, JobState.FAILED, info)
        with batch.lock:
            batch.message = f"Workflow rejected: {user_message(error)}"
            for other in batch.jobs:
                if other.state is JobState.PENDING and other.id not in self._submitting:
                    other.state = JobState.FAILED
                    other.error = info
                    other.finished_at = time.time()
        self._touch(batch)
