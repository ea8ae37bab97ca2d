"""The ComfyUI Cluster node: building it, its knobs, their callbacks, reading its settings."""

from __future__ import annotations

import json

import pytest

from nuke_comfy_cluster.nuke_host import node as N
from nuke_comfy_cluster.nuke_host.startup import MENU_NAME, NODE_COMMAND
from nuke_comfy_cluster.nuke_host.submit import run_for

from .conftest import WORKFLOWS
from .fake_nuke import FakeNuke

#: nothing listens on port 1: the pool's threads get "refused" at once
OFFLINE = [
    {"name": "gpu-1", "ip": "127.0.0.1", "port": 1},
    {"name": "gpu-2", "ip": "127.0.0.1", "port": 1, "priority": 1},
]


@pytest.fixture
def node(fake: FakeNuke, configure, plate):
    configure(OFFLINE)
    plate(1001, 1024)
    fake.run_file(str(__import__("tests.conftest", fromlist=["REPO"]).REPO / "menu.py"))
    # the artist clicks the toolbar entry
    return fake.menus["Nodes"].findItem(f"{MENU_NAME}/{NODE_COMMAND}").invoke()


def test_the_toolbar_command_builds_a_connected_group(fake: FakeNuke, node):
    assert node.Class() == "Group" and node.name() == "ComfyCluster1"
    assert N.is_cluster_node(node)
    inside = node.nodes()
    assert [n.name() for n in inside if n.Class() == "Input"] == list(N.INPUT_NAMES)
    output = next(n for n in inside if n.Class() == "Output")
    assert output.input(0).name() == "in1"  # passes its first input through
    assert node.input(0).name() == "Plate"
    assert node.ypos() > fake.nuke.toNode("Plate").ypos()


def test_knobs_exist_with_their_defaults(node):
    kinds = {
        N.K_WORKFLOW: "File_Knob",
        N.K_RELOAD: "PyScript_Knob",
        N.K_INFO: "Text_Knob",
        N.K_SERVER: "Enumeration_Knob",
        N.K_REFRESH: "PyScript_Knob",
        N.K_MODE: "Enumeration_Knob",
        N.K_FROM_INPUT: "Boolean_Knob",
        N.K_FIRST: "Int_Knob",
        N.K_LAST: "Int_Knob",
        N.K_ITERATIONS: "Int_Knob",
        N.K_SEED: "Int_Knob",
        N.K_OUTPUT: "File_Knob",
        N.K_SEQUENCE: "String_Knob",
        N.K_OVERWRITE: "Boolean_Knob",
        N.K_SUBMIT: "PyScript_Knob",
        N.K_CANCEL: "PyScript_Knob",
        N.K_STATUS: "Text_Knob",
        N.map_knob(0): "Enumeration_Knob",
        N.map_knob(2): "Enumeration_Knob",
    }
    assert {name: node[name].Class() for name in kinds} == kinds
    assert node[N.K_MODE].values() == list(N.MODES)
    # the server list comes from the shared pool's configuration
    assert node[N.K_SERVER].values() == [N.AUTO_SERVER, "gpu-1", "gpu-2"]
    assert node[N.K_SERVER].value() == N.AUTO_SERVER
    # the frame range follows the input
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (1001, 1024)
    assert node[N.K_ITERATIONS].value() == 4
    assert node[N.K_OVERWRITE].value() is False
    assert node[N.K_STATUS].value() == "idle"
    assert "on_knob_changed" in node["knobChanged"].value()


def test_without_input_the_range_is_the_scripts(fake: FakeNuke, configure):
    configure(OFFLINE)
    fake.root_node["first_frame"].setValue(10)
    fake.root_node["last_frame"].setValue(20)
    node = N.create_node()
    assert node.input(0) is None
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (10, 20)
    assert N.create_node().name() == "ComfyCluster2"


