"""Rendering the node's inputs: full resolution, one view, from whichever group the node is in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nuke_comfy_cluster.nuke_host import inputs as I
from nuke_comfy_cluster.sim.png import png_first_pixel

from .fake_nuke import FULL_SIZE, FakeNuke, frame_colour, png_size


def cluster_like_group(fake: FakeNuke, name: str = "Comfy1") -> Any:
    group = fake.nuke.nodes.Group(name=name)
    with group:
        fake.nuke.nodes.Input(name="in1")
    return group


def rendered(pattern: str, frame: int) -> bytes:
    return Path(pattern.replace("####", f"{frame:04d}")).read_bytes()


def test_inputs_render_at_full_resolution_and_one_view_in_a_proxy_stereo_script(fake: FakeNuke, tmp_path: Path):
    fake.views = ["left", "right"]
    fake.root_node["proxy"].setValue(True)  # the artist works in proxy mode
    plate = fake.nuke.nodes.Read(name="Plate", file="/footage/plate.%V.####.exr", first=1, last=3)
    group = cluster_like_group(fake)
    group.setInput(0, plate)

    images = I.render_inputs(group, [(0, "1")], ("in1",), 1, 3, str(tmp_path / "run"))
    for frame in (1, 2, 3):
        data = rendered(images["1"], frame)
        assert png_size(data) == (FULL_SIZE, FULL_SIZE)  # not the proxy scale
        assert png_first_pixel(data) == frame_colour("Plate", frame)  # the first view's pixels, not the last's
    assert fake.called("nuke.execute views") == [(("left",), False)]
    assert fake.root_node["proxy"].value() is True  # the artist's proxy mode is back


def test_proxy_mode_comes_back_when_the_render_is_cancelled(
    fake: FakeNuke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def cancelled(*args: Any) -> None:
        assert fake.root_node["proxy"].value() is False  # rendering at full resolution
        raise RuntimeError("Cancelled")  # what execute raises when the artist cancels its progress bar

    fake.root_node["proxy"].setValue(True)
    group = cluster_like_group(fake)
    group.setInput(0, fake.nuke.nodes.Read(name="Plate", file="/footage/plate.####.exr", first=1, last=3))
    monkeypatch.setattr(fake.nuke, "execute", cancelled)
    with pytest.raises(RuntimeError, match="Cancelled"):
        I.render_inputs(group, [(0, "1")], ("in1",), 1, 3, str(tmp_path / "run"))
    assert fake.root_node["proxy"].value() is True
    assert [n.Class() for n in fake.root_node.nodes()] == ["Group", "Read"]  # no Write left behind


def test_inputs_of_a_node_inside_a_group_render_from_that_group(fake: FakeNuke, tmp_path: Path):
    with fake.nuke.root():
        shot = fake.nuke.nodes.Group(name="Shot")
    with shot:
        plate = fake.nuke.nodes.Read(name="Inner", file="/footage/inner.####.exr", first=1, last=2)
        group = cluster_like_group(fake)
        group.setInput(0, plate)

    with group:  # Submit runs in the node's own context
        images = I.render_inputs(group, [(0, "1")], ("in1",), 1, 2, str(tmp_path / "run"))
    assert png_first_pixel(rendered(images["1"], 2)) == frame_colour("Inner", 2)
    assert fake.called("nuke.nodes.Write") == [("Shot", ("datatype", "file", "file_type"))]
    assert [n.name() for n in shot.nodes() if n.Class() == "Write"] == []  # deleted after
