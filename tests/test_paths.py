"""Path mapping (dir_local <-> dir_remote) and safe joins of server-given names."""

from __future__ import annotations

import os

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nuke_comfy_cluster.core.errors import ServerRejected
from nuke_comfy_cluster.core.paths import frame_sequence_path, is_under, normalize, safe_join, to_local, to_remote

# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    "local, dir_local, dir_remote, remote",
    [
        ("Z:\\proj\\shot\\a.exr", "Z:\\proj", "/mnt/proj", "/mnt/proj/shot/a.exr"),
        ("z:/proj/shot/a.exr", "Z:\\proj", "/mnt/proj", "/mnt/proj/shot/a.exr"),
        ("Z:/PROJ/Shot/a.exr", "z:\\proj\\", "/mnt/proj/", "/mnt/proj/Shot/a.exr"),
        ("Z:\\proj", "Z:\\proj", "/mnt/proj", "/mnt/proj"),
        ("Z:\\proj\\", "Z:\\proj", "/mnt/proj", "/mnt/proj"),
        ("Z:\\x.exr", "Z:", "/mnt/z", "/mnt/z/x.exr"),
        ("\\\\nas\\share\\proj\\a.exr", "\\\\NAS\\Share", "/mnt/share", "/mnt/share/proj/a.exr"),
        ("//nas/share/proj/a.exr", "\\\\nas\\share", "/mnt/share", "/mnt/share/proj/a.exr"),
        ("/Volumes/proj//shot/./a.exr", "/Volumes/proj", "/mnt/proj", "/mnt/proj/shot/a.exr"),
        ("/Volumes/proj/shot/../b.exr", "/Volumes/proj", "/mnt/proj", "/mnt/proj/b.exr"),
        ("/home/a/proj/x.png", "/home/a/proj", "D:\\comfy\\proj", "D:\\comfy\\proj\\x.png"),
        ("/home/a/proj/x.png", "/home/a/proj", "\\\\gpu1\\comfy", "\\\\gpu1\\comfy\\x.png"),
        ("/home/a/proj/x.png", "/home/a/proj", "/", "/x.png"),
    ],
)
def test_to_remote_and_back(local, dir_local, dir_remote, remote):
    assert to_remote(local, dir_local, dir_remote) == remote
    back = to_local(remote, dir_local, dir_remote)
    assert is_under(back, dir_local)
    assert to_remote(back, dir_local, dir_remote) == remote


def test_to_local_uses_the_local_separator_style():
    assert to_local("/mnt/proj/shot/a.exr", "Z:\\proj", "/mnt/proj") == "Z:\\proj\\shot\\a.exr"
    assert to_local("/mnt/proj/shot/a.exr", "Z:/proj", "/mnt/proj") == "Z:/proj/shot/a.exr"
    assert to_local("/mnt/proj/a", "\\\\nas\\share", "/mnt/proj") == "\\\\nas\\share\\a"


@pytest.mark.parametrize(
    "path, prefix",
    [
        ("/mnt/projects/a", "/mnt/proj"),  # a sibling sharing a string prefix
        ("/mnt/Proj/a", "/mnt/proj"),  # POSIX is case-sensitive
        ("C:\\proj\\a", "D:\\proj"),
        ("\\\\nas\\other\\a", "\\\\nas\\share"),
        ("\\\\nas2\\share\\a", "\\\\nas\\share"),
        ("/mnt/proj/../etc/passwd", "/mnt/proj"),
        ("proj/a", "/proj"),
        ("C:\\proj\\a", "/proj"),
        ("", "/proj"),
    ],
)
def test_paths_not_under_the_prefix_are_unchanged(path, prefix):
    assert not is_under(path, prefix)
    assert to_remote(path, prefix, "/remote") == path
    assert to_local(path, "/local", prefix) == path


def test_empty_prefixes_map_nothing():
    assert to_remote("/a/b", "", "/x") == "/a/b"
    assert to_remote("/a/b", "/a", "") == "/a/b"
    assert not is_under("/a/b", "")


def test_is_under():
    assert is_under("C:/Proj/a", "c:\\proj")
    assert is_under("c:\\proj", "C:/proj/")
    assert is_under("/a/b/c", "/a")
    assert is_under("/a", "/")
    assert not is_under("/ab", "/a")


