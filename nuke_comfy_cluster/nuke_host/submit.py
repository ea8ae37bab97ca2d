"""The submit flow of the ComfyUI Cluster node.

::

    main thread (Submit button)          worker thread (one per run)          main thread (queued)
    read the knobs, render the inputs -> submit the batch to the cluster
    with a temporary Write                ProgressTask, follow the batch  ->  status line
                                          plan the Reads (files on disk)  ->  Read nodes, errors

Nothing on the main thread waits for the network: submitting (which may poll
the servers first) and following the batch happen on the run's own thread, and
every node change goes back through ``nuke.executeInMainThread``. Each node may
have one run at a time; any number of nodes may run at once.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import traceback
import uuid
from typing import Any, Dict, List, Optional

from ..core.errors import ClusterError, user_message
from ..core.jobs import Batch, BatchSnapshot
from . import inputs as input_files
from . import messages
from . import node as node_knobs
from .reads import ReadSpec, apply_reads, plan_reads

log = logging.getLogger(__name__)

#: seconds between looks at the ProgressTask's cancel button when the batch is quiet
POLL_INTERVAL = 0.2

_runs: Dict[str, SubmitRun] = {}
_runs_lock = threading.Lock()


def get_cluster() -> Any:
    """The process-wide cluster the docked panel uses too (one pool, one dispatcher)."""
    from ..core.api import default_cluster

    return default_cluster()


def on_main(fn: Any, *args: Any) -> None:
    import nuke

    nuke.executeInMainThread(fn, args)


def active_runs() -> List[SubmitRun]:
    with _runs_lock:
        return list(_runs.values())


def run_for(node: Any) -> Optional[SubmitRun]:
    """The node's active run, if any (main thread)."""
    run_id = node[node_knobs.K_RUN].value()
    with _runs_lock:
        run = _runs.get(run_id) if run_id else None
    # a copy-pasted node carries the original's run id: it is not running
    if run is None or not run._node_alive() or run.node.fullName() != node.fullName():
        return None
    return run


