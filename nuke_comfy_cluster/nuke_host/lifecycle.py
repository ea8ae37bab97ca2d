"""Batches across scripts and sessions: what a reopened script offers, what closing one asks.

::

    onScriptLoad / panel opens      a node takes back its run if this session still follows
    (main thread)                   its batch; else its batch is looked up in the ledger
                                    (worker thread) -> status + Resume button (main thread)
    onScriptClose / quit            runs still rendering: nuke.ask keep or cancel (GUI);
    (main thread)                   without a GUI they are kept and the log says how to resume

Keeping a batch does not stop it: while Nuke stays open it goes on in this
session (every frame is sent, and the reopened script follows it again); when the
process exits, :func:`~nuke_comfy_cluster.nuke_host.submit.detach_at_exit` detaches
it (``Cluster.close(detach=True)``): the prompts already on servers keep
rendering, the ledger keeps it unfinished, and Resume on the reopened node
collects them and sends the rest. Cancelling enqueues the cancels at once (no
network on the main thread); a Nuke that is quitting is held, bounded, until the
servers confirmed them (:func:`hold_exit_for_cancels`).

The ledger is read from the user's state folder directly: a script that loads does
not build the cluster (no thread, no socket, no server contacted).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from . import messages, submit
from . import node as node_knobs

log = logging.getLogger(__name__)

#: seconds a cancel chosen at close may keep an exiting Nuke alive while the servers confirm it
CANCEL_WAIT = 10.0

RESUMABLE, ELSEWHERE, ENDED, NOTHING = "resumable", "elsewhere", "ended", "nothing"


@dataclass(frozen=True)
class Probe:
    """What the ledger is asked about one node (read on the main thread)."""

    full_name: str
    batch_id: str
    output_dir: str
    sequence_name: str
    generation: int


@dataclass(frozen=True)
class Finding:
    """What the ledger says about one node's batch."""

    probe: Probe
    kind: str  # RESUMABLE / ELSEWHERE / ENDED / NOTHING
    summary: Any = None  # the ledger's BatchSummary, when there is one


# --------------------------------------------------------------------------- script load, panel open


def on_script_load() -> None:
    """``nuke.addOnScriptLoad``: every ComfyUI Cluster node of the opened script (GUI only)."""
    import nuke

    if not getattr(nuke, "GUI", False):
        return  # render farms and nuke -t open scripts to render them, not to resume batches
    try:
        check_nodes(node_knobs.cluster_nodes())
    except Exception:  # noqa: BLE001 - opening a script must never fail because of us
        log.exception("ComfyUI Cluster: looking for unfinished batches failed")


def check_nodes(nodes: Sequence[Any]) -> Optional[threading.Thread]:
    """Bring the nodes' status and Resume button up to date (main thread; the ledger is read on a
    worker, whose answer comes back through ``executeInMainThread``). Returns that worker."""
    probes: List[Probe] = []
    for node in nodes:
        try:
            if submit.run_for(node) is not None or attach_node(node):
                continue
            output_dir, sequence_name = node_knobs.output_target(node)
            probes.append(
                Probe(node.fullName(), node_knobs.batch_id_of(node), output_dir, sequence_name, submit.generation(node))
            )
        except Exception:  # noqa: BLE001 - one odd node (a broken expression) must not hide the others
            log.exception("ComfyUI Cluster: cannot look for the batch of %s", node.name())
    if not probes:
        return None
    thread = threading.Thread(target=_look_up, args=(probes,), name="ncc-ledger-check", daemon=True)
    thread.start()
    return thread


def attach_node(node: Any) -> bool:
    """A node of a reopened script takes back its run, or the outcome of its batch that ended
    meanwhile (main thread): by batch id, else run id, else the same sequence."""
    batch_id = node_knobs.batch_id_of(node)
    run_id = node[node_knobs.K_RUN].getText()
    output_dir, sequence_name = node_knobs.output_target(node)
    for run in submit.active_runs():
        if run._node_alive():
            continue
        batch = run.batch
        if (
            run.id == run_id
            or (batch is not None and batch.id == batch_id)
            or (
                batch is not None and batch.sequence_name == sequence_name and same_folder(batch.output_dir, output_dir)
            )
        ):
            run.attach(node)
            return True
    ended = submit.ended_away(batch_id)
    if ended is None:
        return False
    submit.show_outcome(node, *ended)
    return True


