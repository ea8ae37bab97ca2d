"""install / uninstall into a temporary home, and the installed plugin starting on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nuke_comfy_cluster.nuke_host import installer
from nuke_comfy_cluster.nuke_host.startup import PANEL_WIDGET
from tests.conftest import REPO

USER_INIT = "import nuke\r\nnuke.pluginAddPath('./gizmos')\r\n# studio settings, keep me\r\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    return home


def test_the_default_nuke_dir_is_in_home(home: Path):
    assert installer.default_nuke_dir() == str(home / ".nuke")


def test_install_then_uninstall_leaves_the_users_init_py_as_it_was(home: Path):
    nuke_dir = home / ".nuke"
    nuke_dir.mkdir()
    (nuke_dir / "init.py").write_bytes(USER_INIT.encode())

    report = installer.install()
    plugin = nuke_dir / installer.PLUGIN_DIR
    for rel in (
        "init.py",
        "menu.py",
        "install.json",
        "nuke_comfy_cluster/__init__.py",
        "nuke_comfy_cluster/core/api.py",
        "nuke_comfy_cluster/nuke_host/startup.py",
        "nuke_comfy_cluster/ui/panel.py",
        "resources/comfy_cluster.png",
        "site-packages/requests/__init__.py",
        "site-packages/urllib3/__init__.py",
        "site-packages/idna/__init__.py",
        "site-packages/charset_normalizer/md.py",  # the pure-Python fallback Nuke's Python uses
        "site-packages/certifi/cacert.pem",
        "site-packages/websocket/__init__.py",
    ):
        assert (plugin / rel).is_file(), rel
    assert not list(plugin.rglob("__pycache__"))
    assert any(p.name.endswith(".dist-info") for p in (plugin / "site-packages").iterdir())  # licences travel along
    assert set(report.vendored) == {name for name, _ in installer.DEPENDENCIES}
    assert json.loads((plugin / "install.json").read_text())["created_init"] is False

    text = (nuke_dir / "init.py").read_bytes().decode()
    assert text.startswith(USER_INIT)  # user's lines first, untouched, CRLF kept
    assert text.count(installer.BEGIN) == 1 and text.count(installer.END) == 1
    assert f"nuke.pluginAddPath({plugin.as_posix()!r})\r\n" in text

    installer.install()  # again: same file, one block
    assert (nuke_dir / "init.py").read_bytes().decode() == text

    report = installer.uninstall()
    assert not plugin.exists()
    assert (nuke_dir / "init.py").read_bytes() == USER_INIT.encode()
    assert sorted(os.listdir(nuke_dir)) == ["init.py"]
    assert "removed" in report.text()


def test_an_init_py_created_by_install_goes_away_with_uninstall(home: Path, capsys: pytest.CaptureFixture):
    assert installer.main_install([]) == 0
    out = capsys.readouterr().out
    assert "created {}".format(home / ".nuke" / "init.py") in out and "Restart Nuke" in out
    assert (home / ".nuke" / "init.py").is_file()
    assert installer.main_uninstall([]) == 0
    assert os.listdir(home / ".nuke") == []
    assert installer.main_uninstall([]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_lines_the_user_added_after_install_survive_uninstall(home: Path):
    installer.install()
    init_py = home / ".nuke" / "init.py"
    with open(init_py, "a", encoding="utf-8") as f:
        f.write("nuke.pluginAddPath('./mine')\n")
    installer.uninstall()
    assert init_py.read_text(encoding="utf-8") == "nuke.pluginAddPath('./mine')\n"


def test_nuke_dir_option_installs_into_a_studio_folder(tmp_path: Path, home: Path):
    studio = tmp_path / "studio" / "nuke_path"
    assert installer.main_install(["--nuke-dir", str(studio)]) == 0
    assert (studio / installer.PLUGIN_DIR / "menu.py").is_file()
    assert not (home / ".nuke").exists()
    assert installer.main_uninstall(["--nuke-dir", str(studio)]) == 0
    assert os.listdir(studio) == []


def test_the_installed_plugin_starts_in_a_bare_python(home: Path, tmp_path: Path):
    installer.install()
    nuke_dir = home / ".nuke"
    plugin = nuke_dir / installer.PLUGIN_DIR
    # -S: no site-packages at all, so every import must come from the plugin folder
    code = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, {tests!r})
        from fake_nuke import FakeNuke
        fake = FakeNuke(gui=True)
        sys.modules.update(nuke=fake.nuke, nukescripts=fake.nukescripts)
        sys.modules["nukescripts.panels"] = fake.panels_module
        fake.start_session({nuke_dir!r})
        import requests, websocket, urllib3
        import nuke_comfy_cluster.core.api
        tool = fake.menus["Nodes"].findItem("ComfyUI Cluster")
        print(json.dumps(dict(
            requests=requests.__file__, websocket=websocket.__file__,
            package=nuke_comfy_cluster.__file__, icon=tool.icon(),
            plugins=fake.plugin_paths, panels=fake.registered_widgets,
        )))
        """
    ).format(tests=str(REPO / "tests" / "nuke"), nuke_dir=str(nuke_dir))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    vendored = str(plugin / "site-packages")
    assert seen["requests"].startswith(vendored) and seen["websocket"].startswith(vendored)
    assert seen["package"].startswith(str(plugin / "nuke_comfy_cluster"))
    assert seen["icon"] == (plugin / "resources" / "comfy_cluster.png").as_posix()
    assert seen["plugins"] == [str(plugin)]
    assert seen["panels"][0][0] == PANEL_WIDGET
    assert "Traceback" not in out.stderr


