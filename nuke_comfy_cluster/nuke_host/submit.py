"""The submit and resume flows of the ComfyUI Cluster node.

::

    main thread (Submit / Resume)        worker thread (one per run)          main thread (queued)
    read the knobs, render the inputs -> submit the batch to the cluster,  -> batch id on the node
    with a temporary Write                or resume it from the ledger
                                          ProgressTask, follow the batch  ->  status line
                                          plan the Reads (files on disk)  ->  Read nodes, errors

Nothing on the main thread waits for the network: submitting (which may poll
the servers first), resuming (which reads the ledger and the servers' queues)
and following the batch happen on the run's own thread, and every node change
goes back through ``nuke.executeInMainThread``. Each node may have one run at a
time; any number of nodes may run at once.

A run outlives its node: when the script is closed while it renders (and the
artist keeps it rendering), the batch goes on; reopening the script re-attaches
the node to it (:func:`attach_node`), or, once it has ended, gives the node its
Reads. When the process exits with runs unfinished, they are detached
(:func:`detach_at_exit`): the prompts already on the servers keep rendering and
the ledger keeps the batch for Resume.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import traceback
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ..core.errors import ClusterError, user_message
from ..core.jobs import Batch, BatchSnapshot
from . import inputs as input_files
from . import messages
from . import node as node_knobs
from .reads import ReadSpec, apply_reads, plan_reads

log = logging.getLogger(__name__)

#: seconds between looks at the ProgressTask's cancel button when the batch is quiet
POLL_INTERVAL = 0.2

#: seconds the process-exit hook gives each cluster to detach its batches
DETACH_TIMEOUT = 10.0

_runs: Dict[str, NodeRun] = {}
_runs_lock = threading.Lock()
#: per node (full name): how many runs it has started, so an answer about an older state is dropped
_generations: Dict[str, int] = {}
#: batches that ended while their node was gone (script closed): what to show when it comes back
_ended_away: Dict[str, Tuple[BatchSnapshot, List[ReadSpec]]] = {}
_exit_hook = False


def get_cluster() -> Any:
    """The process-wide cluster the docked panel uses too (one pool, one dispatcher)."""
    from ..core.api import default_cluster

    return default_cluster()


def on_main(fn: Any, *args: Any) -> None:
    import nuke

    nuke.executeInMainThread(fn, args)


def active_runs() -> List[NodeRun]:
    with _runs_lock:
        return list(_runs.values())


def generation(node: Any) -> int:
    return _generations.get(node.fullName(), 0)


def run_for(node: Any) -> Optional[NodeRun]:
    """The node's active run, if any (main thread)."""
    run_id = node[node_knobs.K_RUN].value()
    with _runs_lock:
        run = _runs.get(run_id) if run_id else None
    # a copy-pasted node carries the original's run id: it is not running
    if run is None or not run._node_alive() or run.node.fullName() != node.fullName():
        return None
    return run


