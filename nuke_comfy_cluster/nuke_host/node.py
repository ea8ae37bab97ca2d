"""The ComfyUI Cluster node: a Group built by code, its knobs, their callbacks, its settings.

Everything here runs on Nuke's main thread (knob scripts, menu commands) and does
no network I/O: the server list comes from the pool's configuration, not from
the servers. The submit flow reads a node through :func:`read_settings` and
never touches knobs from another thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from ..core.errors import ClusterError, WorkflowError
from ..core.results import ensure_safe_name
from ..core.templating import find_inputs, validate_workflow
from .messages import tcl_escape

log = logging.getLogger(__name__)

NODE_PREFIX = "ComfyCluster"
#: hidden knob marking our Groups; its value is the knob layout version
MARKER = "ncc_node"
LAYOUT_VERSION = 1
INPUT_NAMES = ("in1", "in2", "in3")
AUTO_SERVER = "Auto (least loaded)"
MODE_CURRENT, MODE_RANGE, MODE_ITERATIONS = "current frame", "frame range", "iterations"
MODES = (MODE_CURRENT, MODE_RANGE, MODE_ITERATIONS)
MAP_AUTO, MAP_NONE = "auto", "none"

K_WORKFLOW = "workflow"
K_RELOAD = "reload_workflow"
K_INFO = "workflow_info"
K_SERVER = "server"
K_REFRESH = "refresh_servers"
K_MODE = "mode"
K_FROM_INPUT = "range_from_input"
K_FIRST = "first"
K_LAST = "last"
K_ITERATIONS = "iterations"
K_SEED = "base_seed"
K_OUTPUT = "output_dir"
K_SEQUENCE = "sequence_name"
K_OVERWRITE = "overwrite"
K_SUBMIT = "submit"
K_CANCEL = "cancel"
K_STATUS = "status"
K_DETAILS = "details"
K_RUN = "ncc_run"  # id of the active run (empty when idle), so Cancel finds it
K_RESUME = "resume"
#: hidden, saved with the script: the ledger id of the node's latest batch, so a reopened
#: script can offer Resume
K_BATCH = "ncc_batch"
#: hidden, saved: where that batch's inputs were rendered (JSON), so Resume can feed them again
K_BATCH_INPUTS = "ncc_batch_inputs"


def map_knob(index: int) -> str:
    return "map_" + INPUT_NAMES[index]


def _script(call: str) -> str:
    """A knob script that imports this package lazily (a farm without it just skips).

    It binds no name: every knob script of the session shares one namespace, and a
    knobChanged fired while Submit runs would otherwise delete the name Submit uses.
    The functions it calls catch their own errors, so only the import can get here.
    """
    return (
        "try:\n"
        f"    __import__('nuke_comfy_cluster.nuke_host.actions', fromlist=['actions']).{call}()\n"
        "except ImportError:\n"
        "    pass\n"
    )


KNOB_CHANGED_SCRIPT = _script("on_knob_changed")


class SettingsError(ClusterError):
    """The node's knobs cannot make a submission (missing workflow, bad range, ...)."""


@dataclass(frozen=True)
class NodeSettings:
    """Everything a submission needs from the node, read once on the main thread."""

    node_name: str
    workflow_path: str
    server: Optional[str]  # None: least loaded (or the panel's pin)
    mode: str
    first: int
    last: int
    iterations: int
    base_seed: int
    #: (input index, LoadImage node id) for each connected input that feeds the workflow
    inputs: Tuple[Tuple[int, str], ...]
    output_dir: str
    sequence_name: str
    overwrite: bool = False  # replace frames of the sequence that are already on disk
    workflow: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def frames(self) -> List[int]:
        if self.mode == MODE_RANGE:
            return list(range(self.first, self.last + 1))
        return [self.first]


# --------------------------------------------------------------------------- workflow


