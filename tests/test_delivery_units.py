"""Delivering results, unit by unit: naming, the render check, staging, moves, the sequence lock.

Each test holds one promise of ``core/delivery.py`` (docs/RELIABILITY.md, "Results"), on
real files in a temporary folder; no server. The integration side (a whole batch
delivered into a sequence) is in tests/test_result_integrity.py and test_promises.py.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Dict, List, Optional, Tuple

import pytest

from nuke_comfy_cluster.core import delivery
from nuke_comfy_cluster.core.delivery import (
    STAGING,
    LocalWriteError,
    SequenceLock,
    SuspectResult,
    check_output_dir,
    copy_staged,
    describe_frames,
    existing_frames,
    frame_file,
    free_bytes,
    is_saving_class,
    move_into_sequence,
    pattern_for,
    prompt_digest,
    remove_staging,
    require_saving_node,
    saving_nodes,
    sequence_key,
    sequence_labels,
    staging_dir,
    stem_for,
    verify_file,
    write_staged,
)
from nuke_comfy_cluster.core.errors import ConfigError, WorkflowError

PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 7, "model": ["4", 0], "cfg": 7.5}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "f_####"}},
}
OTHER = json.loads(json.dumps(PROMPT))
OTHER["3"]["inputs"]["seed"] = 8


# --------------------------------------------------------------------------- PNG files


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _text(kind: str, key: str, value: str) -> bytes:
    """One text chunk as ComfyUI (PIL) writes them: tEXt, zTXt, iTXt or compressed iTXt ("iTXtz")."""
    k = key.encode("latin-1") + b"\x00"
    if kind == "tEXt":
        return _chunk(b"tEXt", k + value.encode("latin-1"))
    if kind == "zTXt":
        return _chunk(b"zTXt", k + b"\x00" + zlib.compress(value.encode("latin-1")))
    compressed = kind == "iTXtz"
    text = zlib.compress(value.encode("utf-8")) if compressed else value.encode("utf-8")
    return _chunk(b"iTXt", k + (b"\x01" if compressed else b"\x00") + b"\x00" + b"\x00" + b"\x00" + text)


def png(*texts: bytes, after_image: bytes = b"", image: bool = True) -> bytes:
    """A PNG: header, the given text chunks, then (unless ``image`` is False) image data and end."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    body = head + b"".join(texts)
    if image:
        body += _chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + after_image + _chunk(b"IEND", b"")
    return body


# --------------------------------------------------------------------------- saving nodes and names


def test_saving_classes_are_recognised_by_name_and_by_list():
    assert is_saving_class("SaveImage") is True
    assert is_saving_class("VHS_VideoCombine") is True  # listed: no "save" in its name
    assert is_saving_class("KSampler") is False
    assert is_saving_class("PreviewImage") is False


def test_saving_nodes_in_stable_order_numeric_ids_numerically():
    workflow = {
        "b": {"class_type": "SaveImage"},
        "10": {"class_type": "SaveImage"},
        "a": {"class_type": "Image Save"},
        "9": {"class_type": "SaveImage"},
        "3": {"class_type": "KSampler"},
        "x": "not a node",
    }
    assert saving_nodes(workflow) == ["9", "10", "a", "b"]


def test_a_workflow_without_saving_node_is_refused_naming_its_nodes():
    require_saving_node(PROMPT)  # has a SaveImage: accepted
    with pytest.raises(WorkflowError, match=r"saves no image.*\(its nodes: EmptyImage, PreviewImage\)"):
        require_saving_node(
            {"1": {"class_type": "EmptyImage"}, "2": {"class_type": "PreviewImage"}, "3": {"class_type": "EmptyImage"}}
        )


def _save(prefix: Optional[str] = None, title: Optional[str] = None) -> Dict[str, object]:
    node: Dict[str, object] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}
    if prefix is not None:
        node["inputs"]["filename_prefix"] = prefix  # type: ignore[index]
    if title is not None:
        node["_meta"] = {"title": title}
    return node


