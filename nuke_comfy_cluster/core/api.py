"""The public API: one :class:`Cluster` (pool + dispatcher) and helper names for scripts.

::

    from nuke_comfy_cluster.core.api import Cluster
    with Cluster.from_environment() as cluster:
        batch = cluster.submit_frames(workflow, range(1001, 1025), output_dir="/shots/x/comfy", name="x_comfy")
        print(batch.wait(timeout=600).state)

``animation_submit`` and ``iteration_submit`` keep the names single-server Nuke
integrations use, on a process-wide default cluster.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from . import resume
from .config import ServerConfig
from .cost_store import CostStore
from .delivery import (
    SequenceLock,
    check_output_dir,
    describe_frames,
    existing_frames,
    require_saving_node,
    saving_nodes,
)
from .dispatch import Dispatcher
from .errors import ConfigError
from .frames import MAX_FRAMES, FrameList, parse_frames
from .jobs import Batch, Job, PromptPreparer
from .ledger import Ledger
from .ledger_records import SubmitOptions as LedgerOptions
from .ledger_records import workflow_hash
from .pool import ComfyUIServerPool
from .results import ensure_safe_name
from .templating import derive_seed, frame_prompt, seeded_prompt, validate_workflow


@dataclass(frozen=True)
class SubmitOptions:
    """How and where a batch runs; every ``Cluster.submit*`` takes one (or the same names as keywords).

    ``server`` pins the batch (default: the panel's override, else the cluster decides);
    ``output_dir`` + ``sequence_name`` deliver every result as ``NAME.####.ext`` sequences
    (one per saving node); ``overwrite`` allows replacing frames already there.
    """

    server: Optional[str] = None
    name: str = ""
    output_dir: Optional[str] = None
    sequence_name: Optional[str] = None
    prepare: Optional[PromptPreparer] = None
    base_seed: Optional[int] = None
    overwrite: bool = False
    max_attempts: Optional[int] = None
    workflow: Optional[Dict[str, Any]] = None  # set by submit_frames / submit_iterations

    @classmethod
    def merge(cls, options: Optional[SubmitOptions], kw: Mapping[str, Any]) -> SubmitOptions:
        base = options if options is not None else cls()
        unknown = set(kw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError("unknown submit option(s): {}".format(", ".join(sorted(unknown))))
        return dataclasses.replace(base, **{k: v for k, v in kw.items()}) if kw else base

    def but(self, **changes: Any) -> SubmitOptions:
        return dataclasses.replace(self, **changes)


def _frame_list(frames: Iterable[int]) -> FrameList:
    if isinstance(frames, FrameList):
        return frames
    if isinstance(frames, range) and frames.step > 0:
        if len(frames) > MAX_FRAMES:
            raise ConfigError(f"{len(frames):,} frames: one batch holds at most {MAX_FRAMES:,}")
        return FrameList([(frames.start, frames[-1], frames.step)] if len(frames) else [])
    items = list(frames)
    if len(items) > MAX_FRAMES:
        raise ConfigError(f"{len(items):,} frames: one batch holds at most {MAX_FRAMES:,}")
    return FrameList.of(items)


class Cluster:
    """A pool of servers and a dispatcher running batches on it."""

    def __init__(
        self,
        pool: ComfyUIServerPool,
        *,
        start: bool = True,
        ledger: Union[Ledger, None, bool] = True,
        **dispatch_options: Any,
    ) -> None:
        """``ledger``: where batches are kept for resume (True: the user's state folder; False: nowhere)."""
        self.pool = pool
        self.ledger: Optional[Ledger] = Ledger() if ledger is True else (ledger or None)
        # learned costs persist where the ledger does (the user's state folder)
        dispatch_options.setdefault("cost_store", CostStore() if ledger is True else None)
        self.dispatcher = Dispatcher(pool, ledger=self.ledger, **dispatch_options)
        if start:
            self.start()

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None, **kw: Any) -> Cluster:
        pool = ComfyUIServerPool()
        pool.load_configuration(environ)
        return cls(pool, **kw)

    @classmethod
    def from_servers(cls, servers: Sequence[ServerConfig], **kw: Any) -> Cluster:
        pool_kw = {k: kw.pop(k) for k in ("status_ttl", "use_websocket") if k in kw}
        return cls(ComfyUIServerPool(servers, **pool_kw), **kw)

    def start(self) -> None:
        self.dispatcher.start()

    def close(self, *, detach: bool = False, timeout: float = 10.0) -> None:
        """Cancel our unfinished batches (or, with ``detach``, leave them rendering to be
        resumed), then stop every thread and socket. Every ``batch.wait()`` returns."""
        self.dispatcher.stop(timeout, cancel=not detach)
        self.pool.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ready(self, server: Optional[str]) -> None:
        # a pinned server must be known to be up before we accept the batch
        target = self.pool.get_server_by_name(server) if server else None
        if target is not None and target.last_status_check is None:
            target.update_status()
        elif not any(s.last_status_check for s in self.pool.servers):
            self.pool.update_all_server_status(force=True)

    def submit_batch(
        self,
        jobs: Sequence[Job],
        options: Optional[SubmitOptions] = None,
        *,
        _record: Optional[LedgerOptions] = None,
        _batch_id: Optional[str] = None,
        _resumed: bool = False,
        **kw: Any,
    ) -> Batch:
        """Jobs made by the caller; ``options`` (or the same names as keywords) say where results go."""
        opts = SubmitOptions.merge(options, kw)
        server = opts.server or self.pool.override
        jobs = list(jobs)
        workflow = opts.workflow if opts.workflow is not None else (jobs[0].prompt if jobs else {})
        batch = Batch(
            jobs,
            name=opts.name,
            pinned=server,
            prepare=opts.prepare,
            output_dir=opts.output_dir,
            sequence_name=opts.sequence_name if opts.output_dir else None,
            max_attempts=opts.max_attempts or 0,
            workflow=workflow,
            batch_id=_batch_id,
        )
        batch.ledger_options = _record or LedgerOptions(
            output_dir=opts.output_dir, sequence_name=batch.sequence_name, server=server
        )
        if opts.output_dir:
            self._claim_sequence(batch, workflow, opts, resumed=_resumed)
        try:
            self._ready(server)
            return self.dispatcher.submit_batch(batch)
        except BaseException:
            if batch.lock_file is not None:
                batch.lock_file.release()
            raise

    @staticmethod
    def _claim_sequence(batch: Batch, workflow: Dict[str, Any], opts: SubmitOptions, resumed: bool = False) -> None:
        """Before anything renders: something to save, a writable folder, one writer, no silent overwrite."""
        folder = opts.output_dir or ""
        name = ensure_safe_name(opts.sequence_name or "result")
        batch.sequence_name = name
        require_saving_node(workflow)
        check_output_dir(folder)
        batch.lock_file = SequenceLock.acquire(folder, name, batch.id, batch.name)
        try:
            frames = [j.frame if j.frame is not None else 1 for j in batch.jobs]
            if resumed:
                # its own delivered frames were checked one by one; the others are rendered again
                frames = [j.frame if j.frame is not None else 1 for j in batch.jobs if not j.state.finished]
            existing = existing_frames(folder, name, frames)
            if existing and not opts.overwrite and not resumed:
                raise ConfigError(
                    "{} of the {} frames of sequence {} already exist in {} ({}): pass --overwrite "
                    "(Overwrite on the node) to replace them, or choose another name".format(
                        len(existing), len(frames), name, folder, describe_frames(existing)
                    )
                )
            batch.existed = tuple(existing)
        except BaseException:
            batch.lock_file.release()
            batch.lock_file = None
            raise

    def submit(self, prompt: Dict[str, Any], options: Optional[SubmitOptions] = None, **kw: Any) -> Batch:
        """One prompt, to the pinned server or the best one now."""
        opts = SubmitOptions.merge(options, kw)
        validate_workflow(prompt)
        label = opts.name or "prompt"
        return self.submit_batch([Job(prompt, label=label)], opts.but(name=label, workflow=prompt))

    def submit_frames(
        self,
        workflow: Dict[str, Any],
        frames: Union[str, Iterable[int]],
        options: Optional[SubmitOptions] = None,
        **kw: Any,
    ) -> Batch:
        """One prompt per frame (frame tokens substituted), spread over the cluster.

        ``frames`` is a frame list text (``1001-1024``, ``1,3,5-7``) or frame numbers; each
        frame's prompt is made when it is sent, so a long range costs frame numbers only.
        """
        opts = SubmitOptions.merge(options, kw)
        validate_workflow(workflow)
        frame_list = parse_frames(frames) if isinstance(frames, str) else _frame_list(frames)
        base_seed = opts.base_seed

        def make(job: Job) -> Dict[str, Any]:
            prompt = frame_prompt(workflow, job.frame)
            return seeded_prompt(prompt, base_seed, job.frame, 0) if base_seed is not None else prompt

        jobs = [
            Job(
                index=i,
                label=f"frame {frame}",
                frame=frame,
                seed=derive_seed(base_seed, frame, 0) if base_seed is not None else None,
                factory=make,
            )
            for i, frame in enumerate(frame_list)
        ]
        if not len(frame_list):
            raise ConfigError("no frames to render: the frame list is empty")
        name = opts.name or f"frames {frame_list.text}"
        record = LedgerOptions(
            frames=frame_list.text,
            seed=base_seed,
            output_dir=opts.output_dir,
            sequence_name=opts.sequence_name if opts.output_dir else None,
            server=opts.server,
        )
        return self.submit_batch(jobs, opts.but(name=name, workflow=workflow), _record=record)

    def submit_iterations(
        self,
        workflow: Dict[str, Any],
        iterations: int,
        options: Optional[SubmitOptions] = None,
        *,
        frame: Optional[int] = None,
        **kw: Any,
    ) -> Batch:
        """N variations of one prompt, each with its own deterministic seed."""
        opts = SubmitOptions.merge(options, kw)
        validate_workflow(workflow)
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        if iterations > MAX_FRAMES:
            raise ValueError(f"{iterations} iterations: one batch holds at most {MAX_FRAMES:,}")
        base = frame_prompt(workflow, frame) if frame is not None else workflow
        base_seed = opts.base_seed or 0

        def make(job: Job) -> Dict[str, Any]:
            return seeded_prompt(base, base_seed, frame, job.iteration or 0)

        jobs = [
            Job(
                index=i,
                label=f"iteration {i + 1}",
                frame=frame,
                iteration=i,
                seed=derive_seed(base_seed, frame, i),
                factory=make,
            )
            for i in range(iterations)
        ]
        record = LedgerOptions(
            iterations=iterations,
            seed=base_seed,
            frame=frame,
            output_dir=opts.output_dir,
            sequence_name=opts.sequence_name if opts.output_dir else None,
            server=opts.server,
        )
        name = opts.name or f"{iterations} iterations"
        return self.submit_batch(jobs, opts.but(name=name, workflow=workflow), _record=record)

    def resume(self, batch_id: str, options: Union[SubmitOptions, Mapping[str, Any], None] = None) -> Batch:
        """Continue a batch from the ledger (after a crash, a kill, a detach): frames already
        delivered are kept, prompts still on servers re-attached, lost ones sent again.

        ``options`` may pin another server (``{"server": NAME}``) or give ``prepare``.
        Blocking (reads the ledger and the servers' queues): not on a UI thread.
        """
        if self.ledger is None:
            raise ConfigError("this cluster keeps no batch ledger: nothing to resume")
        opts = options if isinstance(options, SubmitOptions) else SubmitOptions.merge(None, dict(options or {}))
        ledger_batch = self.ledger.load(self.ledger.find(batch_id))
        resume.check_resumable(ledger_batch)
        writer = self.ledger.open(ledger_batch.batch_id)  # refused while another process runs it
        try:
            record = ledger_batch.record
            workflow = resume.load_workflow(ledger_batch)
            single = len(saving_nodes(workflow)) == 1 and all(
                (n.get("inputs") or {}).get("batch_size", 1) == 1 for n in workflow.values() if isinstance(n, dict)
            )
            jobs, counts = resume.rebuild_jobs(ledger_batch, resume.prompt_factory(workflow, record.options), single)
            self._ready(opts.server or record.options.server)
            counts["found"] = resume.find_by_marker(list(self.pool.servers), jobs, record.batch_id)
            writer.reopen()
            merged = SubmitOptions(
                server=opts.server or record.options.server,
                name=record.name,
                output_dir=record.options.output_dir,
                sequence_name=record.options.sequence_name,
                prepare=opts.prepare,
                base_seed=record.options.seed,
                workflow=workflow,
            )
            batch = Batch(
                jobs,
                name=record.name,
                pinned=merged.server,
                prepare=merged.prepare,
                output_dir=merged.output_dir,
                sequence_name=merged.sequence_name,
                workflow=workflow,
                batch_id=record.batch_id,
            )
            batch.ledger_writer = writer
            batch.ledger_options = record.options
            batch.message = "Resumed: {kept} frames kept, {attached} re-attached, {requeued} to send".format(
                kept=counts["kept"],
                attached=counts["reattach"] + counts["found"],
                requeued=counts["requeued"] - counts["found"],
            )
            if merged.output_dir:
                self._claim_sequence(batch, workflow, merged, resumed=True)
            self.resumed_counts = counts
            return self.dispatcher.submit_batch(batch)
        except BaseException:
            writer.close()
            raise

    def find_unfinished(
        self, workflow: Dict[str, Any], output_dir: Optional[str], sequence_name: Optional[str]
    ) -> Optional[str]:
        """The id of an unfinished batch of this workflow into the same sequence (for ``submit --resume``)."""
        if self.ledger is None:
            return None
        digest = workflow_hash(workflow)
        for summary in self.ledger.unfinished(digest):
            if summary.live:
                continue
            if (summary.output_dir or None) == (output_dir or None) and (summary.sequence_name or None) == (
                (sequence_name if output_dir else None) or None
            ):
                return summary.batch_id
        return None

    def cancel(self, batch: Batch) -> None:
        self.dispatcher.cancel(batch)

    def retry_failed(self, batch: Batch) -> None:
        self.dispatcher.retry_failed(batch)


_default: Optional[Cluster] = None
_default_lock = threading.Lock()


def default_cluster() -> Cluster:
    """The process-wide cluster (configured from the environment on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Cluster.from_environment()
        return _default


def submit(prompt: Dict[str, Any], **kw: Any) -> Batch:
    return default_cluster().submit(prompt, **kw)


def submit_frames(workflow: Dict[str, Any], frames: Iterable[int], **kw: Any) -> Batch:
    return default_cluster().submit_frames(workflow, frames, **kw)


def submit_iterations(workflow: Dict[str, Any], iterations: int, **kw: Any) -> Batch:
    return default_cluster().submit_iterations(workflow, iterations, **kw)


def cancel(batch: Batch) -> None:
    default_cluster().cancel(batch)


def animation_submit(workflow: Dict[str, Any], first: int, last: int, **kw: Any) -> Batch:
    """Frames ``first``..``last`` inclusive, one prompt per frame (single-server integrations' name)."""
    return submit_frames(workflow, range(first, last + 1), **kw)


def iteration_submit(workflow: Dict[str, Any], iterations: int, **kw: Any) -> Batch:
    return submit_iterations(workflow, iterations, **kw)