def test_normalize():
    assert normalize("C:/a//b/./c/") == "C:/a/b/c"
    assert normalize("C:\\a\\..\\b", "/") == "C:/b"
    assert normalize("//nas/share/x/") == "//nas/share/x"
    assert normalize("/../a") == "/a"
    assert normalize("a/../../b") == "../b"


# Names that are plain path components on every platform.
_component = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\/:"), min_size=1, max_size=8
).filter(lambda s: s not in (".", ".."))
_components = st.lists(_component, min_size=0, max_size=4)


@st.composite
def _prefixes(draw):
    kind = draw(st.sampled_from(["drive", "unc", "posix"]))
    parts = draw(st.lists(_component, min_size=0, max_size=3))
    sep = draw(st.sampled_from(["\\", "/"]))
    if kind == "drive":
        return draw(st.sampled_from("CcZz")) + ":" + sep + sep.join(parts)
    if kind == "unc":
        return sep * 2 + draw(_component) + (sep + sep.join(parts) if parts else "")
    return "/" + "/".join(parts)


@settings(max_examples=300, deadline=None)
@given(_prefixes(), _prefixes(), _components, st.sampled_from(["\\", "/"]), st.booleans())
def test_round_trip_property(dir_local, dir_remote, rest, sep, trailing):
    base = dir_local.rstrip("\\/") or dir_local[:1]  # keep a bare root "/"
    local = base + ("" if base in "\\/" else sep) + sep.join(rest) if rest else base
    local += sep if trailing else ""
    remote = to_remote(local, dir_local, dir_remote)
    assert is_under(remote, dir_remote)
    back = to_local(remote, dir_local, dir_remote)
    local_sep = next((c for c in dir_local if c in "\\/"), "/")
    assert back == normalize(local, local_sep)


@settings(max_examples=200, deadline=None)
@given(_prefixes(), _prefixes(), _prefixes())
def test_paths_outside_stay_unchanged_property(path, dir_local, dir_remote):
    assume(not is_under(path, dir_local))
    assert to_remote(path, dir_local, dir_remote) == path


# --------------------------------------------------------------------------- safe_join


def test_safe_join_accepts_normal_and_nested_names(tmp_path):
    folder = str(tmp_path)
    assert safe_join(folder, "", "ComfyUI_00001_.png") == os.path.join(folder, "ComfyUI_00001_.png")
    assert safe_join(folder, None, "a.png") == os.path.join(folder, "a.png")
    assert safe_join(folder, "sub/dir", "a.png") == os.path.join(folder, "sub", "dir", "a.png")
    assert safe_join(folder, "sub\\dir/", "a.png") == os.path.join(folder, "sub", "dir", "a.png")
    assert safe_join(folder, "日本", "ファイル….png") == os.path.join(folder, "日本", "ファイル….png")
    assert safe_join(folder, "", "..a.png") == os.path.join(folder, "..a.png")


@pytest.mark.parametrize(
    "subfolder, filename",
    [
        ("..", "a.png"),
        ("a/../..", "a.png"),
        ("a\\..\\..", "a.png"),
        ("", ".."),
        ("", "."),
        ("", "..."),
        ("", ". ."),
        ("/etc", "passwd"),
        ("\\Windows", "x"),
        ("\\\\server\\share", "x"),
        ("//server/share", "x"),
        ("C:", "x"),
        ("C:\\Windows", "x"),
        ("", "C:x.png"),
        ("", "a.png:stream"),
        ("", "a/b.png"),
        ("", "a\\b.png"),
        ("", ""),
        ("", "a\x00.png"),
        ("sub\x00", "a.png"),
        ("", "a\n.png"),
        ("", "a\x7f.png"),
        ("", "CON"),
        ("", "nul.png"),
        ("", "com1.txt"),
        ("", "a" * 256),
        ("", "\ud800.png"),
        ("", 5),
        (5, "a.png"),
    ],
)
def test_safe_join_rejects_escapes(tmp_path, subfolder, filename):
    with pytest.raises(ServerRejected):
        safe_join(str(tmp_path), subfolder, filename)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_safe_join_rejects_a_symlink_leading_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    try:
        os.symlink(str(outside), str(out / "link"))
    except OSError:
        pytest.skip("cannot create symlinks here")
    with pytest.raises(ServerRejected):
        safe_join(str(out), "link", "a.png")
    (out / "inner").mkdir()
    os.symlink(str(out / "inner"), str(out / "inside"))
    assert safe_join(str(out), "inside", "a.png") == os.path.join(str(out), "inside", "a.png")