def test_each_saving_node_after_the_first_gets_a_label_from_its_prefix_or_title():
    workflow = {
        "2": _save("main/beauty_####"),
        "3": _save("shots/depth_pass_%05d", title="ignored: the prefix wins"),
        "4": _save("", title="Normal Map!"),
        "5": _save("ComfyUI"),  # ComfyUI's default says nothing: the node id
        "6": _save(),  # no prefix, no title
        "7": _save("other/depth_pass"),  # the same label again
        "8": _save("matte_%date:yyyy-MM-dd%_{frame}"),
        "11": {"class_type": "SaveImage", "inputs": "broken", "_meta": {"note": "no title"}},
        "12": _save("   ", title="Spaced Title"),
    }
    assert sequence_labels(workflow) == {
        "2": "",
        "3": "depth_pass",
        "4": "normal_map",
        "5": "n5",
        "6": "n6",
        "7": "depth_pass_n7",
        "8": "matte",
        "11": "n11",
        "12": "spaced_title",
    }


def test_sequence_names_and_patterns(tmp_path):
    folder = str(tmp_path)
    assert stem_for("sh", "", 0, None) == "sh"
    assert stem_for("sh", "depth", 2, None) == "sh_depth_b2"
    assert stem_for("sh", "", 0, 7) == "sh_i007"
    assert stem_for("sh", "matte", 1, 12) == "sh_matte_b1_i012"
    assert frame_file(folder, "sh_depth", 7, ".png") == os.path.join(folder, "sh_depth.0007.png")
    assert frame_file(folder, "sh", 1234, ".exr") == os.path.join(folder, "sh.1234.exr")
    assert pattern_for(folder, "sh", ".png") == os.path.join(folder, "sh.####.png")
    assert sequence_key("9", 1) == ("9", 1)


def test_existing_frames_of_a_sequence_any_label_or_extension(tmp_path):
    for name in ("sh.0001.png", "sh_depth.0002.exr", "shot.0003.png", "sh.0004.png.part", "sh.-005.png", "x.0006.png"):
        (tmp_path / name).write_bytes(b"x")
    assert existing_frames(str(tmp_path), "sh", [6, 4, 2, 1, 3]) == [2, 1]
    assert existing_frames(str(tmp_path), "sh", range(-5, 0)) == [-5]
    assert existing_frames(str(tmp_path), "nothing", range(1, 7)) == []
    assert existing_frames(str(tmp_path / "missing"), "sh", range(1, 7)) == []


def test_frame_lists_are_shortened_after_six():
    assert describe_frames([1, 2, 3, 4, 5, 6]) == "1, 2, 3, 4, 5, 6"
    assert describe_frames(list(range(1, 9))) == "1, 2, 3, 4, 5, 6 and 2 more"
    assert describe_frames([1, 2, 3], limit=2) == "1, 2 and 1 more"


# --------------------------------------------------------------------------- the render check


