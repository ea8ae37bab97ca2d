"""The jobs view: a model over batch snapshots (by hand), then real batches on simulators."""

from __future__ import annotations

import time

import pytest
import requests

from .conftest import frame_jobs, sim_servers

pytestmark = pytest.mark.qt


def _job(index, state, server=None, error=None, progress=(0.0, 0.0), attempts=0, failed_servers=()):
    from nuke_comfy_cluster.core.jobs import JobSnapshot
    from nuke_comfy_cluster.core.state import JobState

    return JobSnapshot(
        id="job{}".format(index),
        index=index,
        label="frame {}".format(1001 + index),
        frame=1001 + index,
        iteration=None,
        seed=None,
        state=JobState(state),
        server=server,
        prompt_id=None,
        attempts=attempts,
        failed_servers=tuple(failed_servers),
        progress_value=progress[0],
        progress_max=progress[1],
        current_node=None,
        queued_at=None,
        started_at=None,
        finished_at=None,
        outputs=(),
        error=error,
    )


def _batch(jobs, name="shot010", batch_id="b1", message=""):
    from nuke_comfy_cluster.core.jobs import BatchSnapshot

    seen = {}
    for j in jobs:
        if j.error is not None and j.error.kind != "cancelled":
            seen.setdefault(j.error.key, j.error)
    return BatchSnapshot(
        id=batch_id,
        name=name,
        jobs=tuple(jobs),
        pinned=None,
        created_at=time.time(),
        finished_at=None,
        message=message,
        errors=tuple(seen.values()),
    )


def _workflow_error():
    from nuke_comfy_cluster.core.jobs import JobError

    return JobError(
        "workflow",
        "Error while processing node: mask is empty",
        server="gpu-b",
        node_id="3",
        node_type="MaskToImage",
        traceback='Traceback (most recent call last):\n  File "nodes.py", line 1\nRuntimeError: mask is empty',
    )


@pytest.fixture
def view(qtbot):
    from nuke_comfy_cluster.ui.jobs_view import JobsView

    widget = JobsView()
    qtbot.addWidget(widget)
    widget.resize(900, 300)
    return widget


def test_batches_and_jobs_from_snapshots(view):
    from nuke_comfy_cluster.ui import jobs_view as jv
    from nuke_comfy_cluster.ui.qt import QtCore

    Qt = QtCore.Qt
    model = view.model
    jobs = [
        _job(0, "done", "gpu-a", attempts=1),
        _job(1, "done", "gpu-a", attempts=1),
        _job(2, "running", "gpu-b", progress=(5, 20), attempts=1),
        _job(3, "submitted", "gpu-a", attempts=1),
        _job(4, "failed", "gpu-b", error=_workflow_error(), attempts=1),
        _job(5, "pending"),
    ]
    model.update_batch(_batch(jobs, message="Waiting for gpu-c"))
    assert model.rowCount() == 1
    top = model.index(0, 0)
    assert model.rowCount(top) == 1, "job rows wait until the batch is first expanded"
    view.tree.expand(top)
    assert model.rowCount(top) == 6
    assert model.data(top) == "shot010"
    assert model.data(model.index(0, jv.COL_STATE)) == "running"
    assert model.data(model.index(0, jv.COL_FRAMES)) == "2/6 done · 1 running · 1 queued · 1 failed"
    assert model.data(model.index(0, jv.COL_SERVER)) == "gpu-a 2 · gpu-b 0 (+2 running)"
    assert model.data(model.index(0, jv.COL_ERROR)) == "Error while processing node: mask is empty"
    assert model.data(model.index(0, jv.COL_PROGRESS), jv.ProgressRole) == pytest.approx((2 + 0.25) / 6)
    assert "Waiting for gpu-c" in model.data(model.index(0, jv.COL_NAME), Qt.ItemDataRole.ToolTipRole)

    running = model.index(2, jv.COL_PROGRESS, top)
    assert model.data(running, jv.ProgressRole) == pytest.approx(0.25)
    assert model.data(running) == "step 5/20"  # the websocket's progress steps, as they come
    assert "Step 5 of 20" in model.data(running, Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(5, jv.COL_PROGRESS, top)) == "waiting"
    assert model.data(model.index(5, jv.COL_PROGRESS, top), jv.ProgressRole) is None  # no empty bar
    assert model.data(model.index(3, jv.COL_PROGRESS, top)) == "queued"
    assert model.data(model.index(2, jv.COL_SERVER, top)) == "gpu-b"
    assert model.data(model.index(4, jv.COL_STATE, top)) == "failed"
    assert (
        model.data(model.index(4, jv.COL_STATE, top), Qt.ItemDataRole.ForegroundRole).color().name()
        == jv.STATE_COLOURS["failed"]
    )
    assert model.parent(model.index(4, 0, top)) == top
    assert model.job_for(model.index(4, 0, top)).label == "frame 1005"
    assert model.batch_for(model.index(4, 0, top)).id == "b1"

    # an update replaces the snapshot in place
    jobs[2] = _job(2, "done", "gpu-b", attempts=1)
    model.update_batch(_batch(jobs))
    assert model.rowCount() == 1
    assert model.data(model.index(0, jv.COL_FRAMES)) == "3/6 done · 1 queued · 1 failed"
    assert model.data(model.index(2, jv.COL_STATE, top)) == "done"
    assert model.data(model.index(2, jv.COL_PROGRESS, top), jv.ProgressRole) == pytest.approx(1.0)

    # the progress delegate paints without complaint
    view.show()
    assert not view.tree.grab().isNull()