_hostile = st.lists(
    st.sampled_from(["..", ".", "/", "\\", ":", "C", "a", "\x00", " ", "~", "é", "\n", "COM1", "nul"])
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=30), _hostile), st.one_of(st.text(max_size=30), _hostile))
def test_safe_join_never_escapes(tmp_path_factory, subfolder, filename):
    folder = str(tmp_path_factory.getbasetemp() / "safe_join_out")
    os.makedirs(folder, exist_ok=True)
    try:
        path = safe_join(folder, subfolder, filename)
    except ServerRejected:
        return
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    assert os.path.commonpath([real, real_folder]) == real_folder and real != real_folder


# --------------------------------------------------------------------------- frame sequences


def test_frame_sequence_path():
    assert frame_sequence_path("/renders/shot", "comfy", "exr") == "/renders/shot/comfy.####.exr"
    assert frame_sequence_path("/renders/shot/", "comfy", ".png", padding=6) == "/renders/shot/comfy.######.png"
    assert frame_sequence_path("C:\\renders", "a", "exr") == "C:/renders/a.####.exr"
    assert frame_sequence_path("\\\\nas\\share", "a", "exr") == "//nas/share/a.####.exr"
    assert frame_sequence_path("/", "a", "exr") == "/a.####.exr"
    assert frame_sequence_path("", "a", "exr") == "a.####.exr"
    with pytest.raises(ValueError):
        frame_sequence_path("/x", "a", "exr", padding=0)


# --------------------------------------------------------------------------- edges that mutation testing found unpinned


def test_a_bare_drive_is_written_with_backslashes_and_counts_from_its_root():
    assert to_local("/mnt/z/shot/a.exr", "Z:", "/mnt/z") == "Z:\\shot\\a.exr"
    assert normalize("Z:") == "Z:\\"
    # "Z:shot" (drive-relative on Windows) is taken from the drive's root: nobody maps those
    assert to_remote("Z:shot\\a.exr", "Z:", "/mnt/z") == "/mnt/z/shot/a.exr"


def test_an_empty_prefix_holds_no_relative_path_either():
    assert not is_under("a/b", "")
    assert to_remote("a/b", "", "/remote") == "a/b"


def test_a_name_of_255_characters_is_allowed_256_is_not(tmp_path):
    assert safe_join(str(tmp_path), "", "a" * 251 + ".png").endswith("a.png")
    with pytest.raises(ServerRejected, match="longer than 255"):
        safe_join(str(tmp_path), "", "a" * 252 + ".png")


def test_only_com0_to_com9_and_lpt0_to_lpt9_are_devices(tmp_path):
    for name in ("COM10.png", "LPT10.png", "com12"):
        assert safe_join(str(tmp_path), "", name) == os.path.join(str(tmp_path), name)
    for name in ("COM9.png", "lpt0.txt"):
        with pytest.raises(ServerRejected, match="reserved device name"):
            safe_join(str(tmp_path), "", name)


@pytest.mark.parametrize("ch", ["\ud800", "\udbff", "\udc00", "\udfff"])
def test_lone_surrogates_are_refused(tmp_path, ch):
    with pytest.raises(ServerRejected, match="not valid Unicode"):
        safe_join(str(tmp_path), "", f"a{ch}.png")


def test_an_empty_file_name_is_refused_as_empty(tmp_path):
    with pytest.raises(ServerRejected, match="empty name"):
        safe_join(str(tmp_path), "sub", "")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_symlink_back_to_the_folder_itself_is_refused_and_named_with_its_subfolder(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    os.symlink(str(out), str(out / "self"))
    with pytest.raises(ServerRejected, match="leads outside"):
        safe_join(str(out), "", "self")  # writing there would replace the folder, not a file in it
    os.symlink(str(tmp_path), str(out / "sub" / "up"))
    with pytest.raises(ServerRejected, match=r"'sub/up'"):
        safe_join(str(out), "sub", "up")


def test_a_padding_of_one_is_allowed():
    assert frame_sequence_path("/renders", "a", "exr", padding=1) == "/renders/a.#.exr"