def test_the_prompt_digest_ignores_what_comfyui_changes_and_sees_what_renders():
    reordered = {k: {"inputs": dict(reversed(list(v["inputs"].items()))), **v} for k, v in reversed(PROMPT.items())}
    assert prompt_digest(reordered) == prompt_digest(PROMPT)
    titled = json.loads(json.dumps(PROMPT))
    titled["9"]["_meta"] = {"title": "Save"}
    titled["3"]["is_changed"] = ["x"]
    assert prompt_digest(titled) == prompt_digest(PROMPT)
    converted = json.loads(json.dumps(PROMPT))
    converted["3"]["inputs"].update(seed="7", cfg="7.5")
    converted["3"]["inputs"]["model"] = ["4", 0.0]
    assert prompt_digest(converted) == prompt_digest(PROMPT)

    def digest_with(**inputs: object) -> str:
        return prompt_digest({"1": {"class_type": "X", "inputs": inputs}})

    different = [
        digest_with(v=True),
        digest_with(v=False),
        digest_with(v=None),
        digest_with(v=1),
        digest_with(v=2),
        digest_with(v="cat"),
        digest_with(v="dog"),
        digest_with(v={"a": "1"}),
        digest_with(v={"a": "2"}),
        digest_with(v=["1", 0]),
        digest_with(v=["2", 0]),
        prompt_digest(OTHER),
        prompt_digest(PROMPT),
    ]
    assert len(set(different)) == len(different)
    assert digest_with(v={"a": "1"}) == digest_with(v={"a": 1.0})
    assert digest_with(v=["1", 0]) == digest_with(v=[1, "0"])
    assert all(isinstance(d, str) and len(d) == 64 for d in different)
    assert prompt_digest({"1": "not a node"}) != prompt_digest({"1": "another"})


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXtz"])
def test_a_png_holding_another_prompt_is_refused_as_a_collision(kind):
    """Found wherever PIL puts the text, after other text chunks (ComfyUI writes "prompt" then
    "workflow"; some nodes write more)."""
    mine = prompt_digest(PROMPT)
    before = _text("tEXt", "parameters", "x") + _text("zTXt", "software", "y") + _text("iTXt", "author", "z")
    theirs = png(before, _text(kind, "prompt", json.dumps(OTHER)), _text(kind, "workflow", "{}"))
    with pytest.raises(SuspectResult, match="render of another prompt") as caught:
        verify_file(theirs, "ComfyUI_00001_.png", "image/png", mine)
    assert caught.value.collision is True
    ours = png(before, _text(kind, "prompt", json.dumps(PROMPT)), _text(kind, "workflow", "{}"))
    verify_file(ours, "ComfyUI_00001_.png", "image/png", mine)


def test_the_render_check_reads_only_the_text_before_the_image_data():
    """ComfyUI writes its text first; the check stops at the image data (a big image is not
    scanned), and a truncated file is judged by what it holds, never a crash."""
    mine = prompt_digest(PROMPT)
    late = png(after_image=_text("tEXt", "prompt", json.dumps(OTHER)))
    verify_file(late, "a.png", "image/png", mine)
    truncated = png(_text("tEXt", "prompt", json.dumps(PROMPT)), image=False)
    verify_file(truncated, "a.png", "image/png", mine)
    verify_file(truncated + b"\x00\x00\x00", "a.png", "image/png", mine)
    with pytest.raises(SuspectResult, match="another prompt"):
        verify_file(png(_text("tEXt", "prompt", json.dumps(OTHER)), image=False) + b"\x00", "a.png", "", mine)


def test_an_unreadable_embedded_prompt_is_not_ours():
    for text in ("not json", ""):
        with pytest.raises(SuspectResult) as caught:
            verify_file(png(_text("tEXt", "prompt", text)), "a.png", "image/png", prompt_digest(PROMPT))
        assert caught.value.collision is True
    broken = png(_chunk(b"zTXt", b"prompt\x00\x00not zlib"), _chunk(b"iTXt", b"prompt\x00\x01\x00\x00\x00bad"))
    verify_file(broken, "a.png", "image/png", prompt_digest(PROMPT))  # no readable prompt: nothing to compare


def test_without_a_digest_or_embedded_prompt_only_the_format_is_checked():
    verify_file(png(_text("tEXt", "prompt", json.dumps(OTHER))), "a.png", "image/png", None)
    verify_file(png(), "a.png", "image/png", prompt_digest(PROMPT))  # no prompt embedded (another saver)
    verify_file(b"\xff\xd8\xff\xe0 jpeg", "a.jpg", "image/jpeg", prompt_digest(PROMPT))
    verify_file(b"\x00\x00\x00\x18ftypmp42", "a.mp4", "video/mp4", None)  # no magic known: accepted


