"""The dispatcher's result side: collect an attempt's files, check them, rename them into the
sequence; a local write failure stops the batch once (see :mod:`.delivery` for the rules)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional

from .delivery import (
    LocalWriteError,
    SuspectResult,
    frame_file,
    free_bytes,
    move_into_sequence,
    pattern_for,
    remove_tree,
    staging_dir,
    stem_for,
)
from .errors import (
    ClusterError,
    user_message,
)
from .jobs import Batch, Job, JobError, OutputFile
from .node_timing import split_times
from .results import (
    collect_attempt,
    history_outputs,
    parse_history_entry,
)
from .server import ComfyUIServer
from .state import JobState

log = logging.getLogger("nuke_comfy_cluster.core.dispatch")

#: renders of one frame lost to a file-name clash on a shared folder before they count as failed attempts
MAX_COLLISIONS = 8


class DeliveryMixin:
    """Mixed into the Dispatcher; runs on its loop thread (network work through ``_io``)."""

    def _succeeded(self, batch: Batch, job: Job, entry: Optional[Dict[str, Any]] = None) -> None:
        """Collect outputs (history when events were missed), make them local, then DONE."""
        if job.state.finished or ("complete", job.id) in self._busy:
            return
        server = self.pool.get_server_by_name(job.server or "")
        if server is None:
            return
        self._busy.add(("complete", job.id))
        if job.server_done_mono is None:
            # the server is free now, whatever the download takes: learn and plan from this instant
            job.server_done_mono = time.monotonic()
            sched = self._schedulers.get(batch.id)
            if sched is not None:
                started_at = job.started_mono if job.started_mono is not None else job.server_done_mono
                setup_s, cold = split_times(
                    job.node_marks, job.ended_at or time.time(), batch.static_nodes, job.cached_nodes
                )
                sched.job_finished(server.name, started_at, job.server_done_mono, setup_s=setup_s, cold=cold)
                if cold:
                    batch.loads[server.name] = batch.loads.get(server.name, 0.0) + (setup_s or 0.0)
                    batch.load_counts[server.name] = batch.load_counts.get(server.name, 0) + 1
                    log.info(
                        "%s: %s loaded the models for %s (%.1f s)", batch.name, server.name, job.label, setup_s or 0.0
                    )
        token = job.attempt_token or ""
        outputs = list(job.outputs)
        prompt_id = job.prompt_id or ""
        started = job.started_mono
        digest = job.sent_digest
        # a private folder per attempt: another frame's file of the same name can never land here
        staging = staging_dir(self._output_dir(batch), batch.id, job.id, token)

        def work() -> None:
            local: List[OutputFile] = []
            error: Optional[BaseException] = None
            try:
                files = outputs
                if entry is not None:
                    files = history_outputs(entry)
                elif not files:
                    body = server.connection.get_json(f"history/{prompt_id}")
                    got = parse_history_entry(body, prompt_id)
                    files = history_outputs(got) if got else []
                local = collect_attempt(server, files, staging, digest, in_place=not batch.output_dir)
            except (ClusterError, ValueError, OSError) as e:
                error = e
                remove_tree(staging)

            def done() -> None:
                self._busy.discard(("complete", job.id))
                if job.attempt_token != token or job.state.finished:
                    self.ignored_late_results += 1
                    remove_tree(staging)
                    return
                if isinstance(error, LocalWriteError):
                    self._local_failure(batch, job, str(error))
                elif isinstance(error, SuspectResult):
                    if not error.collision:
                        server.record_failure(f"{server.name}: {error}")  # it sent garbage, not a clash of names
                    elif job.collisions < MAX_COLLISIONS:
                        # two servers saved the same name into one folder at once: neither the
                        # frame's nor the server's fault, so it does not use up an attempt
                        job.collisions += 1
                        job.attempts = max(0, job.attempts - 1)
                    self._requeue(batch, job, server.name, f"{server.name}: {error}")
                elif error is not None:
                    reason = f"{server.name}: could not fetch the result: {error}"
                    self._requeue(batch, job, server.name, reason)
                else:
                    self._complete(batch, job, server, local, started, staging)

            self._call(done)

        self._io(work)

    def _complete(
        self,
        batch: Batch,
        job: Job,
        server: ComfyUIServer,
        files: List[OutputFile],
        started: Optional[float],
        staging: str,
    ) -> None:
        """Rename the attempt's checked files into the sequence; DONE only once they are there."""
        now = time.monotonic()
        if not files and batch.output_dir:
            remove_tree(staging)
            self._requeue(batch, job, server.name, f"{server.name}: {job.label} finished without saving an image")
            return
        folder = self._output_dir(batch)
        name = batch.sequence_name or "result"
        delivered: List[OutputFile] = []
        per_node: Dict[str, int] = {}
        try:
            for out in files:
                k = per_node.get(out.node, 0)
                per_node[out.node] = k + 1
                if not (out.local_path or "").startswith(staging):
                    delivered.append(out)  # checked in place on the shared drive (no output folder asked for)
                    continue
                label = batch.labels.get(out.node, f"n{out.node}")
                stem = stem_for(name, label, k, job.iteration)
                ext = os.path.splitext(out.filename)[1].lower() or ".png"
                target = frame_file(folder, stem, job.frame if job.frame is not None else 1, ext)
                move_into_sequence(out.local_path or "", target)
                delivered.append(
                    OutputFile(
                        out.node, out.filename, out.subfolder, out.type, target, pattern_for(folder, stem, ext), label
                    )
                )
        except LocalWriteError as e:
            remove_tree(staging)
            self._local_failure(batch, job, str(e))
            return
        finally:
            remove_tree(staging)
        with batch.lock:
            job.outputs = delivered
            job.progress_value = job.progress_max = 1.0
        self._warn_if_short_of_space(batch, folder, delivered)
        done = job.server_done_mono if job.server_done_mono is not None else now
        server.record_success((done - started) if started is not None else None)
        batch.evidence.succeeded(server.name)
        self._finish(batch, job, JobState.DONE)

    def _warn_if_short_of_space(self, batch: Batch, folder: str, delivered: List[OutputFile]) -> None:
        if getattr(batch, "_space_checked", False):
            return
        batch._space_checked = True  # type: ignore[attr-defined]  # noqa: SLF001 - once per batch
        size = 0
        for out in delivered:
            try:
                size += os.path.getsize(out.local_path or "")
            except OSError:
                pass
        free = free_bytes(folder)
        left = sum(1 for j in batch.jobs if not j.state.finished)
        if free is not None and size and size * left > free:
            batch.message = "Warning: {} holds {:.0f} MB free; the {} frames left need about {:.0f} MB".format(
                folder, free / 1e6, left, size * left / 1e6
            )
            log.warning("%s: %s", batch.name, batch.message)

    def _withdraw_queued(self, batch: Batch) -> None:
        """Delete this batch's prompts still waiting in server queues (running ones finish)."""
        per_server: Dict[str, List[str]] = {}
        for b, j in list(self._by_token.values()):
            if b is batch and j.state is JobState.SUBMITTED and j.prompt_id and j.server:
                per_server.setdefault(j.server, []).append(j.prompt_id)
                self._finish(batch, j, JobState.PENDING)  # back to waiting: failed below with the rest
        for name, ids in per_server.items():
            server = self.pool.get_server_by_name(name)
            if server is None:
                continue

            def work(s: ComfyUIServer = server, doomed: List[str] = ids) -> None:
                try:
                    s.connection.post_json("queue", {"delete": doomed})
                except ClusterError as e:
                    log.warning("could not withdraw queued prompts from %s: %s", s.name, user_message(e))

            self._io(work)

    def _local_failure(self, batch: Batch, job: Job, message: str) -> None:
        """A result could not be written HERE: no server's fault, nothing more is sent.

        Frames already running finish and are delivered if the folder works again; the
        waiting ones fail once, with the path and the error, and Retry failed resumes them.
        """
        if batch.local_error is None:
            batch.local_error = message
            self._withdraw_queued(batch)
        # one error for the batch (the first), so it is reported once
        error = JobError("local", f"could not write the result: {batch.local_error}")
        self._finish(batch, job, JobState.FAILED, error)
        with batch.lock:
            message = batch.local_error
            batch.message = (
                f"Stopped sending frames: could not write the result ({message}). Frames already delivered are "
                "kept; fix the output folder, then use Retry failed."
            )
            for other in batch.jobs:
                if other.state is JobState.PENDING and other.id not in self._submitting:
                    other.state = JobState.FAILED
                    other.error = error
                    other.finished_at = time.time()
        self._touch(batch)
