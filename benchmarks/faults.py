"""Fault matrix: one batch of frames over simulator processes while one fault strikes.

::

    python -m benchmarks.faults            # table, 48 frames over 4 simulators per scenario
    python -m benchmarks.faults --json     # the same as JSON
    python -m benchmarks.faults --quick    # 16 frames over 3 simulators (a smoke run)
    python -m benchmarks.faults --only sigkill,all_down

Every scenario is a separate run on freshly started simulators, with the
cluster's default settings (status TTL, timeouts, retry limit). Per scenario:

- delivered: frames whose job ended DONE with its file in the output folder;
- duplicated: frames delivered twice: a job that reached DONE twice or with two
  different prompt ids, or a sequence file rewritten after it was first
  delivered (must be 0);
- lost: frames not delivered when the batch ended (must be 0);
- re-run: our jobs a server's ``/history`` shows succeeding more than once
  (wasted GPU time, not delivered twice: only the current attempt is accepted);
- late ignored: results of abandoned attempts the dispatcher ignored by design;
- detected: seconds from the fault until every frame that was in flight on the
  faulted servers had stopped waiting on them (delivered, or back in the client
  to go elsewhere);
- recovery: seconds from the fault until every frame that was in flight on the
  faulted servers was taken care of (delivered, or accepted by a server again
  under a new prompt id); when every server is down, seconds from the first one
  coming back until frames are delivered again;
- overhead: makespan over the no-fault baseline of the same run;
- message: what the batch told the user (``BatchSnapshot.message``).

The command exits 1 when any scenario lost or duplicated a frame.
The integration tests (``tests/test_faults.py``) run these same scenarios, smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import requests

from nuke_comfy_cluster.core.api import Cluster
from nuke_comfy_cluster.core.config import ServerConfig
from nuke_comfy_cluster.core.jobs import Batch, BatchSnapshot
from nuke_comfy_cluster.core.state import JobState
from nuke_comfy_cluster.sim.process import SimProcess, start_cluster, stop_all

WORKFLOW: Dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fault/f_####"}},
}
SEQUENCE = "f"
FIRST_FRAME = 1001


@dataclass
class Settings:
    """One run of the matrix: how many frames, simulators and how long a frame takes."""

    frames: int = 48
    sims: int = 4
    seconds: float = 0.5
    jitter: float = 0.1
    #: how long a scenario may take before it is reported as stuck
    timeout: float = 240.0
    #: the SIGSTOPped server is continued after this long
    freeze_s: float = 12.0
    #: 500s are answered for this long
    error_s: float = 5.0
    #: every server stays down this long after the batch said it is waiting
    outage_s: float = 4.0
    #: seconds added to every HTTP answer in the slow-link scenario
    latency_s: float = 0.3


QUICK = Settings(frames=16, sims=3, seconds=0.3, jitter=0.1, timeout=120.0, freeze_s=12.0, error_s=3.0, outage_s=2.0)


@dataclass
class Result:
    """The figures of one scenario."""

    scenario: str
    title: str
    frames: int
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    rerun: int = 0
    late_ignored: int = 0
    detect_s: Optional[float] = None
    recovery_s: Optional[float] = None
    makespan_s: Optional[float] = None
    overhead: Optional[float] = None
    message: str = ""
    messages: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    failed_over: int = 0
    #: frames not delivered: "label: state on server (attempts, failed servers, error)"
    undelivered: List[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.delivered == self.frames


class FaultAborted(RuntimeError):
    """The fault could not be injected as planned (the batch ran ahead of it)."""


# --------------------------------------------------------------------------- recording


class Recorder:
    """Follows a batch through its listener (dispatcher thread: cheap work only)."""

    def __init__(self, batch: Batch, out_dir: str) -> None:
        self.batch = batch
        self.out_dir = out_dir
        self._lock = threading.Lock()
        self.done_prompts: Dict[str, Set[str]] = {}
        self.done_transitions: Dict[str, int] = {}
        self.first_done_at: Dict[str, float] = {}
        #: job id -> [(time, prompt id, state)] each time either changed
        self.history: Dict[str, List[Tuple[float, Optional[str], JobState]]] = {}
        self.file_stat: Dict[str, Tuple[int, int]] = {}
        self.rewritten: Set[str] = set()
        self.messages: List[Tuple[float, str]] = []
        self._last_state: Dict[str, JobState] = {}
        batch.add_listener(self._on_snapshot)
        self._on_snapshot(batch.snapshot())

    def _on_snapshot(self, snap: BatchSnapshot) -> None:
        now = time.monotonic()
        with self._lock:
            if snap.message and (not self.messages or self.messages[-1][1] != snap.message):
                self.messages.append((now, snap.message))
            for job in snap.jobs:
                before = self._last_state.get(job.id)
                self._last_state[job.id] = job.state
                seen = self.history.setdefault(job.id, [])
                if not seen or seen[-1][1:] != (job.prompt_id, job.state):
                    seen.append((now, job.prompt_id, job.state))
                if job.state is not JobState.DONE:
                    continue
                self.done_prompts.setdefault(job.id, set()).add(job.prompt_id or "")
                if before is not JobState.DONE:
                    self.done_transitions[job.id] = self.done_transitions.get(job.id, 0) + 1
                    self.first_done_at.setdefault(job.id, now)
                    self._note_file(job.frame)

    def _note_file(self, frame: Optional[int]) -> None:
        path = frame_file(self.out_dir, frame)
        try:
            st = os.stat(path)
        except OSError:
            return
        key = path
        stamp = (st.st_ino, st.st_mtime_ns)
        if key in self.file_stat and self.file_stat[key] != stamp:
            self.rewritten.add(key)
        self.file_stat.setdefault(key, stamp)

    def rewritten_files(self) -> Set[str]:
        """Sequence files replaced after their first delivery (a frame delivered twice)."""
        with self._lock:
            found = set(self.rewritten)
            for path, stamp in self.file_stat.items():
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (st.st_ino, st.st_mtime_ns) != stamp:
                    found.add(path)
            return found

    def back_in_hand(self, job_id: str, since: float, prompt_at_fault: Optional[str]) -> Optional[float]:
        """When a frame caught by a fault was taken care of: delivered, or accepted by a
        server under a new prompt id (failed over, or resubmitted after a restart)."""
        with self._lock:
            for at, prompt_id, state in self.history.get(job_id, []):
                if at < since:
                    continue
                if state is JobState.DONE:
                    return at
                if state in (JobState.SUBMITTED, JobState.RUNNING) and prompt_id and prompt_id != prompt_at_fault:
                    return at
        return None

    def left_the_fault(self, job_id: str, since: float, prompt_at_fault: Optional[str]) -> Optional[float]:
        """When a frame caught by a fault stopped waiting on it: delivered, back in the client
        to go elsewhere, or under a new prompt id."""
        with self._lock:
            for at, prompt_id, state in self.history.get(job_id, []):
                if at < since:
                    continue
                if state in (JobState.DONE, JobState.PENDING) or prompt_id != prompt_at_fault:
                    return at
        return None

    def first_done_after(self, since: float) -> Optional[float]:
        with self._lock:
            times = [t for t in self.first_done_at.values() if t >= since]
        return min(times) if times else None

    def message_list(self) -> List[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def messages_since(self, t: float) -> List[str]:
        with self._lock:
            return [m for at, m in self.messages if at >= t]


def frame_file(out_dir: str, frame: Optional[int]) -> str:
    return os.path.join(out_dir, f"{SEQUENCE}.{frame or 0:04d}.png")


# --------------------------------------------------------------------------- what a fault sees


class Run:
    """A scenario in progress: the simulators, the cluster, the batch, and the fault's marks."""

    def __init__(self, settings: Settings, procs: List[SimProcess], cluster: Cluster, out_dir: str) -> None:
        self.settings = settings
        self.procs = procs
        self.cluster = cluster
        self.out_dir = out_dir
        self.batch: Optional[Batch] = None
        self.recorder: Optional[Recorder] = None
        self.fault_at: Optional[float] = None
        self.heal_at: Optional[float] = None
        self.recover_from_heal = False
        self.affected: Dict[str, Optional[str]] = {}  # job id -> its prompt id when the fault struck
        self.faulted: Set[str] = set()
        self.note = ""
        self.stop = threading.Event()

    @staticmethod
    def name(index: int) -> str:
        return f"sim{index}"

    @property
    def frame_time(self) -> float:
        return self.settings.seconds

    def snapshot(self) -> BatchSnapshot:
        assert self.batch is not None
        return self.batch.snapshot()

    def wait_for(self, predicate: Callable[[BatchSnapshot], bool], timeout: float, what: str) -> BatchSnapshot:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if snap.finished:
                raise FaultAborted(f"the batch finished before {what}")
            if time.monotonic() > deadline or self.stop.is_set():
                raise FaultAborted(f"timed out waiting for {what}")
            time.sleep(0.02)

    def wait_mid_frame(self, index: int, min_done: Optional[int] = None) -> BatchSnapshot:
        """Until a job runs on server ``index`` (with a quarter of the frames done), then into its frame."""
        name = self.name(index)
        if min_done is None:
            min_done = max(1, self.settings.frames // 4)

        def running_there(snap: BatchSnapshot) -> bool:
            return snap.done >= min_done and any(j.server == name and j.state is JobState.RUNNING for j in snap.jobs)

        snap = self.wait_for(running_there, 60.0, f"a frame running on {name}")
        time.sleep(self.frame_time * 0.4)
        return snap

    def mark_fault(self, servers: Sequence[int]) -> None:
        """Now: the frames in flight on these servers are the ones the fault caught."""
        names = {self.name(i) for i in servers}
        self.faulted |= names
        snap = self.snapshot()
        self.affected = {
            j.id: j.prompt_id
            for j in snap.jobs
            if j.server in names and j.state in (JobState.SUBMITTED, JobState.RUNNING)
        }
        self.fault_at = time.monotonic()

    def mark_heal(self, recover_from_here: bool = False) -> None:
        self.heal_at = time.monotonic()
        self.recover_from_heal = recover_from_here

    def sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)