def test_what_is_not_an_image_is_refused_with_the_reason():
    cases: List[Tuple[bytes, str, str, str]] = [
        (b"", "a.png", "image/png", "a.png: the server sent an empty file"),
        (png(), "a.png", "text/html; charset=utf-8", "a.png: the server sent text/html instead of an image"),
        (b'{"error": 1}', "a.mp4", "Application/JSON; charset=utf-8", "sent application/json instead"),
        (b"bad gateway", "a.mp4", "text/plain", "sent text/plain instead"),
        (b"  \n<!DOCTYPE html><p>502", "a.mp4", "", "a.mp4: the server sent an HTML page instead of an image"),
        (b"<HTML><body>login", "a.bin", "application/octet-stream", "sent application/octet-stream instead"),
        (b"GIF89a...", "a.png", "image/png", "a.png: the content is not a PNG file"),
        (png(), "a.JPG", "", "a.JPG: the content is not a JPG file"),
        (png(), "a.exr", "", "the content is not a EXR file"),
    ]
    for data, name, ctype, message in cases:
        with pytest.raises(SuspectResult) as caught:
            verify_file(data, name, ctype, None)
        assert message in str(caught.value), (name, ctype, str(caught.value))
        assert caught.value.collision is False


# --------------------------------------------------------------------------- staging and moves


def test_each_attempt_stages_privately_and_the_batch_folder_is_removed_whole(tmp_path):
    out = str(tmp_path / "out")
    batch, other = "b" * 32, "c" * 32
    first = staging_dir(out, batch, "j" * 32, "t" * 32)
    second = staging_dir(out, batch, "j" * 32, "u" * 32)  # the same job again: another attempt
    third = staging_dir(out, other, "j" * 32, "t" * 32)
    assert len({first, second, third}) == 3
    for folder in (first, second, third):
        assert os.path.dirname(os.path.dirname(folder)) == os.path.join(out, STAGING)
        write_staged(folder, "ComfyUI_00001_.png", b"data")
    remove_staging(out, batch)
    assert not os.path.exists(first) and not os.path.exists(second)
    assert os.listdir(third) == ["00_ComfyUI_00001_.png"]
    remove_staging(out, other)
    assert os.listdir(out) == []  # the shared parent goes with the last batch
    remove_staging(out, batch)  # nothing left: nothing to do, no error
    remove_staging(str(tmp_path / "never"), batch)


def test_staged_files_are_numbered_and_named_safely(tmp_path):
    folder = str(tmp_path / "attempt")
    paths = [
        write_staged(folder, "sub/ComfyUI_00001_.png", b"one"),
        write_staged(folder, "..\\..\\evil.png", b"two", 1),
        write_staged(folder, "dir/", b"three", 12),
    ]
    assert paths == [os.path.join(folder, n) for n in ("00_ComfyUI_00001_.png", "01_evil.png", "12_output")]
    assert [open(p, "rb").read() for p in paths] == [b"one", b"two", b"three"]


def test_copies_from_a_shared_drive_land_in_the_staging_folder(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "a.png").write_bytes(b"A")
    (share / "b.png").write_bytes(b"B")
    folder = str(tmp_path / "attempt")
    got = [copy_staged(folder, str(share / "a.png")), copy_staged(folder, str(share / "b.png"))]
    assert got == [os.path.join(folder, "a.png"), os.path.join(folder, "b.png")]
    assert [open(p, "rb").read() for p in got] == [b"A", b"B"]
    assert (share / "a.png").exists()  # the server's own file stays
    with pytest.raises(FileNotFoundError):
        copy_staged(folder, str(share / "gone.png"))


def test_a_local_write_failure_is_a_local_write_error_naming_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    folder = str(blocker / "attempt")  # a folder inside a file: cannot exist
    with pytest.raises(LocalWriteError) as caught:
        write_staged(folder, "a.png", b"x")
    assert caught.value.strerror == f"cannot write {os.path.join(folder, '00_a.png')}: Not a directory"
    (tmp_path / "src.png").write_bytes(b"x")
    with pytest.raises(LocalWriteError) as caught:
        copy_staged(folder, str(tmp_path / "src.png"))
    assert caught.value.strerror == f"cannot write {os.path.join(folder, 'src.png')}: Not a directory"