def same_folder(a: Optional[str], b: Optional[str]) -> bool:
    if not a or not b:
        return False
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def _look_up(probes: Sequence[Probe]) -> None:
    try:
        from ..core.ledger import Ledger

        ledger = Ledger()
        findings = [find_batch(ledger, p) for p in probes]
    except Exception:  # noqa: BLE001 - a broken ledger must not break the script
        log.exception("ComfyUI Cluster: cannot read the batch ledger")
        return
    submit.on_main(apply_findings, findings)


def find_batch(ledger: Any, probe: Probe) -> Finding:
    """The node's batch in the ledger (worker thread).

    Its own id first; when that one ended or is gone (pruned, or the script was closed
    without saving after Submit), the newest unfinished batch writing the same sequence:
    one sequence is written by one batch at a time.
    """
    from ..core.ledger_records import LedgerError

    summary = None
    if probe.batch_id:
        try:
            summary = ledger.summary(probe.batch_id)
        except LedgerError as e:
            log.info("ComfyUI Cluster: batch %s of %s: %s", probe.batch_id, probe.full_name, e)
    if summary is None or summary.state not in ("unfinished", "running"):
        for other in ledger.unfinished():
            if (
                other.batch_id != probe.batch_id
                and (other.sequence_name or "") == probe.sequence_name
                and same_folder(other.output_dir, probe.output_dir)
            ):
                summary = other
                break
    if summary is None:
        return Finding(probe, NOTHING)
    if summary.live:
        return Finding(probe, ELSEWHERE, summary)
    if summary.state == "unfinished":
        return Finding(probe, RESUMABLE, summary)
    return Finding(probe, ENDED, summary)


def apply_findings(findings: Sequence[Finding]) -> None:
    """Show what the ledger said (main thread); nodes that changed meanwhile are left alone."""
    import nuke

    for finding in findings:
        probe = finding.probe
        node = nuke.toNode("root." + probe.full_name)
        if node is None or not node_knobs.is_cluster_node(node):
            continue
        if submit.run_for(node) is not None or submit.generation(node) != probe.generation:
            continue  # a run started since the ledger was read: it knows better
        if node_knobs.batch_id_of(node) != probe.batch_id:
            continue  # another answer (or the artist) changed it
        try:
            _show(node, finding)
        except Exception:  # noqa: BLE001 - one odd node must not hide the others
            log.exception("ComfyUI Cluster: cannot show the batch of %s", probe.full_name)


def _show(node: Any, finding: Finding) -> None:
    summary = finding.summary
    if finding.kind == NOTHING:
        node_knobs.set_resumable(node, False)
        return
    if finding.kind == ENDED:
        node_knobs.set_resumable(node, False)
        if node[node_knobs.K_STATUS].value().startswith(messages.LIVE_STATUS_PREFIXES):
            node_knobs.set_status(node, messages.finished_line(summary), "")
        return
    node_knobs.ensure_batch_knobs(node)
    if node_knobs.batch_id_of(node) != summary.batch_id:
        node[node_knobs.K_BATCH].setValue(summary.batch_id)
    if finding.kind == ELSEWHERE:
        node_knobs.set_resumable(node, False)
        node_knobs.set_status(node, messages.elsewhere_line(summary), "")
    else:
        node_knobs.set_resumable(node, True)
        node_knobs.set_status(node, messages.resumable_line(summary), "")


# --------------------------------------------------------------------------- script close, quit


def on_script_close() -> None:
    """``nuke.addOnScriptClose`` (closing a script, ``scriptClear`` and quitting Nuke all run it)."""
    try:
        settle_runs()
    except Exception:  # noqa: BLE001 - closing must never fail because of us
        log.exception("ComfyUI Cluster: deciding what happens to the running batches failed")


