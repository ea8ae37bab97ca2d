"""install --for-python 3.9: dependencies that Nuke 14's Python can import (fetched with pip)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from nuke_comfy_cluster.nuke_host import installer

pytestmark = pytest.mark.integration


def _python39():
    found = shutil.which("python3.9")
    candidates = [found] if found else []
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for path in candidates:
        try:
            out = subprocess.run(
                [path, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if out.returncode == 0 and "(3, 9)" in out.stdout:
            return path
    return None


def test_for_python_39_vendors_releases_that_support_it(tmp_path):
    report = installer.install(str(tmp_path / "nuke"), for_python="3.9")
    site = tmp_path / "nuke" / installer.PLUGIN_DIR / installer.VENDOR_DIR
    assert {"requests", "urllib3", "websocket_client"} <= set(report.vendored)
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        low = re.search(r"^Requires-Python:\s*>=\s*(\d+)\.(\d+)", meta, re.M)
        assert low is None or (int(low.group(1)), int(low.group(2))) <= (3, 9), (info.name, low.group(0))
    assert not (site / "bin").exists()  # console scripts pip put there: Nuke never runs them
    python39 = _python39()
    if python39 is None:
        return  # the metadata check above is the contract; the import check needs a 3.9 here
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(site.parent)]))
    code = "import requests, websocket, urllib3; import nuke_comfy_cluster.core.api, nuke_comfy_cluster.core.dispatch; print('ok')"
    out = subprocess.run([python39, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_for_python_rejects_a_bad_version(tmp_path):
    with pytest.raises(OSError, match="3.9"):
        installer.install(str(tmp_path / "nuke"), for_python="nine")