class SubmitRun:
    """One submission of one node: its batch, its worker thread, what it shows."""

    def __init__(
        self,
        node: Any,
        settings: node_knobs.NodeSettings,
        workflow: Dict[str, Any],
        mapper: Optional[input_files.InputMapper],
        run_dir: Optional[str],
        cluster: Any,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.node = node
        self.settings = settings
        self.workflow = workflow
        self.mapper = mapper
        self.run_dir = run_dir
        self.cluster = cluster
        self.batch: Optional[Batch] = None
        self.final: Optional[BatchSnapshot] = None
        self.reads: List[str] = []
        self.error: Optional[str] = None  # why the batch could not even start
        self.finished = threading.Event()  # set on the main thread once the node shows the outcome
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._latest: Optional[BatchSnapshot] = None
        self._status_queued = False
        self._thread: Optional[threading.Thread] = None

    # -- any thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ncc-submit-" + self.settings.node_name, daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Cancel the batch on the servers (pending prompts deleted, ours interrupted)."""
        self._cancel.set()
        batch = self.batch
        if batch is not None:
            self.cluster.cancel(batch)  # only enqueues: the dispatcher does the HTTP

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set()

    # -- worker thread -----------------------------------------------------------------
    def _submit(self) -> Batch:
        s = self.settings
        common = dict(
            server=s.server,
            name=f"{s.node_name} {s.mode}",
            output_dir=s.output_dir,
            sequence_name=s.sequence_name,
            overwrite=s.overwrite,
            prepare=self.mapper,
        )
        if s.mode == node_knobs.MODE_ITERATIONS:
            return self.cluster.submit_iterations(
                self.workflow, s.iterations, base_seed=s.base_seed, frame=s.first, **common
            )
        return self.cluster.submit_frames(self.workflow, s.frames, **common)

    def _run(self) -> None:
        try:
            self._run_batch()
        except Exception as e:  # noqa: BLE001 - a dead worker would leave the node "Running" forever
            log.exception("ComfyUI Cluster: the run of %s failed", self.settings.node_name)
            traceback.clear_frames(e.__traceback__)  # they hold the ProgressTask: let Nuke close it now
            if self.batch is not None:
                self.cluster.cancel(self.batch)  # nobody follows it any more
            self._cleanup()
            on_main(self._failed, f"unexpected {type(e).__name__}: {e}")

    def _run_batch(self) -> None:
        try:
            batch = self._submit()
        except Exception as e:  # noqa: BLE001 - every failure is shown on the node
            if not isinstance(e, ClusterError):
                log.exception("ComfyUI Cluster: submitting %s failed", self.settings.node_name)
            self._cleanup()
            on_main(self._failed, user_message(e))
            return
        self.batch = batch
        if self._cancel.is_set():
            self.cluster.cancel(batch)
        snapshot = self._follow(batch)
        specs: List[ReadSpec] = []
        try:
            specs = plan_reads(snapshot, self.settings.output_dir, self.settings.sequence_name, self.settings.node_name)
        except Exception:  # noqa: BLE001 - no Read is better than a stuck node
            log.exception("ComfyUI Cluster: cannot plan the Read nodes of %s", self.settings.node_name)
        self._cleanup()
        on_main(self._finish, snapshot, specs)

    def _follow(self, batch: Batch) -> BatchSnapshot:
        import nuke

        updates: queue.Queue[BatchSnapshot] = queue.Queue()
        task = nuke.ProgressTask(f"ComfyUI Cluster: {self.settings.node_name}")
        batch.add_listener(updates.put)
        try:
            snapshot = batch.snapshot()
            self._show(task, snapshot)
            while not batch.finished:
                try:
                    snapshot = updates.get(timeout=POLL_INTERVAL)
                    while True:  # only the newest state matters
                        snapshot = updates.get_nowait()
                except queue.Empty:
                    pass
                if task.isCancelled() and not self._cancel.is_set():
                    self.cancel()
                self._show(task, snapshot)
            snapshot = batch.snapshot()
            task.setProgress(100)
            task.setMessage(messages.progress_message(snapshot))
        finally:
            batch.remove_listener(updates.put)
            del task  # closes Nuke's progress bar
        return snapshot

    def _show(self, task: Any, snapshot: BatchSnapshot) -> None:
        if snapshot is self._latest:
            return  # a quiet poll: nothing new to draw
        task.setProgress(int(snapshot.progress * 100))
        task.setMessage(messages.progress_message(snapshot))
        with self._lock:
            self._latest = snapshot
            if self._status_queued:
                return  # the main thread has not drawn the last one yet: it will draw this one
            self._status_queued = True
        on_main(self._draw_status)

    def _cleanup(self) -> None:
        input_files.remove_run_files(self.run_dir, self.mapper.copies if self.mapper is not None else ())

    # -- main thread -------------------------------------------------------------------
    def _node_alive(self) -> bool:
        try:
            self.node.name()
            return True
        except ValueError:  # deleted while running: the files still land on disk
            return False

    def _draw_status(self) -> None:
        with self._lock:
            snapshot, self._status_queued = self._latest, False
        if snapshot is None or self.finished.is_set() or not self._node_alive():
            return
        node_knobs.set_status(self.node, messages.status_line(snapshot, self._cancel.is_set()))

    def _failed(self, message: str) -> None:
        import nuke

        self.error = message
        if self._node_alive():
            node_knobs.set_status(self.node, "Failed: " + message, message)
            self.node[node_knobs.K_RUN].setValue("")
        self._forget()
        nuke.message(f"{self.settings.node_name}: {message}")

    def _finish(self, snapshot: BatchSnapshot, specs: List[ReadSpec]) -> None:
        import nuke

        self.final = snapshot
        if self._node_alive():
            try:
                self.reads = [r.name() for r in apply_reads(self.node, specs)]
            except Exception as e:  # noqa: BLE001 - the status must still say what happened
                log.exception("ComfyUI Cluster: cannot create the Read nodes")
                self.error = f"cannot create the Read nodes: {e}"
            details = messages.error_details(snapshot)
            gaps = [f"{s.name}: no file for frames {messages.compact_numbers(s.missing)}" for s in specs if s.missing]
            if self.error:
                gaps.append(self.error)
            details = "\n\n".join(x for x in [details] + gaps if x)
            node_knobs.set_status(self.node, messages.status_line(snapshot), details)
            self.node[node_knobs.K_RUN].setValue("")
        self._forget()
        popup = messages.failure_popup(snapshot, self.settings.node_name)
        if popup:
            nuke.message(popup)

    def _forget(self) -> None:
        with _runs_lock:
            _runs.pop(self.id, None)
        self.finished.set()


def submit_node(node: Any) -> SubmitRun:
    """Submit a ComfyUI Cluster node (main thread); returns the run, already started.

    Raises SettingsError / WorkflowError for what the artist must fix first.
    """
    if run_for(node) is not None:
        raise node_knobs.SettingsError(f"{node.name()} is already running: cancel it first")
    settings = node_knobs.read_settings(node)
    cluster = get_cluster()
    workflow = settings.workflow
    mapper: Optional[input_files.InputMapper] = None
    run_dir: Optional[str] = None
    if settings.inputs:
        root = input_files.stage_root(cluster.pool.servers, settings.server or cluster.pool.override)
        script = node_knobs.script_path()
        tag = node_knobs.safe_tag(
            f"{os.path.splitext(os.path.basename(script))[0]}_{settings.node_name}" if script else settings.node_name
        )
        run_dir = input_files.new_run_dir(root, tag)
        node_knobs.set_status(node, "Rendering inputs...", "")
        try:
            images = input_files.render_inputs(
                node, settings.inputs, node_knobs.INPUT_NAMES, settings.frames[0], settings.frames[-1], run_dir
            )
        except Exception:
            input_files.remove_run_files(run_dir)
            node_knobs.set_status(node, "Failed: the inputs could not be rendered")
            raise
        workflow = input_files.apply_inputs(workflow, images)
        mapper = input_files.InputMapper(sorted(images), os.path.basename(run_dir))
    run = SubmitRun(node, settings, workflow, mapper, run_dir, cluster)
    with _runs_lock:
        _runs[run.id] = run
    node[node_knobs.K_RUN].setValue(run.id)
    node_knobs.set_status(node, "Submitting to the cluster...", "")
    run.start()
    return run


def cancel_node(node: Any) -> bool:
    """Cancel the node's run; False when it has none."""
    run = run_for(node)
    if run is None:
        return False
    run.cancel()
    node_knobs.set_status(node, "Cancelling...")
    return True
