"""Read nodes from delivered sequences: one per sequence, each with its own range, format and place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Tuple

from nuke_comfy_cluster.nuke_host import reads as R

from .fake_nuke import FakeNuke, png_bytes


@dataclass(frozen=True)
class Seq:
    """The shape of ``BatchSnapshot.sequences``' records, built by hand."""

    pattern: str
    first: int
    last: int
    label: str = ""
    existed: Tuple[int, ...] = ()


def frames_on_disk(folder: Path, stem: str, frames: Iterable[int], size: int) -> str:
    for f in frames:
        (folder / f"{stem}.{f:04d}.png").write_bytes(png_bytes((10, 20, 30), size))
    return (folder / f"{stem}.####.png").as_posix()


def test_one_read_per_sequence_each_with_its_range_and_the_files_format(fake: FakeNuke, tmp_path: Path):
    main = Seq(frames_on_disk(tmp_path, "sh", range(1, 5), size=8), 1, 4)
    matte = Seq(frames_on_disk(tmp_path, "sh_matte", (1, 2, 4), size=6), 1, 4, label="matte", existed=(2,))
    specs = R.specs_from_sequences([main, matte], "Comfy1", "sh")
    assert [(s.name, s.first, s.last, s.missing) for s in specs] == [
        ("Comfy1_result", 1, 4, ()),
        ("Comfy1_matte", 1, 4, (3,)),
    ]

    node = fake.nuke.nodes.Group(name="Comfy1")
    read_main, read_matte = R.apply_reads(node, specs)
    assert (read_main.format().width(), read_main.format().height()) == (8, 8)  # not the project's 1920x1080
    assert read_matte.format().width() == 6
    # the range goes with the file name: that is what makes Nuke read the files' own format
    assert fake.called("File_Knob.fromUserText") == [("file", main.pattern + " 1-4"), ("file", matte.pattern + " 1-4")]
    assert read_main["file"].value() == main.pattern
    assert (read_matte["origfirst"].value(), read_matte["origlast"].value()) == (1, 4)
    assert (read_main["on_error"].value(), read_matte["on_error"].value()) == ("error", "checkerboard")
    assert fake.shown(read_main["label"]) == "4 frames"
    assert fake.shown(read_matte["label"]) == "matte\n3 frames"
    # frames that were replaced may be cached with their old pixels: that Read reloads
    assert fake.called("PyScript_Knob.execute") == [("reload",)]


def test_iteration_sequences_are_named_and_labelled_by_iteration(fake: FakeNuke, tmp_path: Path):
    sequences = [Seq(frames_on_disk(tmp_path, f"sh_i{i:03d}", [1010], size=4), 1010, 1010) for i in range(2)]
    specs = R.specs_from_sequences(sequences, "Comfy1", "sh", seeds={0: 11, 1: 12})
    assert [(s.name, s.label) for s in specs] == [
        ("Comfy1_i000", "iteration 1\nseed 11"),
        ("Comfy1_i001", "iteration 2\nseed 12"),
    ]


def test_reads_go_beside_a_node_inside_a_group_and_are_updated_there(fake: FakeNuke, tmp_path: Path):
    with fake.nuke.root():
        shot = fake.nuke.nodes.Group(name="Shot")
    with shot:
        node = fake.nuke.nodes.Group(name="Comfy1")
    specs = R.specs_from_sequences([Seq(frames_on_disk(tmp_path, "sh", [1, 2], size=4), 1, 2)], "Comfy1", "sh")

    with node:  # e.g. called from the node's own knob script: not root's context
        [read] = R.apply_reads(node, specs)
    assert read.fullName() == "Shot.Comfy1_result"
    [again] = R.apply_reads(node, specs)  # from root's context this time
    assert again is read
    assert [n.name() for n in fake.nuke.allNodes("Read", fake.root_node, recurseGroups=True)] == ["Comfy1_result"]
    assert fake.called("PyScript_Knob.execute") == [("reload",)]  # the second time only