class NodeRun:
    """One run of one node (a submission or a resume): its batch, its worker thread, what it shows."""

    def __init__(
        self,
        node: Any,
        node_name: str,
        mapper: Optional[input_files.InputMapper],
        run_dir: Optional[str],
        cluster: Any,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.node = node
        self.node_name = node_name
        self.mapper = mapper
        self.run_dir = run_dir
        self.cluster = cluster
        #: what the artist chose when the script closed while this ran ("keep" / "cancel"; "" not asked)
        self.on_close = ""
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
        self._thread = threading.Thread(target=self._run, name="ncc-submit-" + self.node_name, daemon=True)
        self._thread.start()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

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
        raise NotImplementedError

    def _targets(self) -> Tuple[str, str]:
        """Output folder and sequence name, for Reads of a batch whose sequences are not named."""
        raise NotImplementedError

    def _staging(self) -> Optional[str]:
        """What the node keeps about the rendered inputs (JSON), or None to leave it as it is."""
        return None

    def _run(self) -> None:
        try:
            self._run_batch()
        except Exception as e:  # noqa: BLE001 - a dead worker would leave the node "Running" forever
            log.exception("ComfyUI Cluster: the run of %s failed", self.node_name)
            traceback.clear_frames(e.__traceback__)  # they hold the ProgressTask: let Nuke close it now
            if self.batch is not None:
                self.cluster.cancel(self.batch)  # nobody follows it any more
            self._cleanup(None)
            on_main(self._failed, f"unexpected {type(e).__name__}: {e}")

    def _run_batch(self) -> None:
        try:
            batch = self._submit()
        except Exception as e:  # noqa: BLE001 - every failure is shown on the node
            if not isinstance(e, ClusterError):
                log.exception("ComfyUI Cluster: submitting %s failed", self.node_name)
            self._cleanup(None)
            on_main(self._failed, user_message(e))
            return
        self.batch = batch
        on_main(self._batch_started, batch.id)
        if self._cancel.is_set():
            self.cluster.cancel(batch)
        snapshot = self._follow(batch)
        specs: List[ReadSpec] = []
        try:
            output_dir, sequence_name = self._targets()
            specs = plan_reads(snapshot, output_dir, sequence_name, self.node_name)
        except Exception:  # noqa: BLE001 - no Read is better than a stuck node
            log.exception("ComfyUI Cluster: cannot plan the Read nodes of %s", self.node_name)
        self._cleanup(snapshot)
        on_main(self._finish, snapshot, specs)

    def _follow(self, batch: Batch) -> BatchSnapshot:
        import nuke

        updates: queue.Queue[BatchSnapshot] = queue.Queue()
        task = nuke.ProgressTask(f"ComfyUI Cluster: {self.node_name}")
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

    def _cleanup(self, snapshot: Optional[BatchSnapshot]) -> None:
        """Remove the rendered inputs once nothing needs them: not while a detached batch's
        prompts may still read them on the servers, nor before Resume has fed them again."""
        if snapshot is not None and not snapshot.finished:
            return
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

    def _batch_started(self, batch_id: str) -> None:
        """Keep the batch id on the node (saved with the script), so a reopened script can resume it."""
        if not self._node_alive():
            return
        node_knobs.ensure_batch_knobs(self.node)
        if node_knobs.batch_id_of(self.node) != batch_id:
            self.node[node_knobs.K_BATCH].setValue(batch_id)
        staging = self._staging()
        if staging is not None and self.node[node_knobs.K_BATCH_INPUTS].getText() != staging:
            self.node[node_knobs.K_BATCH_INPUTS].setValue(staging)
        node_knobs.set_resumable(self.node, False)

    def _failed_status(self, message: str) -> str:
        return "Failed: " + message

    def _failed(self, message: str) -> None:
        import nuke

        self.error = message
        if self._node_alive():
            node_knobs.set_status(self.node, self._failed_status(message), message)
            self.node[node_knobs.K_RUN].setValue("")
        self._forget()
        nuke.message(f"{self.node_name}: {message}")

    def _finish(self, snapshot: BatchSnapshot, specs: List[ReadSpec]) -> None:
        import nuke

        self.final = snapshot
        if self._node_alive():
            self.reads, self.error = show_outcome(self.node, snapshot, specs, self.error)
            self.node[node_knobs.K_RUN].setValue("")
        else:
            # the script was closed while the batch went on: the node gets this when it comes back
            _ended_away[snapshot.id] = (snapshot, specs)
        self._forget()
        popup = messages.failure_popup(snapshot, self.node_name)
        if popup:
            nuke.message(popup)

    def attach(self, node: Any) -> None:
        """Follow this run on ``node``: the same node of a script reopened while the batch went on."""
        self.node = node
        node[node_knobs.K_RUN].setValue(self.id)
        if self.batch is not None:
            self._batch_started(self.batch.id)
        with self._lock:
            snapshot = self._latest
        status = messages.status_line(snapshot, self._cancel.is_set()) if snapshot else "Submitting to the cluster..."
        node_knobs.set_status(node, status, "")

    def _forget(self) -> None:
        with _runs_lock:
            _runs.pop(self.id, None)
        self.finished.set()


def show_outcome(
    node: Any, snapshot: BatchSnapshot, specs: List[ReadSpec], error: Optional[str] = None
) -> Tuple[List[str], Optional[str]]:
    """Reads, status and details of an ended (or detached) batch on ``node`` (main thread).

    Returns the names of the Reads and the error to remember (``error`` or why the Reads failed).
    """
    reads: List[str] = []
    try:
        reads = [r.name() for r in apply_reads(node, specs)]
    except Exception as e:  # noqa: BLE001 - the status must still say what happened
        log.exception("ComfyUI Cluster: cannot create the Read nodes")
        error = f"cannot create the Read nodes: {e}"
    details = messages.error_details(snapshot)
    gaps = [f"{s.name}: no file for frames {messages.compact_numbers(s.missing)}" for s in specs if s.missing]
    if error:
        gaps.append(error)
    details = "\n\n".join(x for x in [details] + gaps if x)
    node_knobs.set_status(node, messages.status_line(snapshot), details)
    node_knobs.set_resumable(node, not snapshot.finished)  # detached: Resume collects the rest
    return reads, error


def ended_away(batch_id: str) -> Optional[Tuple[BatchSnapshot, List[ReadSpec]]]:
    """The outcome of a batch that ended while its node was gone, once (main thread)."""
    return _ended_away.pop(batch_id, None) if batch_id else None


class SubmitRun(NodeRun):
    """A submission: the node's settings and workflow, read and rendered on the main thread."""

    def __init__(
        self,
        node: Any,
        settings: node_knobs.NodeSettings,
        workflow: Dict[str, Any],
        mapper: Optional[input_files.InputMapper],
        run_dir: Optional[str],
        cluster: Any,
    ) -> None:
        super().__init__(node, settings.node_name, mapper, run_dir, cluster)
        self.settings = settings
        self.workflow = workflow

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

    def _targets(self) -> Tuple[str, str]:
        return self.settings.output_dir, self.settings.sequence_name

    def _staging(self) -> Optional[str]:
        if self.run_dir is None or not self.settings.inputs:
            return ""
        frames = self.settings.frames
        return json.dumps(
            {
                "run_dir": self.run_dir,
                "inputs": [list(pair) for pair in self.settings.inputs],
                "first": frames[0],
                "last": frames[-1],
            }
        )


def start_run(run: NodeRun, node: Any, status: str) -> None:
    """Register a run on its node and start its worker (main thread)."""
    _ensure_exit_hook()
    with _runs_lock:
        _runs[run.id] = run
    key = node.fullName()
    _generations[key] = _generations.get(key, 0) + 1
    node[node_knobs.K_RUN].setValue(run.id)
    node_knobs.set_resumable(node, False)
    node_knobs.set_status(node, status, "")
    run.start()


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
    start_run(run, node, "Submitting to the cluster...")
    return run


def cancel_node(node: Any) -> bool:
    """Cancel the node's run; False when it has none."""
    run = run_for(node)
    if run is None:
        return False
    run.cancel()
    node_knobs.set_status(node, "Cancelling...")
    return True


# --------------------------------------------------------------------------- runs without their node


def _ensure_exit_hook() -> None:
    global _exit_hook
    if not _exit_hook:
        atexit.register(detach_at_exit)
        _exit_hook = True


def detach_at_exit() -> None:
    """At process exit: the unfinished batches of our runs are detached, not lost.

    Their prompts already on servers keep rendering, the ledger keeps them unfinished
    (resumable), sequence locks are released. Python runs this after joining non-daemon
    threads, so a cancel chosen when the script closed has had its chance to reach the servers.
    """
    clusters: Dict[int, Any] = {}
    for run in active_runs():
        batch = run.batch
        if batch is None or not batch.finished:
            clusters[id(run.cluster)] = run.cluster
    for cluster in clusters.values():
        try:
            cluster.close(detach=True, timeout=DETACH_TIMEOUT)
        except Exception:  # noqa: BLE001 - exiting anyway: say why, go on with the next
            log.exception("ComfyUI Cluster: detaching the batches at exit failed")