def pending_runs() -> List[submit.NodeRun]:
    """Runs still rendering that nobody decided about yet."""
    runs = []
    for run in submit.active_runs():
        batch = run.batch
        if run.on_close or run.cancelling or (batch is not None and batch.finished):
            continue
        runs.append(run)
    return runs


def settle_runs() -> Optional[str]:
    """Ask (GUI) or decide (no GUI) what happens to the runs still rendering (main thread).

    Returns "keep", "cancel" or None when nothing was running. Nothing here waits for a server.
    """
    import nuke

    runs = pending_runs()
    if not runs:
        return None
    if not getattr(nuke, "GUI", False):
        # a farm or nuke -t session: nobody to ask, and cancelling would throw away farm work
        keep(runs)
        for run in runs:
            batch = run.batch
            log.warning(
                "ComfyUI Cluster: the script closed while %s was rendering; nobody to ask without a GUI, so "
                "it keeps rendering on the servers and is detached when this process exits. Resume it "
                "from the node, or with: python -m nuke_comfy_cluster resume %s",
                run.node_name,
                batch.id if batch is not None else "<its batch id, from: python -m nuke_comfy_cluster batches>",
            )
        return "keep"
    question = messages.close_question([(r.node_name, r.batch.snapshot() if r.batch else None) for r in runs])
    if nuke.ask(question):
        keep(runs)
        return "keep"
    cancel(runs)
    return "cancel"


def keep(runs: Sequence[submit.NodeRun]) -> None:
    for run in runs:
        run.on_close = "keep"
        log.info("ComfyUI Cluster: %s keeps rendering after its script closed", run.node_name)


def cancel(runs: Sequence[submit.NodeRun]) -> None:
    """Cancel the runs: enqueued at once (the dispatcher does the HTTP), and an exiting Python
    is held, bounded, until the servers confirmed (see :func:`hold_exit_for_cancels`)."""
    for run in runs:
        run.on_close = "cancel"
        run.cancel()
    hold_exit_for_cancels()


_holding_exit = False


def hold_exit_for_cancels() -> None:
    """Make an exiting Python wait for the cancels chosen at close before it stops anything.

    Quitting Nuke runs onScriptClose and then ends the process: the cancels must reach the
    servers first (without this, a test that exits right after quitting leaves our prompts
    queued). A non-daemon thread does not guarantee it: since Python 3.9 ``threading._shutdown``
    runs its own exit hooks (``concurrent.futures`` stops every executor, and the dispatcher
    sends its HTTP through one) *before* it joins non-daemon threads, so a cancel not yet handed
    to the executor would be dropped. A hook registered the same way, after
    ``concurrent.futures`` was imported, runs before that one (they run in reverse order).
    While Nuke stays open it does nothing: it only runs at exit.
    """
    global _holding_exit
    if _holding_exit:
        return
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit in this Python")
        register(wait_for_cancels)
    except RuntimeError:  # another Python, or already shutting down: the next best thing
        threading.Thread(target=wait_for_cancels, name="ncc-cancel-on-close", daemon=False).start()
        return
    _holding_exit = True


def wait_for_cancels(timeout: float = CANCEL_WAIT) -> bool:
    """Wait (bounded) until every run cancelled at close has ended; True when all did.

    A batch counts as cancelled only once the servers answered (or failed to), so its end
    means the deletes and interrupts went out.
    """
    import time

    deadline = time.monotonic() + timeout
    ok = True
    for run in submit.active_runs():
        if run.on_close != "cancel":
            continue
        left = max(0.0, deadline - time.monotonic())
        batch = run.batch
        if batch is not None:
            ok = batch.wait(left).finished and ok
        else:
            run.join(left)
            batch = run.batch
            ok = (batch is None or batch.wait(max(0.0, deadline - time.monotonic())).finished) and ok
    if not ok:
        log.warning(
            "ComfyUI Cluster: some cancels were not confirmed by the servers in %.0f s; clean up with: "
            "python -m nuke_comfy_cluster cleanup",
            timeout,
        )
    return ok