def test_progress_bar_text_is_readable_on_both_parts_of_the_bar(view):
    from nuke_comfy_cluster.ui import jobs_view as jv
    from nuke_comfy_cluster.ui.qt import QtCore, QtGui

    for base in ("#ffffff", "#e8e8e8", "#3a3a3a", "#262626"):  # light styles and Nuke's dark one
        palette = QtGui.QPalette()
        palette.setColor(QtGui.QPalette.ColorRole.Base, QtGui.QColor(base))
        for state in jv.STATE_COLOURS:
            track, chunk = jv.bar_colours(palette, state)
            for background in (track, chunk):
                assert jv.contrast(jv.readable_on(background), background) >= 4.5, (base, state)

    # painted: the filled part in the state's colour, the rest in the track's, text on both
    jobs = [_job(0, "running", "gpu-a", progress=(10, 20))]
    view.update_batch(_batch(jobs))
    view.tree.expand(view.model.index(0, 0))
    index = view.model.index(0, jv.COL_PROGRESS, view.model.index(0, 0))
    delegate = view.tree.itemDelegateForColumn(jv.COL_PROGRESS)
    image = QtGui.QImage(200, 18, QtGui.QImage.Format.Format_ARGB32)
    image.fill(QtGui.QColor("#ffffff"))
    painter = QtGui.QPainter(image)
    option = _view_option(view.tree, QtCore.QRect(0, 0, 200, 18))
    delegate.paint(painter, option, index)
    painter.end()
    track, chunk = jv.bar_colours(option.palette, "running")
    row = [QtGui.QColor(image.pixel(x, 3)).name() for x in range(200)]  # above the text
    assert row[20] == chunk.name() and row[180] == track.name()
    text_pixels = {QtGui.QColor(image.pixel(x, y)).name() for x in range(200) for y in range(4, 14)}
    assert jv.readable_on(chunk).name() in text_pixels or jv.readable_on(track).name() in text_pixels


def _view_option(widget, rect):
    """A QStyleOptionViewItem, as a view makes one."""
    from nuke_comfy_cluster.ui.qt import QtWidgets

    option = QtWidgets.QStyleOptionViewItem()
    option.initFrom(widget)
    option.rect = rect
    option.widget = widget
    return option