def test_block_editing_keeps_other_lines_and_line_endings():
    text = "a = 1\r\nb = 2"  # no final newline
    added = installer.add_block(text, "/x/plugin")
    assert added.startswith("a = 1\r\nb = 2\r\n") and added.endswith(installer.END + "\r\n")
    assert installer.add_block(added, "/y/plugin").count(installer.BEGIN) == 1
    assert "/y/plugin" in installer.add_block(added, "/y/plugin")
    assert installer.strip_block(added) == "a = 1\r\nb = 2\r\n"
    assert installer.add_block("", "/x") == installer.block_for("/x") + "\n"


def test_the_repository_entry_points_match_the_installers_copies():
    assert (REPO / "init.py").read_text(encoding="utf-8") == installer.INIT_PY
    assert (REPO / "menu.py").read_text(encoding="utf-8") == installer.MENU_PY


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_nuke_version_matching_this_python_copies_its_packages_without_warnings(home: Path, monkeypatch):
    monkeypatch.setattr(installer, "_running_python", lambda: installer.NUKE_PYTHONS["16"])

    def no_pip(*_a, **_k):
        raise AssertionError("this Python fits Nuke 16: nothing to fetch")

    monkeypatch.setattr(installer, "vendor_for_python", no_pip)
    report = installer.install(nuke="16")
    assert report.warnings == []
    assert set(report.vendored) == {name for name, _ in installer.DEPENDENCIES}
    manifest = json.loads((home / ".nuke" / installer.PLUGIN_DIR / "install.json").read_text())
    assert manifest["python"] == installer.NUKE_PYTHONS["16"]


def test_nuke_version_other_than_this_python_fetches_for_nukes_python(home: Path, monkeypatch):
    monkeypatch.setattr(installer, "_running_python", lambda: "3.11")
    asked = []

    def fake_pip(target: Path, python_version: str, report):
        asked.append(python_version)
        target.mkdir(parents=True, exist_ok=True)
        report.vendored["requests"] = "2.32.5"

    monkeypatch.setattr(installer, "vendor_for_python", fake_pip)
    installer.install(nuke="14")
    assert asked == ["3.9"]
    with pytest.raises(OSError, match="--nuke takes 14, 15, 16"):
        installer.install(nuke="13")
    with pytest.raises(OSError, match="Nuke 15 runs Python 3.10"):
        installer.install(nuke="15", for_python="3.9")


def test_a_failed_install_into_a_missing_nuke_folder_leaves_nothing(home: Path, monkeypatch, capsys):
    def broken(*_a, **_k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(installer, "vendor", broken)
    assert installer.main_install([]) == 1
    assert "install failed: disk full (simulated)" in capsys.readouterr().err
    assert os.listdir(home) == []


def test_a_failed_reinstall_keeps_the_old_plugin_and_init_py(home: Path, monkeypatch):
    installer.install()
    nuke_dir = home / ".nuke"
    before = _tree(nuke_dir)

    def broken(*_a, **_k):
        raise OSError("simulated")

    monkeypatch.setattr(installer, "vendor", broken)
    with pytest.raises(OSError):
        installer.install()
    assert _tree(nuke_dir) == before


def test_a_failure_writing_init_py_takes_the_new_plugin_out_again(home: Path, monkeypatch):
    nuke_dir = home / ".nuke"
    nuke_dir.mkdir()
    (nuke_dir / "init.py").write_bytes(USER_INIT.encode())
    before = _tree(nuke_dir)

    def broken(path, *_a, **_k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(installer, "_write_atomic", broken)
    with pytest.raises(OSError):
        installer.install()
    assert _tree(nuke_dir) == before