def load_workflow(path: str) -> Dict[str, Any]:
    """Read and check an API-format workflow file; SettingsError / WorkflowError say what is wrong."""
    if not path:
        raise SettingsError("No workflow file: choose an API-format JSON file (ComfyUI 'Save (API Format)')")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise WorkflowError(f"Cannot read the workflow {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise WorkflowError(f"The workflow {path} is not valid JSON: {e}") from e
    return validate_workflow(data, os.path.basename(path))


def map_choices(workflow: Optional[Dict[str, Any]]) -> List[str]:
    """Values of an input-mapping knob: auto, none, then each LoadImage as ``#id Class (value)``."""
    choices = [MAP_AUTO, MAP_NONE]
    if workflow:
        for item in find_inputs(workflow)["load_image"]:
            choices.append(f"#{item.node_id} {item.class_type} ({item.value})")
    return choices


def choice_node_id(choice: str) -> Optional[str]:
    if choice.startswith("#"):
        return choice[1:].split(" ", 1)[0]
    return None


def workflow_summary(workflow: Dict[str, Any]) -> str:
    found = find_inputs(workflow)
    lines = []
    for key, title in (("load_image", "LoadImage"), ("save_image", "SaveImage"), ("seed", "seed")):
        items = found[key]
        if not items:
            lines.append(f"{title}: none")
        for item in items:
            lines.append(f"{title}: #{item.node_id} {item.class_type}.{item.input} = {item.value}")
    if not found["seed"]:
        lines.append("(no seed input: iterations would all be the same image)")
    return "\n".join(lines)


def resolve_inputs(
    connected: Sequence[int], choices: Sequence[str], workflow: Dict[str, Any]
) -> Tuple[Tuple[int, str], ...]:
    """Pair connected inputs with LoadImage nodes: explicit choices first, then ``auto`` in order."""
    loads = [item.node_id for item in find_inputs(workflow)["load_image"]]
    taken: List[str] = []
    pairs: Dict[int, str] = {}
    for index in connected:
        node_id = choice_node_id(choices[index]) if index < len(choices) else None
        if node_id is not None:
            if node_id not in loads:
                raise SettingsError(
                    f"Input {INPUT_NAMES[index]} is mapped to LoadImage #{node_id}, which the workflow no longer has: reload the workflow"
                )
            pairs[index] = node_id
            taken.append(node_id)
    free = [n for n in loads if n not in taken]
    for index in connected:
        choice = choices[index] if index < len(choices) else MAP_AUTO
        if index in pairs or choice != MAP_AUTO:
            continue
        if free:
            pairs[index] = free.pop(0)
    return tuple(sorted(pairs.items()))


# --------------------------------------------------------------------------- building


def _unique_name(nuke: Any) -> str:
    n = 1
    while nuke.toNode(f"{NODE_PREFIX}{n}") is not None:
        n += 1
    return f"{NODE_PREFIX}{n}"


def _button(nuke: Any, name: str, label: str, call: str, newline: bool = False) -> Any:
    knob = nuke.PyScript_Knob(name, label, _script(call))
    if newline:
        knob.setFlag(nuke.STARTLINE)
    return knob


def add_knobs(node: Any) -> None:
    """The node's interface, on a 'ComfyUI Cluster' tab."""
    import nuke

    marker = nuke.Int_Knob(MARKER, "")
    marker.setValue(LAYOUT_VERSION)
    marker.setFlag(nuke.INVISIBLE)
    run = nuke.String_Knob(K_RUN, "")
    run.setFlag(nuke.INVISIBLE)
    knobs = [
        nuke.Tab_Knob("ncc_tab", "ComfyUI Cluster"),
        marker,
        run,
        *_batch_knobs(nuke),
        nuke.File_Knob(K_WORKFLOW, "workflow (API JSON)"),
        _button(nuke, K_RELOAD, "Reload", "reload_this"),
        nuke.Text_Knob(K_INFO, "workflow inputs", "no workflow loaded"),
        nuke.Enumeration_Knob(K_SERVER, "server", [AUTO_SERVER]),
        _button(nuke, K_REFRESH, "Refresh", "refresh_servers_this"),
        nuke.Enumeration_Knob(K_MODE, "mode", list(MODES)),
        nuke.Boolean_Knob(K_FROM_INPUT, "use input range"),
        nuke.Int_Knob(K_FIRST, "frame range"),
        nuke.Int_Knob(K_LAST, ""),
        nuke.Int_Knob(K_ITERATIONS, "iterations"),
        nuke.Int_Knob(K_SEED, "base seed"),
        nuke.Text_Knob("ncc_inputs_divider", "input mapping"),
    ]
    knobs += [
        nuke.Enumeration_Knob(map_knob(i), f"{INPUT_NAMES[i]} ->", [MAP_AUTO, MAP_NONE])
        for i in range(len(INPUT_NAMES))
    ]
    knobs += [
        nuke.Text_Knob("ncc_output_divider", "output"),
        nuke.File_Knob(K_OUTPUT, "output folder"),
        nuke.String_Knob(K_SEQUENCE, "sequence name"),
        nuke.Boolean_Knob(K_OVERWRITE, "overwrite"),
        _button(nuke, K_SUBMIT, "Submit", "submit_this", newline=True),
        _button(nuke, K_CANCEL, "Cancel", "cancel_this"),
        _resume_button(nuke),
        nuke.Text_Knob(K_STATUS, "status", "idle"),
        nuke.Text_Knob(K_DETAILS, "", ""),
    ]
    for knob in knobs:
        node.addKnob(knob)
    node[K_FROM_INPUT].setValue(True)
    node[K_LAST].clearFlag(nuke.STARTLINE)
    node[K_ITERATIONS].setValue(4)
    node[K_OUTPUT].setTooltip("Empty: a comfy_cluster/<node> folder beside the script (or in the temp folder).")
    node[K_SEQUENCE].setTooltip("Empty: the node's name. Frames land in <output folder>/<name>.####.<ext>.")
    node[K_OVERWRITE].clearFlag(nuke.STARTLINE)
    node[K_OVERWRITE].setTooltip("Replace frames of this sequence already on disk (off: such a submission is refused).")
    node["knobChanged"].setValue(KNOB_CHANGED_SCRIPT)


def _batch_knobs(nuke: Any) -> List[Any]:
    knobs = [nuke.String_Knob(K_BATCH, ""), nuke.String_Knob(K_BATCH_INPUTS, "")]
    for knob in knobs:
        knob.setFlag(nuke.INVISIBLE)  # hidden, yet written to the script (only DO_NOT_WRITE is not)
    return knobs


def _resume_button(nuke: Any) -> Any:
    knob = _button(nuke, K_RESUME, "Resume", "resume_this")
    knob.setTooltip(
        "Finish this node's unfinished batch (after Nuke closed or crashed): frames already on "
        "disk are kept, prompts still on the servers are collected, the rest is sent again."
    )
    knob.setEnabled(False)  # enabled when the ledger holds an unfinished batch of this node
    return knob


def ensure_batch_knobs(node: Any) -> None:
    """Give a node saved before Resume existed its batch knobs (added at the end of its tab)."""
    import nuke

    for knob in _batch_knobs(nuke) + [_resume_button(nuke)]:
        if node.knob(knob.name()) is None:
            node.addKnob(knob)


def batch_id_of(node: Any) -> str:
    """The id of the node's latest batch ("" for none, and for nodes older than the knob)."""
    knob = node.knob(K_BATCH)
    return knob.getText().strip() if knob is not None else ""


def set_resumable(node: Any, resumable: bool) -> None:
    knob = node.knob(K_RESUME)
    if knob is not None and knob.enabled() != resumable:
        knob.setEnabled(resumable)


def group_path(node: Any) -> str:
    """The full name of the Group holding ``node`` ("" for root)."""
    return node.fullName().rpartition(".")[0]


def parent_group(node: Any) -> Any:
    """The Group holding ``node`` (root at the top), found by full name from root.

    ``nuke.toNode`` is relative to the current context, which is not root inside a
    Group's own knob scripts or a ``with group:`` block.
    """
    import nuke

    path = group_path(node)
    return nuke.toNode("root." + path) if path else nuke.root()


def _target_group(nuke: Any) -> Any:
    # menu and toolbar commands run in root's context: the node graph the artist
    # clicked into last is where a new node belongs (what Nuke's own Paste does)
    hit = getattr(nuke, "lastHitGroup", None)
    return hit() if hit is not None else nuke.thisGroup()


def _upstream_in(nuke: Any, where: Any) -> Optional[Any]:
    """The selected node the artist means, if it sits in ``where``.

    ``selectedNodes()`` lists inputs first, so its first entry is the top of a
    selected chain; ``selectedNode()`` is the node the artist is thinking about.
    """
    try:
        chosen = nuke.selectedNode()
    except ValueError:  # Nuke's "No node selected"
        return None
    here = "" if where.Class() == "Root" else where.fullName()
    return chosen if group_path(chosen) == here else None


def create_node() -> Any:
    """Create a ComfyUI Cluster node in the node graph the artist works in, below the selected node."""
    import nuke

    where = _target_group(nuke)
    with where:
        upstream = _upstream_in(nuke, where)
        group = nuke.nodes.Group()
        group.setName(_unique_name(nuke))
    with group:
        inputs = [nuke.nodes.Input(name=name) for name in INPUT_NAMES]
        output = nuke.nodes.Output()
        output.setInput(0, inputs[0])
    add_knobs(group)
    if upstream is not None and group.setInput(0, upstream):
        group.setXYpos(upstream.xpos(), upstream.ypos() + 80)
    set_range_from_input(group)
    refresh_servers(group)
    return group


def is_cluster_node(node: Any) -> bool:
    return node is not None and node.knob(MARKER) is not None


def cluster_nodes() -> List[Any]:
    """Every ComfyUI Cluster node of the script, inside Groups too."""
    import nuke

    with nuke.root():
        return [n for n in nuke.allNodes("Group", recurseGroups=True) if is_cluster_node(n)]


# --------------------------------------------------------------------------- callbacks


def server_choices(names: Sequence[str], current: str = "") -> List[str]:
    """Auto + configured names; a saved choice that vanished stays so the script keeps its value."""
    choices = [AUTO_SERVER] + [n for n in names if n != AUTO_SERVER]
    if current and current not in choices:
        choices.append(current)
    return choices


def configured_server_names() -> List[str]:
    """Names from the shared pool's configuration (no network)."""
    from ..core.api import default_cluster

    return [s.name for s in default_cluster().pool.servers]


def refresh_servers(node: Any, names: Optional[Sequence[str]] = None) -> None:
    knob = node[K_SERVER]
    current = knob.value()
    if names is None:
        try:
            names = configured_server_names()
        except Exception as e:  # noqa: BLE001 - a broken config must not break the node
            log.warning("ComfyUI Cluster: cannot list servers: %s", e)
            names = []
    choices = server_choices(names, current)
    if list(knob.values()) != choices:
        knob.setValues(choices)
    knob.setValue(current if current in choices else AUTO_SERVER)


def input_range(node: Any) -> Tuple[int, int]:
    """The first connected input's frame range, else the script's."""
    import nuke

    for i in range(len(INPUT_NAMES)):
        upstream = node.input(i)
        if upstream is not None:
            return int(upstream.firstFrame()), int(upstream.lastFrame())
    root = nuke.root()
    return int(root["first_frame"].value()), int(root["last_frame"].value())


#: nodes (full names) whose range this module is setting right now
_setting_range: Set[str] = set()


@contextmanager
def _our_range_change(node: Any) -> Iterator[None]:
    # setValue runs knobChanged at once while the panel is open: between setting
    # first and last the pair matches nothing, and must not read as the artist typing
    key = node.fullName()
    _setting_range.add(key)
    try:
        yield
    finally:
        _setting_range.discard(key)


def set_range_from_input(node: Any) -> None:
    if not node[K_FROM_INPUT].value():
        return
    first, last = input_range(node)
    with _our_range_change(node):
        if node[K_FIRST].value() != first:
            node[K_FIRST].setValue(first)
        if node[K_LAST].value() != last:
            node[K_LAST].setValue(last)


def reload_workflow(node: Any) -> Optional[Dict[str, Any]]:
    """Read the workflow file into the node's lists; errors go to the info line, not up."""
    path = node[K_WORKFLOW].evaluate()
    if not path:
        set_text(node, K_INFO, "no workflow loaded")
        workflow = None
    else:
        try:
            workflow = load_workflow(path)
        except WorkflowError as e:
            set_text(node, K_INFO, f"cannot use this workflow: {e.message}")
            workflow = None
        else:
            set_text(node, K_INFO, workflow_summary(workflow))
    choices = map_choices(workflow)
    for i in range(len(INPUT_NAMES)):
        knob = node[map_knob(i)]
        current = knob.value()
        keep = current
        if current not in choices:
            wanted = choice_node_id(current)
            keep = next((c for c in choices if wanted is not None and choice_node_id(c) == wanted), MAP_AUTO)
        knob.setValues(choices)
        knob.setValue(keep)
    return workflow


def knob_changed(node: Any, knob: Any) -> None:
    """The Group's knobChanged: keep lists and ranges in step with what the artist did."""
    name = knob.name()
    if name == K_WORKFLOW:
        reload_workflow(node)
    elif name in (K_FIRST, K_LAST):
        if node.fullName() in _setting_range:
            return
        # typing a range means the artist wants that range, not the input's
        if node[K_FROM_INPUT].value() and (node[K_FIRST].value(), node[K_LAST].value()) != input_range(node):
            node[K_FROM_INPUT].setValue(False)
    elif name in (K_FROM_INPUT, "inputChange"):
        set_range_from_input(node)
    elif name == "showPanel":
        # knobChanged (inputChange) runs only while the panel is open: the input may
        # have changed since, so the range is brought up to date when it is seen
        set_range_from_input(node)
        refresh_servers(node)


# --------------------------------------------------------------------------- settings

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TCL_SPECIAL = re.compile(r"[\[\]$\\]")


def safe_tag(text: str) -> str:
    """A folder/file name part from a script or node name (no frame tokens, no separators)."""
    return _SAFE.sub("_", text).strip("._") or "untitled"


def script_path() -> str:
    import nuke

    return nuke.root()["name"].value() or ""


def default_output_dir(script: str, node_name: str) -> str:
    if script:
        return os.path.join(os.path.dirname(script), "comfy_cluster", safe_tag(node_name))
    return os.path.join(tempfile.gettempdir(), "nuke_comfy_cluster", "output", safe_tag(node_name))


def output_target(node: Any) -> Tuple[str, str]:
    """Where the node's results go: (output folder, sequence name), defaults filled in, unchecked."""
    name = node.name()
    output_dir = node[K_OUTPUT].evaluate() or default_output_dir(script_path(), name)
    # getText: the name as typed (value() would run any [...] in it as TCL)
    return output_dir, node[K_SEQUENCE].getText() or safe_tag(name)


def read_settings(node: Any) -> NodeSettings:
    """The node's knobs as a :class:`NodeSettings`; SettingsError/WorkflowError say what is missing."""
    import nuke

    name = node.name()
    workflow = load_workflow(node[K_WORKFLOW].evaluate())
    server = node[K_SERVER].value()
    mode = node[K_MODE].value()
    if mode not in MODES:
        raise SettingsError(f"Unknown mode {mode!r}")
    if mode == MODE_RANGE:
        set_range_from_input(node)
        first, last = int(node[K_FIRST].value()), int(node[K_LAST].value())
        if last < first:
            raise SettingsError(f"The frame range {first}-{last} is empty: last is before first")
    else:
        first = last = int(nuke.frame())
    iterations = int(node[K_ITERATIONS].value())
    if mode == MODE_ITERATIONS and iterations < 1:
        raise SettingsError("Iterations must be at least 1")
    connected = [i for i in range(len(INPUT_NAMES)) if node.input(i) is not None]
    choices = [node[map_knob(i)].value() for i in range(len(INPUT_NAMES))]
    output_dir, sequence = output_target(node)
    try:
        ensure_safe_name(sequence)
    except ClusterError as e:
        raise SettingsError(f"Sequence name {sequence!r} must be a plain file name (no folders)") from e
    if _TCL_SPECIAL.search(sequence):
        raise SettingsError(
            f"Sequence name {sequence!r} must not hold [ ] $ or \\: the Read node would evaluate them as TCL"
        )
    return NodeSettings(
        node_name=name,
        workflow_path=node[K_WORKFLOW].evaluate(),
        server=None if server == AUTO_SERVER else server,
        mode=mode,
        first=first,
        last=last,
        iterations=iterations,
        base_seed=int(node[K_SEED].value()),
        inputs=resolve_inputs(connected, choices, workflow),
        output_dir=output_dir,
        sequence_name=sequence,
        # nodes saved before the knob existed do not overwrite
        overwrite=bool(node[K_OVERWRITE].value()) if node.knob(K_OVERWRITE) is not None else False,
        workflow=workflow,
    )


def set_text(node: Any, knob: str, text: str) -> None:
    """Show ``text`` as is in one of the node's text lines (Nuke evaluates them as TCL)."""
    node[knob].setValue(tcl_escape(text))


def set_status(node: Any, status: str, details: Optional[str] = None) -> None:
    set_text(node, K_STATUS, status)
    if details is not None:
        set_text(node, K_DETAILS, details)