# --------------------------------------------------------------------------- the faults


def _no_fault(run: Run) -> None:
    return None


def _sigkill(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    run.procs[0].kill()


def _sigstop(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    run.procs[0].sigstop()
    run.sleep(run.settings.freeze_s)
    run.procs[0].sigcont()
    run.mark_heal()


def _restart(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    run.procs[0].restart()  # SIGTERM, then a fresh process on the same port: queue and history gone
    run.mark_heal()


def _http_500(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    run.procs[0].set_fault(fail_next=1_000_000)
    run.sleep(run.settings.error_s)
    run.procs[0].reset_faults()
    run.mark_heal()


def _malformed_json(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    # every JSON answer for a while: POST /prompt, /history, /queue, status polls
    run.procs[0].set_fault(malformed_json=40)


def _malformed_ws(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault([0])
    # about five frames' worth of websocket messages, execution_success among them
    run.procs[0].set_fault(malformed_ws=40)


def _ws_drop(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault(range(len(run.procs)))
    for _ in range(2):
        for proc in run.procs:
            proc.set_fault(drop_websockets=True)
        run.sleep(run.frame_time * 3)


def _all_down(run: Run) -> None:
    run.wait_mid_frame(0)
    run.mark_fault(range(len(run.procs)))
    for proc in run.procs:
        proc.kill()
    snap = run.wait_for(lambda s: s.message.startswith("Waiting for a server"), 60.0, "the waiting message")
    del snap
    run.sleep(run.settings.outage_s)
    survivor = run.procs[1] if len(run.procs) > 1 else run.procs[0]
    survivor.start()
    run.mark_heal(recover_from_here=True)
    run.note = "one server back after {:.0f} s".format(
        run.heal_at - run.fault_at if run.heal_at and run.fault_at else 0
    )


def _slow_link(run: Run) -> None:
    # set before the batch starts (see prepare): every answer of every server is slow
    return None


def _slow_prepare(run: Run) -> None:
    for proc in run.procs:
        proc.set_fault(latency=run.settings.latency_s)
    run.faulted = {run.name(i) for i in range(len(run.procs))}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    inject: Callable[[Run], None]
    prepare: Optional[Callable[[Run], None]] = None


SCENARIOS: Tuple[Scenario, ...] = (
    Scenario("baseline", "no fault", _no_fault),
    Scenario("sigkill", "a server SIGKILLed mid-frame", _sigkill),
    Scenario("sigstop", "a server SIGSTOPped mid-frame, SIGCONT {freeze_s:g} s later", _sigstop),
    Scenario("restart", "a server restarted mid-frame (queue and history lost)", _restart),
    Scenario("http_500", "a server answers 500 to everything for {error_s:g} s", _http_500),
    Scenario("malformed_json", "a server sends truncated JSON bodies (40)", _malformed_json),
    Scenario("malformed_ws", "a server sends garbled websocket frames (40)", _malformed_ws),
    Scenario("ws_drop", "every websocket dropped mid-job, twice", _ws_drop),
    Scenario("all_down", "every server killed, one back {outage_s:g} s after the batch says it waits", _all_down),
    Scenario("slow_link", "every answer of every server delayed {latency_s:g} s", _slow_link, _slow_prepare),
)
BY_NAME = {s.name: s for s in SCENARIOS}


# --------------------------------------------------------------------------- one run


def server_configs(procs: Sequence[SimProcess]) -> List[ServerConfig]:
    return [ServerConfig(name=Run.name(i), ip="127.0.0.1", port=p.port, priority=i) for i, p in enumerate(procs)]


def _history_successes(procs: Sequence[SimProcess], job_ids: Set[str]) -> Dict[str, int]:
    """job id -> successful runs of it in the history of every server still up."""
    counts: Dict[str, int] = {}
    for proc in procs:
        if not proc.alive:
            continue
        try:
            history = requests.get(proc.url + "/history", timeout=5).json()
        except (requests.RequestException, ValueError):
            continue
        for entry in history.values():
            try:
                extra = entry["prompt"][3]
                ok = entry["status"]["status_str"] == "success"
            except (KeyError, IndexError, TypeError):
                continue
            job = extra.get("ncc_job") if isinstance(extra, dict) else None
            if ok and job in job_ids:
                counts[job] = counts.get(job, 0) + 1
    return counts


def _ours_still_queued(procs: Sequence[SimProcess], client_id: str) -> bool:
    for proc in procs:
        if not proc.alive:
            continue
        try:
            queue = requests.get(proc.url + "/queue", timeout=2).json()
        except (requests.RequestException, ValueError):
            return True  # frozen or garbled: not settled
        for item in queue.get("queue_running", []) + queue.get("queue_pending", []):
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            if extra.get("client_id") == client_id:
                return True
    return False


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pick_message(run: Run, snap: BatchSnapshot, messages: List[str]) -> str:
    """The sentence the user saw about the fault: the first one after it, else the last."""
    since = run.recorder.messages_since(run.fault_at) if run.recorder and run.fault_at is not None else []
    interesting = [m for m in since if m]
    if interesting:
        waiting = [m for m in interesting if m.startswith("Waiting for a server")]
        return waiting[0] if waiting else interesting[0]
    if snap.errors:
        return snap.errors[0].message
    return messages[-1] if messages else ""


def run_scenario(scenario: Scenario, settings: Settings, *, work_dir: Optional[str] = None) -> Result:
    """Start simulators, run one batch while the fault strikes, and measure. Stops everything it started."""
    own_dir = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix=f"ncc-fault-{scenario.name}-")
    out_dir = os.path.join(work, "out")
    os.makedirs(out_dir, exist_ok=True)
    result = Result(scenario.name, scenario.title.format(**asdict(settings)), settings.frames)
    speeds = [1.0] * settings.sims
    procs = start_cluster(speeds, seconds=settings.seconds, jitter=settings.jitter)
    cluster: Optional[Cluster] = None
    injector: Optional[threading.Thread] = None
    run: Optional[Run] = None
    failure: List[BaseException] = []
    try:
        cluster = Cluster.from_servers(server_configs(procs))
        run = Run(settings, procs, cluster, out_dir)
        if scenario.prepare is not None:
            scenario.prepare(run)
        frames = range(FIRST_FRAME, FIRST_FRAME + settings.frames)
        started = time.monotonic()
        batch = cluster.submit_frames(WORKFLOW, frames, output_dir=out_dir, sequence_name=SEQUENCE)
        run.batch = batch
        run.recorder = Recorder(batch, out_dir)
        if scenario.prepare is not None:
            run.mark_fault(range(len(procs)))

        def inject() -> None:
            try:
                scenario.inject(run)  # type: ignore[arg-type]
            except BaseException as e:  # noqa: BLE001 - reported with the result
                failure.append(e)

        injector = threading.Thread(target=inject, name=f"fault-{scenario.name}", daemon=True)
        injector.start()
        snap = batch.wait(settings.timeout)
        ended = time.monotonic()
        injector.join(settings.timeout)
        # let abandoned attempts finish or be removed, so their late results are counted
        deadline = time.monotonic() + max(10.0, settings.freeze_s + 5.0)
        while time.monotonic() < deadline and _ours_still_queued(procs, cluster.pool.client_id):
            time.sleep(0.2)
        time.sleep(0.5)
        snap = batch.snapshot()
        result.makespan_s = round((snap.finished_at - batch.created_at) if snap.finished_at else ended - started, 2)
        files_ok = 0
        for job in snap.jobs:
            path = frame_file(out_dir, job.frame)
            if job.state is JobState.DONE and os.path.isfile(path):
                with open(path, "rb") as fh:
                    if fh.read(8) == b"\x89PNG\r\n\x1a\n":
                        files_ok += 1
                        continue
            result.undelivered.append(
                "{}: {} on {} (attempts {}, failed on {}){}".format(
                    job.label,
                    job.state.value,
                    job.server,
                    job.attempts,
                    ",".join(job.failed_servers) or "-",
                    f": {job.error.message}" if job.error else "",
                )
            )
        result.delivered = files_ok
        result.lost = settings.frames - files_ok
        rec = run.recorder
        doubled = {j for j, n in rec.done_transitions.items() if n > 1}
        doubled |= {j for j, ids in rec.done_prompts.items() if len(ids - {""}) > 1}
        rewritten = rec.rewritten_files()
        result.duplicated = len(doubled) + len(rewritten)
        history = _history_successes(procs, {j.id for j in snap.jobs})
        result.rerun = sum(1 for n in history.values() if n > 1)
        result.late_ignored = cluster.dispatcher.ignored_late_results
        result.failed_over = sum(1 for j in snap.jobs if j.failed_servers)
        messages = rec.message_list()
        result.messages = messages
        result.errors = [e.message for e in snap.errors]
        result.message = _pick_message(run, snap, messages)
        if run.fault_at is not None and run.affected:
            left = [rec.left_the_fault(j, run.fault_at, p) for j, p in run.affected.items()]
            if all(t is not None for t in left):
                result.detect_s = round(max(0.0, max(left) - run.fault_at), 2)  # type: ignore[type-var]
        if run.recover_from_heal and run.heal_at is not None:
            # nothing could progress until then: how long until frames are delivered again
            back = rec.first_done_after(run.heal_at)
            result.recovery_s = None if back is None else round(back - run.heal_at, 2)
        elif run.fault_at is not None and run.affected:
            fault_at = run.fault_at
            times = [rec.back_in_hand(j, fault_at, p) for j, p in run.affected.items()]
            if all(t is not None for t in times):
                result.recovery_s = round(max(0.0, max(times) - fault_at), 2)  # type: ignore[type-var]
        notes = [run.note] if run.note else []
        if failure:
            notes.append(f"fault not injected as planned: {failure[0]}")
        if not snap.finished:
            notes.append(f"batch not finished after {settings.timeout:.0f} s")
        result.note = "; ".join(notes)
        return result
    finally:
        if run is not None:
            run.stop.set()
        for proc in procs:
            try:
                proc.sigcont()
            except OSError:
                pass
        if cluster is not None:
            cluster.close()
        stop_all(procs)
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def run_matrix(
    settings: Settings, names: Optional[Sequence[str]] = None, progress: Optional[Callable[[Result], None]] = None
) -> List[Result]:
    """The baseline first, then every chosen scenario; overheads against that baseline."""
    chosen = [BY_NAME[n] for n in names] if names else list(SCENARIOS)
    if BY_NAME["baseline"] not in chosen:
        chosen.insert(0, BY_NAME["baseline"])
    chosen.sort(key=lambda s: s.name != "baseline")
    results: List[Result] = []
    base: Optional[float] = None
    for scenario in chosen:
        result = run_scenario(scenario, settings)
        if scenario.name == "baseline":
            base = result.makespan_s
        if base and result.makespan_s:
            result.overhead = round(result.makespan_s / base, 2)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


# --------------------------------------------------------------------------- output


COLUMNS = (
    "scenario",
    "frames",
    "delivered",
    "dup",
    "lost",
    "re-run",
    "late",
    "detected",
    "recovery",
    "makespan",
    "message shown",
)
MD_COLUMNS = (
    "scenario",
    "frames",
    "delivered",
    "duplicated",
    "lost",
    "re-run (wasted)",
    "late results ignored",
    "detected",
    "recovery",
    "makespan (x baseline)",
    "message shown",
)


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cells(r: Result, message_width: int) -> List[str]:
    makespan = _seconds(r.makespan_s) + (f" ({r.overhead:.2f}x)" if r.makespan_s and r.overhead else "")
    return [
        str(r.frames),
        str(r.delivered),
        str(r.duplicated),
        str(r.lost),
        str(r.rerun),
        str(r.late_ignored),
        _seconds(r.detect_s),
        _seconds(r.recovery_s),
        makespan,
        _short(r.message or "-", message_width),
    ]


def table(results: Sequence[Result]) -> str:
    rows = [list(COLUMNS)] + [[r.scenario] + _cells(r, 80) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown(results: Sequence[Result]) -> str:
    rows = ["| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in results:
        cells = [r.title] + [c.replace("|", "/") for c in _cells(r, 120)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs/RELIABILITY.md)")
    parser.add_argument("--quick", action="store_true", help="16 frames over 3 simulators")
    parser.add_argument("--only", default="", help="comma-separated scenarios (the baseline always runs)")
    parser.add_argument("--frames", type=int, help="frames per batch (default 48)")
    parser.add_argument("--sims", type=int, help="simulator processes (default 4)")
    parser.add_argument("--seconds", type=float, help="seconds per frame on a simulator (default 0.5)")
    args = parser.parse_args(argv)
    settings = Settings(**asdict(QUICK)) if args.quick else Settings()
    if args.frames:
        settings.frames = args.frames
    if args.sims:
        settings.sims = args.sims
    if args.seconds:
        settings.seconds = args.seconds
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error("unknown scenario(s): {} (known: {})".format(", ".join(unknown), ", ".join(BY_NAME)))

    def progress(r: Result) -> None:
        print(
            f"{r.scenario}: {r.delivered}/{r.frames} delivered, {r.duplicated} duplicated, {r.lost} lost"
            + (f" ({r.note})" if r.note else ""),
            file=sys.stderr,
            flush=True,
        )

    results = run_matrix(settings, names, progress)
    if args.json:
        print(
            json.dumps(
                {
                    "settings": asdict(settings),
                    "scenarios": [dict(asdict(r), ok=r.ok) for r in results],
                    "ok": all(r.ok for r in results),
                },
                indent=2,
            )
        )
    elif args.markdown:
        print(markdown(results))
    else:
        print(
            "{} frames over {} simulators, {:g} s per frame (+-{:.0%}); default cluster settings".format(
                settings.frames, settings.sims, settings.seconds, settings.jitter
            )
        )
        print(table(results))
        for r in results:
            if r.note:
                print(f"note: {r.scenario}: {r.note}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