def test_moving_into_the_sequence_is_one_rename(tmp_path):
    staged = tmp_path / "staged.png"
    staged.write_bytes(b"frame")
    target = tmp_path / "sh.0001.png"
    target.write_bytes(b"old")
    move_into_sequence(str(staged), str(target))
    assert target.read_bytes() == b"frame" and not staged.exists()
    staged.write_bytes(b"again")
    missing = tmp_path / "gone" / "sh.0002.png"
    with pytest.raises(LocalWriteError) as caught:
        move_into_sequence(str(staged), str(missing))
    assert caught.value.strerror == f"cannot write {missing}: No such file or directory"
    assert staged.read_bytes() == b"again"


def _cross_device_once(monkeypatch) -> List[Tuple[str, str]]:
    """The first rename fails as between two filesystems (EXDEV); later ones run for real."""
    calls: List[Tuple[str, str]] = []
    real = os.replace

    def replace(src: str, dst: str) -> None:
        calls.append((src, dst))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(delivery.os, "replace", replace)
    return calls


def test_a_move_across_filesystems_copies_then_renames(tmp_path, monkeypatch):
    staged = tmp_path / "staged.png"
    staged.write_bytes(b"frame")
    target = tmp_path / "seq" / "sh.0001.png"
    target.parent.mkdir()
    calls = _cross_device_once(monkeypatch)
    move_into_sequence(str(staged), str(target))
    assert calls[1] == (str(target) + ".ncc-part", str(target))  # the copy, renamed into place
    assert target.read_bytes() == b"frame" and not staged.exists()
    assert os.listdir(target.parent) == ["sh.0001.png"]


def test_a_failed_copy_across_filesystems_names_its_own_reason(tmp_path, monkeypatch):
    staged = tmp_path / "staged.png"
    staged.write_bytes(b"frame")
    target = tmp_path / "gone" / "sh.0001.png"
    _cross_device_once(monkeypatch)
    with pytest.raises(LocalWriteError) as caught:
        move_into_sequence(str(staged), str(target))
    assert caught.value.strerror == f"cannot write {target}: No such file or directory"
    assert staged.read_bytes() == b"frame"


# --------------------------------------------------------------------------- the output folder


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_the_output_folder_is_made_and_probed_and_left_as_it_was(tmp_path):
    folder = tmp_path / "a" / "b"
    fds = _open_fds()
    check_output_dir(str(folder))
    check_output_dir(str(folder))  # already there: fine
    assert os.listdir(folder) == []  # the probe file is gone
    assert _open_fds() == fds  # and closed
    assert isinstance(free_bytes(str(folder)), int) and free_bytes(str(folder)) > 0
    assert free_bytes(str(tmp_path / "missing")) is None


def test_an_output_folder_that_cannot_be_used_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"output folder {blocker} is a file, not a folder"):
        check_output_dir(str(blocker))
    with pytest.raises(ConfigError) as caught:
        check_output_dir(str(blocker / "sub"))
    assert str(caught.value) == f"cannot write into output folder {blocker / 'sub'}: Not a directory"


# --------------------------------------------------------------------------- the sequence lock


def _lock_path(folder, name: str = "sh") -> str:
    return os.path.join(str(folder), f".{name}.ncc-lock")