def test_choosing_a_workflow_lists_its_inputs_and_fills_the_mapping(fake: FakeNuke, node):
    fake.user_set(node, N.K_WORKFLOW, str(WORKFLOWS / "loadimage.json"))
    info = node[N.K_INFO].value()
    assert "LoadImage: #1 LoadImage.image = rig_input.png" in info
    assert "SaveImage: #3 SaveImage.filename_prefix = loadimage" in info
    assert "no seed input" in info
    assert node[N.map_knob(0)].values() == ["auto", "none", "#1 LoadImage (rig_input.png)"]

    fake.user_set(node, N.map_knob(0), "#1 LoadImage (rig_input.png)")
    fake.press(node, N.K_RELOAD)  # the choice survives a reload
    assert node[N.map_knob(0)].value() == "#1 LoadImage (rig_input.png)"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"nodes": [], "links": []}), "UI-format"),
        (json.dumps({"1": {"inputs": {}}}), "has no class_type"),
    ],
)
def test_a_bad_workflow_is_explained_on_the_node(fake: FakeNuke, node, tmp_path, content, expected):
    path = tmp_path / "wf.json"
    path.write_text(content, encoding="utf-8")
    fake.user_set(node, N.K_WORKFLOW, str(path))
    assert node[N.K_INFO].value().startswith("cannot use this workflow")
    assert expected in node[N.K_INFO].value()
    assert node[N.map_knob(0)].values() == ["auto", "none"]


def test_typing_a_range_stops_following_the_input(fake: FakeNuke, node, plate):
    fake.user_set(node, N.K_FIRST, 1010)
    assert node[N.K_FROM_INPUT].value() is False
    longer = plate(1, 50, name="Longer")
    fake.user_connect(node, 0, longer)
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (1010, 1024)  # kept
    # the panel is open: setting first (then last) runs knobChanged in between, which
    # must not take the half-updated pair for the artist typing a range
    fake.user_set(node, N.K_FROM_INPUT, True)
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (1, 50)
    assert node[N.K_FROM_INPUT].value() is True
    fake.user_connect(node, 0, fake.nuke.toNode("Plate"))
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (1001, 1024)
    assert node[N.K_FROM_INPUT].value() is True


def test_a_range_changed_while_the_panel_was_closed_is_current_when_it_opens(fake: FakeNuke, node, plate):
    fake.close_properties(node)
    fake.user_connect(node, 0, plate(1, 50, name="Longer"))  # no knobChanged: the panel is closed
    fake.open_properties(node)
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (1, 50)
    assert node[N.K_FROM_INPUT].value() is True


def test_buttons_leave_no_name_in_the_shared_script_namespace(fake: FakeNuke, node):
    fake.open_properties(node)  # every status line set now runs knobChanged inside the button's script
    before = set(fake.script_globals)
    fake.press(node, N.K_SUBMIT)  # refused (no workflow): status and message, no exception
    fake.press(node, N.K_CANCEL)
    fake.press(node, N.K_RELOAD)
    assert set(fake.script_globals) == before
    assert fake.shown(node[N.K_STATUS]) == "Nothing to cancel: this node is not running"


def test_a_new_node_attaches_to_the_node_the_artist_means(fake: FakeNuke, configure):
    configure(OFFLINE)
    top = fake.nuke.nodes.Read(name="Top", file="/footage/top.####.exr", first=1, last=10)
    grade = fake.nuke.nodes.Group(name="Grade")
    grade.setInput(0, top)
    top.setSelected(True)
    grade.setSelected(True)
    assert fake.nuke.selectedNodes()[0] is top  # Nuke lists inputs first
    node = N.create_node()
    assert node.input(0) is grade


def test_in_a_group_the_node_is_made_and_found_there(fake: FakeNuke, configure):
    configure(OFFLINE)
    with fake.nuke.root():
        shot = fake.nuke.nodes.Group(name="Shot")
    with shot:
        plate = fake.nuke.nodes.Read(name="Inner", file="/footage/inner.####.exr", first=5, last=9)
    plate.setSelected(True)
    fake.last_hit_group = shot  # the artist works in the Shot group's node graph
    node = N.create_node()
    assert node.fullName() == "Shot.ComfyCluster1"
    assert node.input(0) is plate
    assert (node[N.K_FIRST].value(), node[N.K_LAST].value()) == (5, 9)
    assert N.cluster_nodes() == [node]  # what Refresh Server Status updates
    assert N.parent_group(node) is shot
    with node:  # a Group's own knob scripts run in its context: lookups must not depend on it
        assert N.parent_group(node) is shot


