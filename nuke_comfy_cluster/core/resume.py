"""Resuming a batch from the ledger: keep what was delivered, re-attach what still runs.

A batch whose client died (Nuke crashed, SIGKILL, a reboot) is rebuilt from its
ledger record with the same batch and job ids, so the prompts it left on servers
(``extra_data.ncc_job``) are still recognised as its own:

- a frame recorded DONE whose files are still there, readable and made by this
  batch (the ``ncc`` marker ComfyUI embeds in the PNG) stays done, not re-rendered;
- a prompt recorded as sent is re-attached by its prompt id; the dispatcher asks
  ``/queue`` and ``/history`` what became of it, collects its result when it
  finished, follows it when it runs, and sends the frame again only when it was lost
  (a server restart empties queue and history);
- a prompt sent just before the crash whose answer never reached the ledger is
  found in the servers' queues by its job marker and re-attached the same way;
- everything else waits to be sent.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Tuple

from .delivery import SuspectResult, _png_text, verify_file
from .errors import ClusterError, ConfigError
from .jobs import Job, OutputFile, PromptFactory
from .ledger_records import LedgerBatch
from .ledger_records import SubmitOptions as LedgerOptions
from .server import parse_queue
from .state import JobState
from .templating import frame_prompt, seeded_prompt

log = logging.getLogger(__name__)

_FRAME_IN_NAME = re.compile(r"^(?P<stem>.+)\.(?P<frame>-?\d+)(?P<ext>\.[^.]+)$")


def prompt_factory(workflow: Dict[str, Any], options: LedgerOptions) -> PromptFactory:
    """How the batch's prompts were made, from the options the ledger kept."""
    seed = options.seed
    if options.iterations is not None:
        frame = options.frame
        base = frame_prompt(workflow, frame) if frame is not None else workflow

        def iteration(job: Job) -> Dict[str, Any]:
            return seeded_prompt(base, seed or 0, frame, job.iteration or 0)

        return iteration
    if options.frames is not None:

        def per_frame(job: Job) -> Dict[str, Any]:
            prompt = frame_prompt(workflow, job.frame)
            return seeded_prompt(prompt, seed, job.frame, 0) if seed is not None else prompt

        return per_frame
    return lambda job: workflow


