"""Resume from the node: finish its unfinished batch after Nuke closed, quit or crashed.

The node keeps the id of its latest batch (``ncc_batch``, saved with the script) and
where that batch's inputs were rendered (``ncc_batch_inputs``). Resume hands the id to
:meth:`Cluster.resume <nuke_comfy_cluster.core.api.Cluster.resume>` on a worker
thread (it reads the ledger and the servers' queues), then follows the batch like a
fresh submit: progress bar, status, Reads per sequence when it ends.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional, Sequence, Tuple

from ..core.jobs import Batch, BatchSnapshot
from . import inputs as input_files
from . import messages
from . import node as node_knobs
from .reads import frame_file
from .submit import NodeRun, get_cluster, run_for, start_run

log = logging.getLogger(__name__)


class ResumeRun(NodeRun):
    """A resume: the batch comes back from the ledger (on the worker: it reads the servers' queues)."""

    def __init__(
        self,
        node: Any,
        batch_id: str,
        server: Optional[str],
        mapper: Optional[input_files.InputMapper],
        run_dir: Optional[str],
        cluster: Any,
    ) -> None:
        super().__init__(node, node.name(), mapper, run_dir, cluster)
        self.batch_id = batch_id
        self.server = server

    def _submit(self) -> Batch:
        return self.cluster.resume(self.batch_id, {"server": self.server, "prepare": self.mapper})

    def _targets(self) -> Tuple[str, str]:
        batch = self.batch
        return (batch.output_dir or "", batch.sequence_name or "") if batch is not None else ("", "")

    def _cleanup(self, snapshot: Optional[BatchSnapshot]) -> None:
        if snapshot is None:
            return  # not resumed: the batch is still unfinished and a later Resume needs its inputs
        super()._cleanup(snapshot)

    def _failed_status(self, message: str) -> str:
        return "Not resumed: " + message

    def _failed(self, message: str) -> None:
        super()._failed(message)
        if self._node_alive():
            node_knobs.set_resumable(self.node, True)  # the artist may fix the cause and try again


def staged_inputs(node: Any) -> Tuple[Optional[input_files.InputMapper], Optional[str]]:
    """The batch's rendered inputs for Resume, rendered again from the node when they are gone.

    The ledger's workflow reads them from the run folder the batch was submitted with, so
    they go back there; they are rendered from the node's inputs as they are now.
    """
    knob = node.knob(node_knobs.K_BATCH_INPUTS)
    text = knob.getText() if knob is not None else ""
    if not text.strip():
        return None, None
    try:
        staged = json.loads(text)
        run_dir = str(staged["run_dir"])
        pairs: Sequence[Tuple[int, str]] = [(int(i), str(n)) for i, n in staged["inputs"]]
        first, last = int(staged["first"]), int(staged["last"])
        names = [node_knobs.INPUT_NAMES[i] for i, _ in pairs]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise node_knobs.SettingsError(f"The node's record of its rendered inputs is damaged ({e})") from e
    wanted = [
        frame_file(input_files.input_pattern(run_dir, name), frame)
        for name in names
        for frame in range(first, last + 1)
    ]
    if not all(os.path.isfile(path) for path in wanted):
        gone = [node_knobs.INPUT_NAMES[i] for i, _ in pairs if node.input(i) is None]
        if gone:
            raise node_knobs.SettingsError(
                "The rendered inputs of this batch are gone and {} not connected any more: reconnect to resume".format(
                    ", ".join(gone) + (" is" if len(gone) == 1 else " are")
                )
            )
        log.info("ComfyUI Cluster: rendering the inputs of %s again into %s", node.name(), run_dir)
        node_knobs.set_status(node, "Rendering inputs...", "")
        input_files.render_inputs(node, pairs, node_knobs.INPUT_NAMES, first, last, run_dir)
    return input_files.InputMapper(sorted({n for _, n in pairs}), os.path.basename(run_dir)), run_dir


def resume_node(node: Any) -> ResumeRun:
    """Resume the node's unfinished batch (main thread); returns the run, already started.

    Only local files are looked at here; the ledger and the servers are read on the run's thread.
    Raises SettingsError for what the artist must fix first.
    """
    if run_for(node) is not None:
        raise node_knobs.SettingsError(f"{node.name()} is already running")
    batch_id = node_knobs.batch_id_of(node)
    if not batch_id:
        raise node_knobs.SettingsError(f"{node.name()} has no batch to resume")
    server = node[node_knobs.K_SERVER].value()
    cluster = get_cluster()
    mapper, run_dir = staged_inputs(node)
    run = ResumeRun(node, batch_id, None if server == node_knobs.AUTO_SERVER else server, mapper, run_dir, cluster)
    start_run(run, node, f"Resuming batch {messages.short_id(batch_id)}...")
    return run