def test_text_shows_as_typed_and_a_sequence_name_is_not_evaluated(fake: FakeNuke, node):
    fake.open_properties(node)
    text = r"Failed: IndexError in x[0] at C:\new\tmp for $HOME [frames 1001-1003]"
    N.set_status(node, text, text)
    assert fake.shown(node[N.K_STATUS]) == text  # what the panel shows is what was meant
    assert fake.shown(node[N.K_DETAILS]) == text

    fake.user_set(node, N.K_WORKFLOW, str(WORKFLOWS / "fast.json"))
    fake.user_set(node, N.K_SEQUENCE, "shot_[value name]")
    fake.press(node, N.K_SUBMIT)
    assert "must not hold [ ] $" in fake.shown(node[N.K_STATUS])
    assert fake.called("nuke.execute") == []


def test_opening_the_panel_refreshes_servers_and_keeps_a_vanished_choice(fake: FakeNuke, node, configure):
    fake.user_set(node, N.K_SERVER, "gpu-2")
    configure([{"name": "gpu-3", "ip": "127.0.0.1", "port": 1}])
    fake.open_properties(node)
    assert node[N.K_SERVER].values() == [N.AUTO_SERVER, "gpu-3", "gpu-2"]
    assert node[N.K_SERVER].value() == "gpu-2"  # the script keeps what the artist chose


def test_settings_pair_inputs_with_load_images(fake: FakeNuke, node):
    fake.user_set(node, N.K_WORKFLOW, str(WORKFLOWS / "loadimage.json"))
    fake.user_set(node, N.K_MODE, N.MODE_RANGE)
    fake.user_set(node, N.K_SERVER, "gpu-1")
    s = N.read_settings(node)
    assert s.inputs == ((0, "1"),)
    assert s.frames == list(range(1001, 1025))
    assert s.server == "gpu-1"
    assert s.sequence_name == "ComfyCluster1"
    assert s.output_dir.endswith("ComfyCluster1")

    fake.user_set(node, N.map_knob(0), N.MAP_NONE)
    assert N.read_settings(node).inputs == ()
    fake.current_frame = 1010
    fake.user_set(node, N.K_MODE, N.MODE_CURRENT)
    assert N.read_settings(node).frames == [1010]


def test_resolve_inputs_explicit_first_then_auto_in_order():
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}},
    }
    choices = ["auto", "#1 LoadImage (a.png)", "auto"]
    assert N.resolve_inputs([0, 1, 2], choices, wf) == ((0, "2"), (1, "1"), (2, "3"))
    assert N.resolve_inputs([2], ["auto", "auto", "auto"], wf) == ((2, "1"),)
    assert N.resolve_inputs([0, 1], ["none", "auto", "auto"], wf) == ((1, "1"),)
    with pytest.raises(N.SettingsError, match="no longer has"):
        N.resolve_inputs([0], ["#9 LoadImage (x)"], wf)


def test_submit_without_a_workflow_explains_and_starts_nothing(fake: FakeNuke, node):
    fake.press(node, N.K_SUBMIT)
    assert fake.messages and "No workflow file" in fake.messages[-1]
    assert node[N.K_STATUS].value().startswith("Not submitted: No workflow file")
    assert run_for(node) is None
    with pytest.raises(N.SettingsError):
        N.read_settings(node)


@pytest.mark.parametrize(
    "knob, value, expected",
    [(N.K_SEQUENCE, "../escape", "plain file name"), (N.K_LAST, 900, "range 1001-900 is empty")],
)
def test_bad_settings_are_refused_before_any_work(fake: FakeNuke, node, knob, value, expected):
    fake.user_set(node, N.K_WORKFLOW, str(WORKFLOWS / "fast.json"))
    fake.user_set(node, N.K_MODE, N.MODE_RANGE)
    fake.user_set(node, knob, value)
    fake.press(node, N.K_SUBMIT)
    assert expected in node[N.K_STATUS].value()
    assert fake.called("nuke.execute") == []


def test_cancel_on_an_idle_node_says_so(fake: FakeNuke, node):
    fake.press(node, N.K_CANCEL)
    assert "not running" in node[N.K_STATUS].value()