def test_buttons_follow_the_selection_and_errors_on_demand(view, qtbot):
    from nuke_comfy_cluster.ui.qt import QtCore

    jobs = [_job(0, "done", "gpu-a"), _job(1, "failed", "gpu-b", error=_workflow_error()), _job(2, "running", "gpu-a")]
    view.update_batch(_batch(jobs))
    # a new batch is selected when nothing is; the buttons follow on the next event loop turn
    assert view.selected_batch().id == "b1"
    qtbot.waitUntil(view.cancel_button.isEnabled, timeout=1000)
    assert view.retry_button.isEnabled()
    assert view.error_button.isEnabled()
    assert not view.clear_button.isEnabled()

    with qtbot.waitSignal(view.cancel_requested, timeout=1000) as cancelled:
        qtbot.mouseClick(view.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    assert cancelled.args == ["b1"]
    with qtbot.waitSignal(view.retry_requested, timeout=1000) as retried:
        qtbot.mouseClick(view.retry_button, QtCore.Qt.MouseButton.LeftButton)
    assert retried.args == ["b1"]

    view.select_job("b1", 1)
    text = view.error_text()
    assert "frame 1002 — failed" in text
    assert "Workflow error: Error while processing node: mask is empty" in text
    assert "Node: 3 (MaskToImage)" in text and "Server: gpu-b" in text
    box = view.show_error()
    assert box is not None and box.isVisible()
    assert "MaskToImage" in box.text()
    assert "RuntimeError: mask is empty" in box.detailedText()
    box.close()

    view.select_job("b1", 0)  # a job that did not fail has no error to show
    assert view.error_text() is None and not view.error_button.isEnabled()

    # finished: cancel is off, "clear finished" removes it
    jobs[2] = _job(2, "done", "gpu-a")
    view.update_batch(_batch(jobs))
    view.select_batch("b1")
    assert not view.cancel_button.isEnabled()
    assert view.clear_button.isEnabled()
    with qtbot.waitSignal(view.cleared, timeout=1000) as cleared:
        qtbot.mouseClick(view.clear_button, QtCore.Qt.MouseButton.LeftButton)
    assert cleared.args == [["b1"]]
    assert view.model.rowCount() == 0


@pytest.mark.integration
def test_jobs_view_follows_a_batch_to_the_end(start_sims, make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui import jobs_view as jv

    procs = start_sims([1.0, 1.0], seconds=0.3, extra_args=["--cache-none"])
    cluster = make_cluster(sim_servers(procs))
    panel = make_panel(cluster, auto_refresh=False)
    seen_states = set()
    panel.batch_bridge.batch_changed.connect(lambda snap: seen_states.add(snap.state))

    with qtbot.waitSignal(panel.batch_watched, timeout=20000):
        assert panel.submit_in_background(lambda: cluster.submit_batch(frame_jobs(range(1, 7)), name="six frames"))
    model = panel.jobs.model
    qtbot.waitUntil(lambda: model.batches()[0].done == 6, timeout=40000)
    snap = model.batches()[0]
    assert snap.name == "six frames" and snap.state == "done"
    assert "running" in seen_states, "progress was shown while it ran"
    assert model.data(model.index(0, jv.COL_FRAMES)) == "6/6 done"
    top = model.index(0, 0)
    panel.jobs.tree.expand(top)
    servers = {model.data(model.index(r, jv.COL_SERVER, top)) for r in range(6)}
    assert servers <= {"sim0", "sim1"} and servers
    assert model.data(model.index(0, jv.COL_PROGRESS), jv.ProgressRole) == pytest.approx(1.0)


@pytest.mark.integration
def test_cancel_from_the_jobs_view_reaches_the_servers(start_sims, make_cluster, make_panel, qtbot):
    from nuke_comfy_cluster.ui.qt import QtCore

    procs = start_sims([1.0], seconds=4.0, extra_args=["--cache-none"])
    cluster = make_cluster(sim_servers(procs))
    panel = make_panel(cluster, auto_refresh=False)
    with qtbot.waitSignal(panel.batch_watched, timeout=20000):
        panel.submit_in_background(lambda: cluster.submit_batch(frame_jobs(range(1, 5)), name="slow"))
    model = panel.jobs.model
    qtbot.waitUntil(lambda: model.batches()[0].running >= 1, timeout=20000)
    panel.jobs.select_batch(model.batches()[0].id)
    qtbot.mouseClick(panel.jobs.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: model.batches()[0].state == "cancelled", timeout=20000)
    assert not panel.jobs.cancel_button.isEnabled()

    def server_queue_empty():
        body = requests.get(procs[0].url + "/queue", timeout=2).json()
        return not body["queue_running"] and not body["queue_pending"]

    qtbot.waitUntil(server_queue_empty, timeout=10000)


@pytest.mark.integration
def test_a_workflow_error_is_shown_with_its_node(start_sims, make_cluster, make_panel, qtbot):
    procs = start_sims([1.0], seconds=0.2)
    cluster = make_cluster(sim_servers(procs))
    panel = make_panel(cluster, auto_refresh=False)
    broken = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "NoSuchNodeClass", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "broken"}},
    }
    with qtbot.waitSignal(panel.batch_watched, timeout=20000):
        panel.submit_in_background(lambda: cluster.submit_frames(broken, [1, 2, 3], name="broken"))
    model = panel.jobs.model
    qtbot.waitUntil(lambda: model.batches()[0].finished, timeout=20000)
    snap = model.batches()[0]
    assert snap.state == "failed" and snap.failed == 3
    panel.jobs.select_batch(snap.id)
    assert panel.jobs.retry_button.isEnabled()
    text = panel.jobs.error_text()
    assert "NoSuchNodeClass" in text
    assert text.count("Workflow error") == 1, "the same failure is reported once per batch"