def _write_lock(folder, record: object, age: float = 0.0, raw: Optional[str] = None) -> str:
    path = _lock_path(folder)
    with open(path, "w", encoding="utf-8") as f:
        f.write(raw if raw is not None else json.dumps(record))
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_names_its_owner_and_is_released(tmp_path):
    before = time.time()
    lock = SequenceLock.acquire(str(tmp_path), "sh", "batch-1", "Shot 10")
    assert lock.path == _lock_path(tmp_path) and lock.batch_id == "batch-1"
    with open(lock.path, encoding="utf-8") as f:
        record = json.load(f)
    assert record["batch"] == "batch-1" and record["name"] == "Shot 10"
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert before <= record["since"] <= time.time()
    lock.release()
    assert not os.path.exists(lock.path)
    lock.release()  # twice: nothing to do, no error


def test_a_second_batch_is_refused_while_the_owner_lives(tmp_path):
    since = time.mktime((2024, 5, 17, 13, 47, 0, 0, 0, -1))
    _write_lock(
        tmp_path,
        {"batch": "abcdefghijk", "name": "Shot 10", "pid": os.getpid(), "host": socket.gethostname(), "since": since},
    )
    with pytest.raises(ConfigError) as caught:
        SequenceLock.acquire(str(tmp_path), "sh", "batch-2")
    message = str(caught.value)
    assert f"(Shot 10, pid {os.getpid()} on {socket.gethostname()}, since 13:47)" in message, message
    assert f"delete {_lock_path(tmp_path)}" in message
    _write_lock(tmp_path, {"batch": "abcdefghijk", "pid": os.getpid(), "host": socket.gethostname(), "since": since})
    with pytest.raises(ConfigError, match=r"\(abcdefgh, pid"):
        SequenceLock.acquire(str(tmp_path), "sh", "batch-2")


