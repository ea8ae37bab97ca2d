"""The command line as a TD runs it: real processes, real exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def run(args, env_extra=None, timeout=60):
    env = dict(os.environ)
    for var in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT"):
        env.pop(var, None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "nuke_comfy_cluster"] + args,
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def servers_json(procs, extra=()):
    entries = [{"name": f"sim{i}", "ip": "127.0.0.1", "port": p.port, "priority": i} for i, p in enumerate(procs)]
    return json.dumps(entries + list(extra))


@pytest.mark.parametrize(
    "value, needle",
    [
        ('[{"name": "a", "ip": "10.0.0.1", "port": 8188,}]', "line 1, column"),
        ('[{"name": "a", "ip": "10.0.0.1", "port": "abc"}]', "port"),
        ('[{"name": "a", "ip": "10.0.0.1", "port": 70000}]', "port"),
        ('[{"name": "a", "ip": "bad host!", "port": 1}]', "ip"),
        ('[{"name": "a", "ip": "h", "port": 1}, {"name": "a", "ip": "h", "port": 2}]', 'duplicate name "a"'),
        ("/nonexistent/servers.json", "/nonexistent/servers.json"),
    ],
)
def test_validate_names_the_problem_without_traceback(value, needle):
    out = run(["validate"], {"NUKE_COMFYUI_SERVERS": value})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert needle in out.stdout


def test_validate_good_file_and_json_output(tmp_path):
    f = tmp_path / "servers.json"
    f.write_text('[{"name": "gpu1", "ip": "10.0.0.5", "port": 8188, "priority": 0, "enabled": true}]')
    out = run(["validate", str(f), "--json"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["valid"] is True and data["servers"] == ["gpu1"]


def test_status_json_against_live_dead_and_hung(start_sims):
    live, dead, hung = start_sims([1.0, 1.0, 1.0], seconds=0.5)
    dead.kill()
    hung.sigstop()
    try:
        out = run(["status", "--json"], {"NUKE_COMFYUI_SERVERS": servers_json([live, dead, hung])})
    finally:
        hung.sigcont()
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["source"] == "inline" and isinstance(data["warnings"], list)
    by = {s["name"]: s for s in data["servers"]}
    assert by["sim0"]["status"] == "online" and by["sim0"]["latency_ms"] is not None
    assert by["sim1"]["status"] == "offline" and by["sim2"]["status"] == "offline"
    for s in data["servers"]:
        assert {"name", "status", "queue_running", "queue_pending", "priority", "enabled", "latency_ms"} <= set(s)


def test_health_exit_codes(start_sims):
    a, b = start_sims([1.0, 1.0], seconds=0.2)
    both = {"NUKE_COMFYUI_SERVERS": servers_json([a, b])}
    assert run(["health"], both).returncode == 0
    b.kill()
    out = run(["health"], both)
    assert out.returncode == 1 and "DEGRADED" in out.stdout
    a.kill()
    assert run(["health", "--json"], both).returncode == 2
    assert run(["health"], {"NUKE_COMFYUI_SERVERS": "[not json"}).returncode == 2


def test_submit_frames_json_and_out(start_sims, tmp_path):
    procs = start_sims([1.0, 0.5], seconds=0.2)
    wf = tmp_path / "wf.json"
    wf.write_text(
        json.dumps(
            {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x_####"}},
            }
        )
    )
    out_dir = tmp_path / "out"
    out = run(
        ["submit", str(wf), "--frames", "1-6", "--out", str(out_dir), "--json"],
        {"NUKE_COMFYUI_SERVERS": servers_json(procs)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["makespan_s"] > 0 and [j["frame"] for j in data["jobs"]] == [1, 2, 3, 4, 5, 6]
    assert all(j["state"] == "done" and j["prompt_id"] and j["server"] for j in data["jobs"])
    assert data["done"] == 6 and data["sequences"][0]["pattern"] == str(out_dir / "wf.####.png")
    assert [f for f in sorted(os.listdir(out_dir)) if not f.startswith(".")] == [f"wf.{i:04d}.png" for i in range(1, 7)]


def test_submit_to_unreachable_cluster_fails_cleanly(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    out = run(
        ["submit", str(wf), "--server", "gpu9"],
        {"NUKE_COMFYUI_SERVERS": '[{"name": "gpu1", "ip": "127.0.0.1", "port": 9}]'},
    )
    assert out.returncode == 2 and "gpu9" in out.stderr and "Traceback" not in out.stderr


def test_demo_runs_headless():
    out = run(["demo", "--frames", "6", "--seconds", "0.2"], timeout=120)
    assert out.returncode == 0, out.stderr
    # what the demo promises: every frame done into a sequence, the per-server table, the speed-up
    assert re.search(r"^6 done, kept in \S+shot010_comfy\.####\.png", out.stdout, re.M), out.stdout
    rows = re.findall(r"^(sim-[0-9.]+x)\s+(\d+)\s+[0-9.]+ s\s+(?:-|\d+(?: \([0-9.]+ s\))?)$", out.stdout, re.M)
    # 6 short frames: spread over the two faster servers at least (the slowest is worth its
    # probe only when the plan says so)
    assert sum(int(n) for _, n in rows) == 6 and len(rows) >= 2, rows
    assert re.search(r"cluster speed-up [0-9.]+x", out.stdout), out.stdout


# --------------------------------------------------------------------------- helpers for the tests below

SAVING_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x_####"}},
}
BLUR_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x_####"}},
}


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def popen(args, env_extra=None, **kw):
    env = dict(os.environ)
    for var in ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP", "NUKE_COMFYUI_PORT"):
        env.pop(var, None)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "nuke_comfy_cluster"] + args, cwd=str(REPO), env=env, text=True, **kw
    )


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def queued_ids(sim):
    q = get_json(sim.url + "/queue")
    return [item[1] for item in q["queue_running"] + q["queue_pending"]]


def post_prompt(sim, prompt):
    body = json.dumps({"prompt": prompt, "client_id": "another-artist"}).encode()
    req = urllib.request.Request(sim.url + "/prompt", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read().decode())["prompt_id"]


def no_traceback(out):
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr


# --------------------------------------------------------------------------- every command


def test_version():
    from nuke_comfy_cluster import __version__

    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"nuke_comfy_cluster {__version__}"


@pytest.mark.parametrize("args", [["health", "--watch", "-1"], ["status", "--watch", "-5"], ["status", "--watch", "0"]])
def test_a_watch_that_is_not_positive_is_refused(args):
    out = run(args)
    assert out.returncode == 2 and "above 0" in out.stderr
    no_traceback(out)


def test_validate_piped_into_head_stops_quietly(tmp_path):
    many = write_json(tmp_path / "many.json", [{"name": f"s{i}", "ip": "10.0.0.1", "hots": 1} for i in range(20000)])
    proc = popen(["validate", str(many)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    code = proc.wait(60)
    assert first.startswith(str(many)) and "Traceback" not in err, err
    assert code == 141


def test_panel_without_a_display_says_so_instead_of_aborting():
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""}
    out = run(["panel"], env)
    assert out.returncode == 2 and "no display: use --screenshot" in out.stderr
    no_traceback(out)


# --------------------------------------------------------------------------- validate


def test_validate_lists_servers_and_strict_fails_on_warnings(tmp_path):
    f = write_json(
        tmp_path / "s.json",
        [
            {"name": "gpu1", "ip": "10.0.0.5", "port": 8188, "priority": 0},
            {
                "name": "gpu2",
                "url": "https://gpu2.studio:443",
                "priority": 3,
                "enabled": False,
                "token": "REPLACE-WITH-YOUR-TOKEN",
            },
        ],
    )
    out = run(["validate", str(f)])
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("  ")]
    assert rows == [
        ["NAME", "ADDRESS", "PRIORITY", "ENABLED"],
        ["gpu1", "http://10.0.0.5:8188", "0", "yes"],
        ["gpu2", "https://gpu2.studio:443", "3", "no"],
    ]
    assert "placeholder" in out.stdout and "REPLACE-WITH" not in out.stdout
    assert out.stdout.splitlines()[-1] == "valid (1 warning)"
    strict = run(["validate", "--strict", str(f)])
    assert strict.returncode == 1 and strict.stdout.splitlines()[-1] == "INVALID (--strict: 1 warning)"
    data = json.loads(run(["validate", "--strict", "--json", "--config", str(f)]).stdout)
    assert data["valid"] is False and data["details"][1] == {
        "name": "gpu2",
        "url": "https://gpu2.studio:443",
        "priority": 3,
        "enabled": False,
    }


def test_validate_reads_a_powershell_utf16_file(tmp_path):
    f = tmp_path / "ps.json"
    f.write_bytes('[{"name": "gpu1", "ip": "10.0.0.5"}]\r\n'.encode("utf-16"))
    out = run(["validate", str(f)])
    assert out.returncode == 0 and "gpu1" in out.stdout and "UTF-16" in out.stdout
    no_traceback(out)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFO")
def test_validate_refuses_a_fifo_and_an_11_mb_file_at_once(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(str(fifo))
    out = run(["validate", str(fifo)], timeout=30)  # reading it would block for ever
    assert out.returncode == 1 and "not a regular file" in out.stdout
    big = tmp_path / "big.json"
    entry = json.dumps({"name": "s", "ip": "10.0.0.1", "port": 8188}) + ",\n"
    big.write_text("[" + entry * (11_000_000 // len(entry)) + "{}]", encoding="utf-8")
    out = run(["validate", str(big)], timeout=60)  # took more than 10 minutes before the size limit
    assert out.returncode == 1 and "larger than 10 MB" in out.stdout
    no_traceback(out)


# --------------------------------------------------------------------------- --config, status, health


def test_config_option_on_status_health_and_a_missing_file(start_sims, tmp_path):
    (live,) = start_sims([1.0], seconds=0.2)
    f = write_json(tmp_path / "s.json", [{"name": "from-file", "ip": "127.0.0.1", "port": live.port}])
    env = {"NUKE_COMFYUI_SERVERS": '[{"name": "from-env", "ip": "127.0.0.1", "port": 9}]'}
    data = json.loads(run(["status", "--json", "--config", str(f)], env).stdout)
    assert [s["name"] for s in data["servers"]] == ["from-file"] and data["source"] == "file"
    health = run(["health", "--config", str(f), "--json"], env)
    assert health.returncode == 0 and json.loads(health.stdout)["servers"][0]["name"] == "from-file"
    missing = run(["submit", str(tmp_path / "wf.json"), "--config", str(tmp_path / "nope.json")], env)
    assert missing.returncode == 2 and "nope.json: file not found" in missing.stderr
    no_traceback(missing)


def test_status_rows_for_offline_servers_and_dns_failures(start_sims):
    (live,) = start_sims([1.0], seconds=0.2)
    servers = json.dumps(
        [
            {"name": "up", "ip": "127.0.0.1", "port": live.port},
            {"name": "down", "ip": "127.0.0.1", "port": 9, "priority": 1},
            {"name": "nodns", "ip": "no-such-host.invalid", "port": 8188, "priority": 2},
        ]
    )
    out = run(["status"], {"NUKE_COMFYUI_SERVERS": servers})
    assert out.returncode == 0, out.stderr
    rows = {
        line.split()[0] if not line.startswith(">") else line.split()[1]: line for line in out.stdout.splitlines()[1:]
    }
    assert re.search(r"\bonline\s+0/0\b", rows["up"])
    for name in ("down", "nodns"):
        assert "0/0" not in rows[name] and re.search(r"\boffline\s+-\s", rows[name]), rows[name]
    assert "DNS: no such host" in rows["nodns"]
    # piped, the note is whole (the old table cut it at 60 characters)
    assert rows["down"].rstrip().endswith("(connection refused or dropped)")
    data = json.loads(run(["status", "--json"], {"NUKE_COMFYUI_SERVERS": servers}).stdout)
    by = {s["name"]: s for s in data["servers"]}
    assert by["down"]["queue_running"] is None and "DNS" in by["nodns"]["note"]
    assert by["up"]["gpu"] and " : " not in by["up"]["gpu"]  # the readable name, as the panel shows it


def test_health_json_has_a_timestamp_and_judges_the_config_apart(start_sims):
    (live,) = start_sims([1.0], seconds=0.2)
    servers = json.dumps(
        [
            {"name": "up", "ip": "127.0.0.1", "port": live.port},
            {"name": "broken", "ip": "127.0.0.1", "port": 70000},
        ]
    )
    before = time.time()
    out = run(["health", "--json"], {"NUKE_COMFYUI_SERVERS": servers})
    data = json.loads(out.stdout)
    from datetime import datetime

    stamp = datetime.strptime(data["timestamp"], "%Y-%m-%dT%H:%M:%SZ").timestamp() - time.timezone
    assert before - 2 <= stamp <= time.time() + 2
    assert out.returncode == 2 and data["exit_code"] == 2
    assert data["config_valid"] is False and data["servers_health"] == "OK"
    text = run(["health"], {"NUKE_COMFYUI_SERVERS": servers})
    first = text.stdout.splitlines()[0]
    assert text.returncode == 2 and first.startswith(
        "CONFIG-ERROR 1 configuration error; servers: OK (1 of 1 enabled up)"
    )
    assert "config error:" in text.stdout and '"broken"' in text.stdout


# --------------------------------------------------------------------------- import / export / restore


def test_import_while_the_variable_is_inline_says_the_live_config_did_not_change(tmp_path):
    src = write_json(tmp_path / "in.json", [{"name": "gpu1", "ip": "10.0.0.5"}])
    target = tmp_path / "cfg" / "servers.json"
    env = {"NUKE_COMFYUI_SERVERS": '[{"name": "a", "ip": "h"}]'}
    out = run(["import", str(src), "--file", str(target)], env)
    assert out.returncode == 0, out.stderr
    assert "inline JSON" in out.stderr and "did not change" in out.stderr
    assert f"NUKE_COMFYUI_SERVERS={target}" in out.stderr
    assert sorted(os.listdir(target.parent)) == ["servers.json"]  # no empty .lock left behind
    same = run(["import", str(src)], {"NUKE_COMFYUI_SERVERS": str(target)})
    assert same.returncode == 0 and "note:" not in same.stderr


def test_export_refuses_a_missing_folder_and_warns_about_dropped_secrets(tmp_path):
    cfg = write_json(tmp_path / "servers.json", [{"name": "gpu1", "ip": "10.0.0.5", "token": "s3cr3t-t0k"}])
    env = {"NUKE_COMFYUI_SERVERS": str(cfg)}
    out = run(["export", str(tmp_path / "typo" / "x.json")], env)
    assert out.returncode == 2 and "does not exist" in out.stderr and not (tmp_path / "typo").exists()
    (tmp_path / "afile").write_text("x")
    out = run(["export", str(tmp_path / "afile" / "x.json")], env)
    assert out.returncode == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in out.stderr
    dest = tmp_path / "shared.json"
    out = run(["export", str(dest)], env)
    assert out.returncode == 0 and "gpu1" in out.stderr and "--include-secrets" in out.stderr
    assert "s3cr3t" not in dest.read_text() + out.stdout + out.stderr
    back = run(["import", str(dest)], env)
    assert back.returncode == 0 and "gpu1 had a token/headers" in back.stderr and "dropped" in back.stderr


def test_restore_of_a_backup_that_does_not_exist(tmp_path):
    cfg = write_json(tmp_path / "servers.json", [{"name": "gpu1", "ip": "10.0.0.5"}])
    out = run(["restore", "99", "--file", str(cfg)])
    assert out.returncode == 2 and "no backup #99" in out.stderr
    no_traceback(out)
    assert run(["backup", "--file", str(cfg)]).returncode == 0
    out = run(["restore", "99", "--file", str(cfg)])
    assert out.returncode == 2 and "no backup #99" in out.stderr and "numbered 1-1" in out.stderr


# --------------------------------------------------------------------------- submit


def test_progress_lines_in_a_log_and_a_summary_that_counts(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=1.0)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    out = run(
        ["submit", str(wf), "--frames", "1-6", "--out", str(tmp_path / "out"), "--progress-every", "0.3"],
        {"NUKE_COMFYUI_SERVERS": servers_json(procs)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stderr.splitlines() if line.startswith("Progress: ")]
    percents = [int(re.match(r"Progress: (\d+)%", line).group(1)) for line in progress]
    # a line on every change, and between changes too (frames take 1 s, a line is due every 0.3 s)
    counts = [line.split(" | ETA")[0] for line in progress]
    assert any(a == b for a, b in zip(counts, counts[1:])), out.stderr
    assert len(progress) >= 5, out.stderr
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(re.search(r"\| sim0 \d+ done.*; sim1 \d+ done", line) for line in progress)
    assert any(re.search(r"ETA \d+s", line) for line in progress)
    summary = out.stdout.splitlines()
    assert summary[0].startswith("SERVER")
    assert re.fullmatch(
        r"6 done, kept in " + re.escape(str(tmp_path / "out" / "wf.####.png")) + r" \(\d+s\)", summary[-1]
    )


def test_all_servers_down_is_bounded_by_timeout_and_counted_as_not_started(tmp_path):
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    servers = json.dumps(
        [{"name": "g1", "ip": "127.0.0.1", "port": 9}, {"name": "g2", "ip": "127.0.0.1", "port": 9, "priority": 1}]
    )
    start = time.monotonic()
    out = run(["submit", str(wf), "--frames", "1-4", "--timeout", "3"], {"NUKE_COMFYUI_SERVERS": servers}, timeout=60)
    assert time.monotonic() - start < 45
    assert out.returncode == 1, out.stderr
    assert "gives up after 3 s" in out.stderr and "300 s" not in out.stderr
    assert out.stdout.strip() == "0 done, 4 not started: no server available"  # and no empty table header


def test_a_workflow_every_server_rejects_is_refused_and_named_once(start_sims, tmp_path):
    procs = start_sims([1.0, 1.0], seconds=0.2)
    bad = dict(SAVING_WF)
    bad["1"] = {"class_type": "NoSuchNode", "inputs": {}}
    wf = write_json(tmp_path / "bad.json", bad)
    out = run(["submit", str(wf), "--frames", "1-4"], {"NUKE_COMFYUI_SERVERS": servers_json(procs)}, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "NoSuchNode" in errors[0], out.stdout
    assert "frames: 1-4" in out.stdout and "SERVER" not in out.stdout
    no_traceback(out)


def test_runtime_errors_list_the_frames_they_hit(start_sims, tmp_path):
    procs = start_sims([1.0], seconds=0.2, extra_args=["--fail-class", "ImageBlur"])
    wf = write_json(tmp_path / "wf.json", BLUR_WF)
    out = run(["submit", str(wf), "--frames", "1-3,7"], {"NUKE_COMFYUI_SERVERS": servers_json(procs)}, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error node 2 (ImageBlur)"))
    assert lines[at + 1].strip() == "frames: 1-3, 7"
    assert lines[0] == "0 done, 4 failed"


def test_surprising_results_are_warned_about(start_sims, tmp_path):
    procs = start_sims([1.0], seconds=0.1)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)  # no seed input
    env = {"NUKE_COMFYUI_SERVERS": servers_json(procs)}
    out = run(["submit", str(wf), "--iterations", "2"], env, timeout=120)
    assert out.returncode == 0 and "the 2 images will be identical" in out.stderr
    flat = dict(SAVING_WF)
    flat["2"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "flat"}}
    out = run(["submit", str(write_json(tmp_path / "flat.json", flat)), "--frames", "1-2"], env, timeout=120)
    assert out.returncode == 0 and "every frame renders the same image" in out.stderr
    out = run(
        ["submit", str(wf), "--frames", "1-2", "--out", str(tmp_path / "o"), "--name", "shot_####"], env, timeout=120
    )
    assert out.returncode == 0 and "holds '#'" in out.stderr, out.stderr
    assert "frame token" not in out.stderr  # x_#### is a frame token: no warning about identical frames
    assert sorted(f for f in os.listdir(tmp_path / "o") if not f.startswith(".")) == ["shot.0001.png", "shot.0002.png"]


def test_empty_frames_is_refused(tmp_path):
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    out = run(
        ["submit", str(wf), "--frames", ""], {"NUKE_COMFYUI_SERVERS": '[{"name": "g", "ip": "127.0.0.1", "port": 9}]'}
    )
    assert out.returncode == 2 and "empty" in out.stderr
    no_traceback(out)


def test_verbose_shows_the_scheduler_not_urllib3(start_sims, tmp_path):
    (sim,) = start_sims([1.0], seconds=0.1)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    servers = json.dumps(
        [
            {"name": "sim0", "ip": "127.0.0.1", "port": sim.port},
            {"name": "gone", "ip": "127.0.0.1", "port": 9, "priority": 1},
        ]
    )
    out = run(["-v", "submit", str(wf), "--frames", "1-2"], {"NUKE_COMFYUI_SERVERS": servers}, timeout=120)
    assert out.returncode == 0, out.stderr
    dispatch = [line for line in out.stderr.splitlines() if "nuke_comfy_cluster.core.dispatch" in line]
    # one line per frame sent, naming the frame and the server (not only the first frame's model load)
    for frame in ("frame 1", "frame 2"):
        assert any(frame in line and "sim0" in line for line in dispatch), (frame, out.stderr)
    assert "urllib3" not in out.stderr


def _stop_mid_batch(start_sims, tmp_path, signals):
    """A batch running on two slow servers with another artist's prompt first in line; stop it with ``signals``."""
    procs = start_sims([1.0, 1.0], seconds=3.0)
    theirs = post_prompt(procs[0], SAVING_WF)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    proc = popen(
        ["submit", str(wf), "--frames", "1-20"],
        {"NUKE_COMFYUI_SERVERS": servers_json(procs)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (len(queued_ids(procs[0])) > 1 and queued_ids(procs[1])):
        assert time.monotonic() < deadline and proc.poll() is None, "our prompts never reached both servers"
        time.sleep(0.1)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    return procs, theirs, proc.returncode, stdout, stderr


@pytest.mark.parametrize(
    "sig, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)] + ([(signal.SIGHUP, 129)] if hasattr(signal, "SIGHUP") else []),
)
def test_a_stop_signal_cancels_ours_leaves_theirs_and_exits_by_convention(start_sims, tmp_path, sig, code):
    procs, theirs, returncode, stdout, stderr = _stop_mid_batch(start_sims, tmp_path, [sig])
    assert returncode == code, stderr
    assert "Traceback" not in stderr
    assert queued_ids(procs[0]) == [theirs] and queued_ids(procs[1]) == []
    assert re.search(r"^0 done, 20 cancelled$|^\d+ done, \d+ cancelled", stdout, re.M), stdout


def test_a_second_signal_exits_at_once(start_sims, tmp_path):
    _, _, returncode, _, stderr = _stop_mid_batch(start_sims, tmp_path, [signal.SIGTERM, signal.SIGTERM])
    assert returncode == 143 and "exiting now" in stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminal")
def test_on_a_terminal_one_live_line_with_an_eta(start_sims, tmp_path):
    import pty

    procs = start_sims([1.0], seconds=0.6)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    master, slave = pty.openpty()
    proc = popen(
        ["submit", str(wf), "--frames", "1-4"],
        {"NUKE_COMFYUI_SERVERS": servers_json(procs)},
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(60) == 0
    text = seen.decode("utf-8", "replace")
    assert text.count("\r\x1b[K") >= 3  # redrawn in place, not one line per update
    assert re.search(r"Progress: \d+% \(\d/4 done.*\| ETA (\d+s|--)", text)
    assert "4 done" in proc.stdout.read()


def test_the_note_column_wraps_to_the_terminal_and_stays_whole_in_a_pipe():
    from nuke_comfy_cluster.cli.status_cmds import format_table
    from nuke_comfy_cluster.core.state import PoolSnapshot, ServerSnapshot, ServerStatus

    reason = "gpu3: cannot connect to http://192.168.100.200:8188 (connection refused or dropped) " * 2
    snap = PoolSnapshot(
        servers=(
            ServerSnapshot(
                "gpu3",
                "192.168.100.200",
                8188,
                "http://192.168.100.200:8188",
                2,
                True,
                ServerStatus.OFFLINE,
                last_error=reason.strip(),
            ),
        )
    )
    wrapped = format_table(snap, width=80).splitlines()
    note_at = wrapped[0].index("NOTE")
    assert len(wrapped) > 2 and all(len(line) <= 80 for line in wrapped)
    assert all(line[:note_at].strip() == "" for line in wrapped[2:])
    shown = "".join(line[note_at:] for line in wrapped[1:])
    assert shown.replace(" ", "") == reason.strip()[len("gpu3: ") :].replace(" ", "")  # all of it, wrapped
    whole = format_table(snap, width=None).splitlines()
    assert len(whole) == 2 and whole[1].endswith(reason.strip()[len("gpu3: ") :])


def test_an_existing_sequence_needs_overwrite(start_sims, tmp_path):
    procs = start_sims([1.0], seconds=0.1)
    wf = write_json(tmp_path / "wf.json", SAVING_WF)
    env = {"NUKE_COMFYUI_SERVERS": servers_json(procs)}
    args = ["submit", str(wf), "--frames", "1-2", "--out", str(tmp_path / "o"), "--name", "sh"]
    assert run(args, env, timeout=120).returncode == 0
    again = run(args, env, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "already exist" in again.stderr
    no_traceback(again)
    assert run(args + ["--overwrite"], env, timeout=120).returncode == 0
