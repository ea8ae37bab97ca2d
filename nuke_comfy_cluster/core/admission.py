"""The dispatcher's batch admission: which servers may run a batch (compatibility before
sending, triage of failures after), and what is kept of it (ledger, learned costs)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional

from . import compatibility
from .cost_store import server_identity
from .errors import (
    ClusterError,
    WorkflowError,
    user_message,
)
from .jobs import Batch, Job, JobError
from .ledger_records import record_for, update_for
from .state import JobState
from .triage import REJECTION, Blame

log = logging.getLogger("nuke_comfy_cluster.core.dispatch")


def _fingerprint(batch: Batch) -> str:
    """Batches of the same workflow shape share speed estimates (frame tokens and seeds aside)."""
    prompt = batch.jobs[0].prompt if batch.jobs else {}
    shape = sorted((str(k), str(v.get("class_type", ""))) for k, v in prompt.items() if isinstance(v, dict))
    return json.dumps(shape)


def _the_workflows(error: WorkflowError, message: str) -> WorkflowError:
    """The error as the workflow's, named once: no "on gpu3" when every server said the same."""
    text = error.message if message == user_message(error) else message
    return WorkflowError(
        text,
        node_id=error.node_id,
        node_type=error.node_type,
        traceback=error.traceback,
        details=error.details,
        error_type=error.error_type,
        job_id=error.job_id,
    )


class AdmissionMixin:
    """Mixed into the Dispatcher; runs on its loop thread (network work through ``_io``)."""

    def _check_compatibility(self, batch: Batch) -> None:
        """Before anything is sent: which servers lack a node or a model this workflow needs.

        Runs off the loop (``/object_info/{class}`` per class the workflow uses, cached per
        server); the batch waits for the answer, at most the check's deadline.
        """
        batch.left_out = batch.evidence.left_out
        workflow = batch.workflow if batch.workflow is not None else (batch.jobs[0].prompt if batch.jobs else None)
        names = [batch.pinned] if batch.pinned else [s.name for s in self.pool.server_snapshots() if s.enabled]
        servers = [s for s in (self.pool.get_server_by_name(n) for n in names) if s is not None]
        if not workflow or not servers:
            return
        batch.checking = True

        def work() -> None:
            try:
                results = compatibility.check_servers(servers, workflow)
                error: Optional[BaseException] = None
            except (ClusterError, ValueError) as e:
                results, error = {}, e

            def done() -> None:
                batch.checking = False
                if error is not None:
                    log.warning("%s: compatibility check failed: %s", batch.name, error)
                self._compatibility_known(batch, results)

            self._call(done)

        self._io(work)

    def _compatibility_known(self, batch: Batch, results: Dict[str, Any]) -> None:
        for name, reasons in compatibility.left_out(results).items():
            batch.evidence.leave_out(name, "; ".join(reasons) or f"{name}: cannot run this workflow")
        failure = compatibility.no_server_error(results)
        if failure is not None:
            # nothing was sent: fail every frame now, with every server's reason
            self._workflow_rejected(batch, None, failure)
            return
        text = compatibility.summary(results)
        if text:
            batch.message = text[0].upper() + text[1:]
            log.warning("%s: %s", batch.name, text)
        self._touch(batch)

    def _candidates(self, batch: Batch) -> List[str]:
        """Servers that could run this batch now: enabled, available, not left out."""
        now = time.time()
        names = [batch.pinned] if batch.pinned else None
        return [
            s.name
            for s in self.pool.server_snapshots()
            if (names is None or s.name in names) and s.is_available(now) and s.name not in batch.left_out
        ]

    def _workflow_failed(self, batch: Batch, job: Job, server: str, error: WorkflowError, kind: str) -> None:
        """A rejection or an execution error: the server's problem or the workflow's? (triage.py)"""
        verdict = batch.evidence.failed(server, error, kind, self._candidates(batch))
        if verdict.blame is Blame.WORKFLOW:
            if kind == REJECTION:
                self._workflow_rejected(batch, job, _the_workflows(error, verdict.message))
            else:
                self._finish(batch, job, JobState.FAILED, JobError.from_exception(error, server))
            return
        if verdict.message and batch.message != verdict.message:
            log.warning("%s: %s", batch.name, verdict.message)
        if verdict.blame is Blame.SERVER:
            with batch.lock:
                job.attempts = max(0, job.attempts - 1)  # the server's fault, not the frame's
        self._requeue(batch, job, server, verdict.message)
        summary = batch.evidence.summary(len(self.pool.servers))
        batch.message = summary[0].upper() + summary[1:] if summary else verdict.message

    def _keep_in_ledger(self, batch: Batch) -> None:
        if self.ledger is None or batch.ledger_writer is not None:
            return
        try:
            batch.ledger_writer = self.ledger.create(
                record_for(batch, options=batch.ledger_options, client_id=self.pool.client_id)
            )
        except (ClusterError, ValueError, OSError) as e:
            # the batch still runs; it just cannot be resumed by another process
            log.warning("%s: not kept in the batch ledger: %s", batch.name, e)

    def _record(self, batch: Batch) -> None:
        """Write the jobs that changed since the last write (one journal write for all)."""
        writer = batch.ledger_writer
        if writer is None:
            return
        changed = []
        for index, job in enumerate(batch.jobs):
            if job.ledger_dirty:
                job.ledger_dirty = False
                changed.append(update_for(job, index))
        if changed:
            writer.record_jobs(changed)

    def _identities(self) -> Dict[str, str]:
        return {
            s.name: server_identity(s.url, s.device.name, s.device.vram_total, s.device.comfyui_version)
            for s in self.pool.server_snapshots()
        }

    def _keep_costs(self, batch: Batch) -> None:
        sched = self._schedulers.get(batch.id)
        if self.cost_store is None or sched is None:
            return
        costs = sched.costs()
        if costs:
            self.cost_store.save(_fingerprint(batch), costs, self._identities())