@pytest.mark.integration
def test_running_frames_show_the_sampler_steps(start_sims, make_cluster, make_panel, qtbot):
    """The steps come from the server's websocket ``progress`` messages, through the batch snapshots."""
    from nuke_comfy_cluster.ui import jobs_view as jv
    from nuke_comfy_cluster.ui.standalone import demo_jobs

    procs = start_sims([1.0], seconds=3.0, extra_args=["--cache-none"])
    cluster = make_cluster(sim_servers(procs))
    panel = make_panel(cluster, auto_refresh=False)
    with qtbot.waitSignal(panel.batch_watched, timeout=20000):
        panel.submit_in_background(lambda: cluster.submit_batch(demo_jobs([1, 2], sampler=True), name="steps"))
    model = panel.jobs.model
    batch_id = model.batches()[0].id
    panel.jobs.select_job(batch_id, 0)  # makes the job rows
    seen = set()

    def steps_shown():
        text = model.data(model.index(0, jv.COL_PROGRESS, model.index(0, 0)))
        if text.startswith("step "):
            seen.add(text)
        return len(seen) >= 2

    qtbot.waitUntil(steps_shown, timeout=30000)
    for text in seen:
        done, total = text[len("step ") :].split("/")
        assert total == "12" and 0 <= int(done) <= 12, text
    cluster.cancel(panel.batch(batch_id))
    qtbot.waitUntil(lambda: model.batches()[0].finished, timeout=20000)


def test_the_servers_tooltip_says_where_the_models_were_loaded():
    from dataclasses import replace

    from nuke_comfy_cluster.ui.jobs_view import batch_servers_tooltip

    jobs = [_job(0, "done", "gpu-a"), _job(1, "done", "gpu-b")]
    snap = replace(_batch(jobs), loads=(("gpu-a", 1, 4.2), ("gpu-b", 2, 0.0)))
    lines = batch_servers_tooltip(snap).splitlines()
    assert lines[-2:] == ["gpu-a loaded the models 1x, 4.2 s", "gpu-b loaded the models 2x"]