def test_checking_the_owner_does_not_disturb_it(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(tmp_path, {"batch": "b1", "pid": owner.pid, "host": socket.gethostname()})
        with pytest.raises(ConfigError, match="being written by another batch"):
            SequenceLock.acquire(str(tmp_path), "sh", "batch-2")
        time.sleep(0.5)
        assert owner.poll() is None, "the owner was signalled"
    finally:
        owner.kill()
        owner.wait()


def test_a_lock_whose_owner_died_is_taken_over(tmp_path):
    _write_lock(tmp_path, {"batch": "b1", "pid": _dead_pid(), "host": socket.gethostname()})
    lock = SequenceLock.acquire(str(tmp_path), "sh", "b2")
    with open(lock.path, encoding="utf-8") as f:
        assert json.load(f)["batch"] == "b2"


def test_a_lock_from_another_host_is_judged_by_its_age(tmp_path, monkeypatch):
    """Another host's pid means nothing here: only a lock untouched for ten minutes is stale."""
    record = {"batch": "b1", "pid": _dead_pid(), "host": "elsewhere.invalid"}
    path = _write_lock(tmp_path, record)
    with pytest.raises(ConfigError, match="being written by another batch"):
        SequenceLock.acquire(str(tmp_path), "sh", "b2")
    mtime = os.stat(path).st_mtime
    monkeypatch.setattr(delivery.time, "time", lambda: mtime + 599.5)
    with pytest.raises(ConfigError, match="being written by another batch"):
        SequenceLock.acquire(str(tmp_path), "sh", "b2")
    monkeypatch.setattr(delivery.time, "time", lambda: mtime + 600.5)
    SequenceLock.acquire(str(tmp_path), "sh", "b2").release()


def test_an_unreadable_lock_is_judged_by_its_age(tmp_path):
    for raw in ("{not json", "[1, 2]"):
        _write_lock(tmp_path, None, raw=raw)
        with pytest.raises(ConfigError, match=r"\(\?, pid \? on \?"):
            SequenceLock.acquire(str(tmp_path), "sh", "b2")
        _write_lock(tmp_path, None, raw=raw, age=700)
        SequenceLock.acquire(str(tmp_path), "sh", "b2").release()


def test_a_lock_that_cannot_even_be_examined_is_taken_over(tmp_path):
    path = _lock_path(tmp_path)
    os.symlink(path, path)  # a link to itself: exists, but neither readable nor stat-able
    lock = SequenceLock.acquire(str(tmp_path), "sh", "b2")
    assert not os.path.islink(path)
    lock.release()


def test_the_lock_is_touched_while_the_batch_runs(tmp_path):
    lock = SequenceLock.acquire(str(tmp_path), "sh", "b1")
    os.utime(lock.path, (1000.0, 1000.0))
    lock.touch()
    assert os.stat(lock.path).st_mtime > time.time() - 60
    lock.release()
    lock.touch()  # gone: nothing to do, no error


def test_a_lock_taken_over_by_another_batch_is_not_removed_by_the_old_owner(tmp_path):
    mine = SequenceLock.acquire(str(tmp_path), "sh", "b1")
    _write_lock(tmp_path, {"batch": "b2", "pid": os.getpid(), "host": socket.gethostname()})
    mine.release()
    assert os.path.exists(mine.path)


def test_a_lock_that_keeps_coming_back_is_a_clear_error(tmp_path, monkeypatch):
    _write_lock(tmp_path, {"batch": "b1", "pid": _dead_pid(), "host": socket.gethostname()})
    monkeypatch.setattr(delivery.os, "unlink", lambda path: None)  # as if another batch re-took it each time
    with pytest.raises(ConfigError, match="could not take the lock .*another batch keeps taking it"):
        SequenceLock.acquire(str(tmp_path), "sh", "b2")


def test_a_lock_that_cannot_be_created_is_a_config_error(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as caught:
        SequenceLock.acquire(str(missing), "sh", "b1")
    assert str(caught.value) == f"cannot create the lock {_lock_path(missing)}: No such file or directory"


def test_a_lock_held_by_another_users_live_process_is_respected():
    """On a shared workstation the owner may be another user's Nuke: this process may not
    signal it, which says it lives. (Run as an unprivileged user; pid 1 lives and is root's.)"""
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is private to its user
        os.chmod(shared, 0o777)
        _write_lock(shared, {"batch": "b1", "pid": 1, "host": socket.gethostname()})
        os.chmod(_lock_path(shared), 0o666)
        done = _acquire_as_another_user(shared)
    assert done.stdout.startswith("refused: sequence sh"), (done.stdout, done.stderr)


def _acquire_as_another_user(folder: str) -> subprocess.CompletedProcess:
    script = (
        "import os, sys\n"
        "from nuke_comfy_cluster.core.delivery import SequenceLock\n"
        "from nuke_comfy_cluster.core.errors import ConfigError\n"
        "if os.getuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    SequenceLock.acquire(sys.argv[1], 'sh', 'b2')\n"
        "except ConfigError as e:\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    print('taken')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(delivery.__file__))))
    return subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("pid", [0, -1, 2**31, 2**40, "123"])
def test_a_lock_naming_an_impossible_pid_is_judged_by_its_age(tmp_path, pid):
    """A damaged or hand-edited lock: never a traceback (os.kill overflows past 2**31 - 1), and
    0 or -1 would ask about whole process groups, which always "live"."""
    _write_lock(tmp_path, {"batch": "b1", "pid": pid, "host": socket.gethostname()})
    with pytest.raises(ConfigError, match="being written by another batch"):
        SequenceLock.acquire(str(tmp_path), "sh", "b2")
    _write_lock(tmp_path, {"batch": "b1", "pid": pid, "host": socket.gethostname()}, age=700)
    SequenceLock.acquire(str(tmp_path), "sh", "b2").release()


@pytest.mark.parametrize("pid", [1, os.getpid()])
def test_on_this_host_a_live_owner_keeps_its_lock_however_old(tmp_path, pid):
    """Here the pid decides, not the age (pid 1 always lives)."""
    _write_lock(tmp_path, {"batch": "b1", "pid": pid, "host": socket.gethostname()}, age=7200)
    with pytest.raises(ConfigError, match="being written by another batch"):
        SequenceLock.acquire(str(tmp_path), "sh", "b2")
