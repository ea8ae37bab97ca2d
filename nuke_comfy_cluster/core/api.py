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

import threading
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from .config import ServerConfig
from .dispatch import Dispatcher
from .jobs import Batch, Job, PromptPreparer
from .pool import ComfyUIServerPool
from .results import ensure_safe_name
from .templating import derive_seed, frame_prompt, seeded_prompt, validate_workflow


class Cluster:
    """A pool of servers and a dispatcher running batches on it."""

    def __init__(self, pool: ComfyUIServerPool, *, start: bool = True, **dispatch_options: Any) -> None:
        self.pool = pool
        self.dispatcher = Dispatcher(pool, **dispatch_options)
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

    def close(self) -> None:
        self.dispatcher.stop()
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

    def submit_batch(self, jobs: Sequence[Job], **kw: Any) -> Batch:
        server = kw.pop("server", None) or self.pool.override
        if kw.get("sequence_name"):
            ensure_safe_name(kw["sequence_name"])
        self._ready(server)
        batch = Batch(list(jobs), pinned=server, **kw)
        return self.dispatcher.submit_batch(batch)

    def submit(
        self,
        prompt: Dict[str, Any],
        *,
        server: Optional[str] = None,
        name: str = "",
        output_dir: Optional[str] = None,
        sequence_name: Optional[str] = None,
        prepare: Optional[PromptPreparer] = None,
    ) -> Batch:
        """One prompt, to the pinned server or the best one now."""
        validate_workflow(prompt)
        return self.submit_batch(
            [Job(prompt, label=name or "prompt")],
            server=server,
            name=name or "prompt",
            output_dir=output_dir,
            sequence_name=sequence_name,
            prepare=prepare,
        )

    def submit_frames(
        self,
        workflow: Dict[str, Any],
        frames: Iterable[int],
        *,
        server: Optional[str] = None,
        name: str = "",
        output_dir: Optional[str] = None,
        sequence_name: Optional[str] = None,
        prepare: Optional[PromptPreparer] = None,
        base_seed: Optional[int] = None,
    ) -> Batch:
        """One prompt per frame (frame tokens substituted), spread over the cluster."""
        validate_workflow(workflow)
        frames = list(frames)
        if len(set(frames)) != len(frames):
            raise ValueError("frame list has duplicates: each frame is rendered once")
        jobs = []
        for i, frame in enumerate(frames):
            prompt = frame_prompt(workflow, frame)
            seed = None
            if base_seed is not None:
                prompt = seeded_prompt(prompt, base_seed, frame, 0)
                seed = derive_seed(base_seed, frame, 0)
            jobs.append(Job(prompt, index=i, label=f"frame {frame}", frame=frame, seed=seed))
        return self.submit_batch(
            jobs,
            server=server,
            name=name or f"frames {frames[0]}-{frames[-1]}" if frames else "frames",
            output_dir=output_dir,
            sequence_name=sequence_name,
            prepare=prepare,
        )

    def submit_iterations(
        self,
        workflow: Dict[str, Any],
        iterations: int,
        *,
        base_seed: int = 0,
        frame: Optional[int] = None,
        server: Optional[str] = None,
        name: str = "",
        output_dir: Optional[str] = None,
        sequence_name: Optional[str] = None,
        prepare: Optional[PromptPreparer] = None,
    ) -> Batch:
        """N variations of one prompt, each with its own deterministic seed."""
        validate_workflow(workflow)
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        base = frame_prompt(workflow, frame) if frame is not None else workflow
        jobs = [
            Job(
                seeded_prompt(base, base_seed, frame, i),
                index=i,
                label=f"iteration {i + 1}",
                frame=frame,
                iteration=i,
                seed=derive_seed(base_seed, frame, i),
            )
            for i in range(iterations)
        ]
        return self.submit_batch(
            jobs,
            server=server,
            name=name or f"{iterations} iterations",
            output_dir=output_dir,
            sequence_name=sequence_name,
            prepare=prepare,
        )

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