def delivered_file_ok(path: str, batch_id: str) -> bool:
    """The file is there, is the image its extension says, and (when it says so) is this batch's."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    try:
        verify_file(data, os.path.basename(path))
    except SuspectResult:
        return False
    if path.lower().endswith(".png"):
        marker = _png_text(data).get("ncc")
        if marker is not None:
            try:
                return json.loads(marker).get("batch") == batch_id
            except (ValueError, AttributeError):
                return False
    return True


def _output_for(path: str, sequence_name: str) -> OutputFile:
    folder, name = os.path.split(path)
    m = _FRAME_IN_NAME.match(name)
    stem, ext = (m.group("stem"), m.group("ext")) if m else (os.path.splitext(name)[0], os.path.splitext(name)[1])
    label = ""
    if stem.startswith(sequence_name + "_"):
        label = re.sub(r"(_b\d+)?(_i\d{3})?$", "", stem[len(sequence_name) + 1 :])
    return OutputFile("", name, "", "output", path, os.path.join(folder, f"{stem}.####{ext}"), label)


def _delivered_unrecorded(job: Job, record: Any, single_output: bool) -> List[str]:
    """A file moved into the sequence just before the kill, before the ledger heard of it:
    the main sequence's PNG for this frame, carrying this job's marker."""
    folder, name = record.options.output_dir, record.options.sequence_name
    if not (single_output and folder and name) or job.iteration is not None:
        return []
    path = os.path.join(folder, "{}.{:04d}.png".format(name, job.frame if job.frame is not None else 1))
    try:
        with open(path, "rb") as f:
            marker = _png_text(f.read(65536)).get("ncc")
        ok = marker is not None and json.loads(marker).get("job") == job.id
    except (OSError, ValueError, AttributeError):
        return []
    return [path] if ok and delivered_file_ok(path, record.batch_id) else []


def rebuild_jobs(
    ledger_batch: LedgerBatch, factory: PromptFactory, single_output: bool = False
) -> Tuple[List[Job], Dict[str, int]]:
    """The batch's jobs in their resumed states, and counts of what was kept / re-attached / re-queued.

    ``single_output``: the workflow saves one image per prompt, so a frame's file in the
    sequence that carries the job's marker proves the frame done even if the ledger missed it.
    """
    record = ledger_batch.record
    sequence_name = record.options.sequence_name or "result"
    counts = {"kept": 0, "reattach": 0, "requeued": 0}
    jobs: List[Job] = []
    for spec in record.jobs:
        job = Job(
            index=spec.index,
            label=spec.label,
            frame=spec.frame,
            iteration=spec.iteration,
            seed=spec.seed,
            factory=factory,
        )
        job.id = spec.job_id
        update = ledger_batch.jobs.get(spec.index)
        files = list(update.files) if update is not None and update.state == "done" else []
        if not files:
            files = _delivered_unrecorded(job, record, single_output)
        if update is not None and files:
            if all(delivered_file_ok(f, record.batch_id) for f in files):
                job.state = JobState.DONE
                job.server = update.server
                job.prompt_id = update.prompt_id
                job.attempts = update.attempts
                job.outputs = [_output_for(f, sequence_name) for f in files]
                counts["kept"] += 1
                jobs.append(job)
                continue
        if update is not None and update.state in ("submitted", "running") and update.prompt_id and update.server:
            attach(job, update.server, update.prompt_id, update.attempt or "", update.attempts)
            counts["reattach"] += 1
        else:
            counts["requeued"] += 1
            if update is not None and update.attempt and update.server:
                job.server = update.server  # its prompt may be queued there: found by its marker
                job.attempt_token = update.attempt
        jobs.append(job)
    return jobs, counts


def attach(job: Job, server: str, prompt_id: str, token: str, attempts: int = 1) -> None:
    """Follow a prompt already on a server; the dispatcher reconciles it at once."""
    job.state = JobState.SUBMITTED
    job.server = server
    job.prompt_id = prompt_id
    job.attempt_token = token or None
    job.attempts = max(1, attempts)
    job.last_news = -1e9  # long ago: the health check asks the server about it first thing


def find_by_marker(servers: List[Any], jobs: List[Job], batch_id: str) -> int:
    """Re-attach waiting jobs whose prompt is queued or running on a server (sent just before
    the crash, its answer never recorded). Returns how many were found."""
    waiting = {j.id: j for j in jobs if j.state is JobState.PENDING}
    if not waiting:
        return 0
    found = 0
    for server in servers:
        try:
            running, pending = parse_queue(server.connection.get_json("queue"))
        except (ClusterError, ValueError) as e:
            log.info("resume: cannot read the queue of %s: %s", server.name, e)
            continue
        for item in list(running) + list(pending):
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            job = waiting.get(str(extra.get("ncc_job", "")))
            if job is None or job.state is not JobState.PENDING:
                continue
            if extra.get("ncc_batch") not in (None, batch_id):
                continue
            attach(job, server.name, str(item[1]), str(extra.get("ncc_attempt", "")))
            found += 1
    return found


def check_resumable(ledger_batch: LedgerBatch) -> None:
    if ledger_batch.finished == "done":
        raise ConfigError(f"batch {ledger_batch.batch_id[:8]} ({ledger_batch.record.name}) is done: nothing to resume")
    if ledger_batch.record.workflow is None and not ledger_batch.record.workflow_path:
        raise ConfigError(f"batch {ledger_batch.batch_id[:8]}: the ledger holds no workflow to resume with")


def load_workflow(ledger_batch: LedgerBatch) -> Dict[str, Any]:
    record = ledger_batch.record
    if record.workflow is not None:
        return record.workflow
    try:
        with open(record.workflow_path or "", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"batch {record.batch_id[:8]}: cannot read its workflow {record.workflow_path}: {e}") from e


__all__ = ["attach", "check_resumable", "find_by_marker", "load_workflow", "prompt_factory", "rebuild_jobs"]
