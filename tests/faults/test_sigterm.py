"""SIGTERM/SIGINT on a real worker process: finish within the grace period, else record the
started attempt as "released at shutdown" (it counts, so max_attempts bounds every job's
runs) and due again at once; a second signal skips the grace."""

from __future__ import annotations

import signal
import time

import pytest

from conveyor import JobState
from engine.helpers import wait_until as poll_until

from .helpers import Fixture, kill_all, wait_for_exit


def _setup(tmp_path, store_url, grace):
    fx = Fixture(tmp_path, store_url, grace=grace)
    fx.write_app()
    return fx


def _wait_started(fx, proc, job_id):
    poll_until(
        lambda: job_id in fx.executions() or proc.poll() is not None,
        15,
        what="the job started in the worker process",
    )
    assert proc.poll() is None, f"worker exited early:\n{fx.output('worker')}"


def test_sigterm_lets_the_running_job_finish(tmp_path, store_url, make_app):
    grace = 5.0
    fx = _setup(tmp_path, store_url, grace)
    app = make_app()
    job = app.enqueue("block", {"seconds": 0.5})
    proc = None
    try:
        proc = fx.start("worker")
        _wait_started(fx, proc, job.id)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_for_exit(proc, grace + 5) == 0, fx.output("worker")
        assert time.monotonic() - sent < grace
    finally:
        kill_all(proc)
    record = app.get_job(job.id).record
    assert record.state == JobState.COMPLETED, fx.output("worker")
    assert record.result == 0.5
    assert record.attempt == 1
    assert record.errors == ()
    assert fx.executions()[job.id] == [(1, proc.pid)]


@pytest.mark.parametrize("task", ["nap", "block"])
def test_sigterm_past_the_grace_period_counts_the_started_attempt(
    tmp_path, store_url, make_app, task
):
    fx = _setup(tmp_path, store_url, grace=1.0)
    app = make_app()
    job = app.enqueue(task, {"seconds": 30})
    proc = None
    try:
        proc = fx.start("worker")
        _wait_started(fx, proc, job.id)
        assert app.get_job(job.id).record.attempt == 1
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_for_exit(proc, 10) == 0, fx.output("worker")
        assert time.monotonic() - sent < 3.0
    finally:
        kill_all(proc)
    record = app.get_job(job.id).record
    assert record.state == JobState.QUEUED, fx.output("worker")
    assert record.attempt == 1
    assert [e.attempt for e in record.errors] == [1]
    assert "released at shutdown after" in record.errors[0].error
    assert record.worker_id is None


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_second_signal_skips_the_grace_period(tmp_path, store_url, make_app, second):
    fx = _setup(tmp_path, store_url, grace=30.0)
    app = make_app()
    job = app.enqueue("nap", {"seconds": 30})
    proc = None
    try:
        proc = fx.start("worker")
        _wait_started(fx, proc, job.id)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal must wait for the running job"
        sent = time.monotonic()
        proc.send_signal(second)
        assert wait_for_exit(proc, 10) == 0, fx.output("worker")
        assert time.monotonic() - sent < 3.0
    finally:
        kill_all(proc)
    record = app.get_job(job.id).record
    assert record.state == JobState.QUEUED, fx.output("worker")
    assert record.attempt == 1
    assert [e.attempt for e in record.errors] == [1]
    assert "released at shutdown after" in record.errors[0].error
