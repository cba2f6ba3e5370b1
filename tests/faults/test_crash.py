"""A worker process killed with SIGKILL mid-run: nothing is lost, only the interrupted jobs
run again, and they carry a "worker lost" error."""

from __future__ import annotations

import time

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import JobListParams
from engine.helpers import wait_until as poll_until

from .helpers import Fixture, kill_all, wait_for_exit

TOTAL = 300


@pytest.fixture
def fx(tmp_path, store_url):
    fixture = Fixture(tmp_path, store_url, grace=5.0)
    fixture.write_app()
    return fixture


def _records(app: Conveyor):
    return {r.id: r for r in app.backend.job_list(JobListParams(limit=TOTAL + 10))}


def _count(app: Conveyor, state: str) -> int:
    [stats] = app.queue_stats("default")
    return stats.counts[state]


def test_sigkill_mid_run_loses_nothing_and_reruns_only_interrupted_jobs(fx, make_app):
    app = make_app()
    jobs = app.enqueue_many([app.prepare("work", {"n": i}) for i in range(TOTAL)])
    ids = {j.id for j in jobs}
    assert len(ids) == TOTAL

    a = b = None
    try:
        a = fx.start("worker-a")
        poll_until(
            lambda: _count(app, "completed") >= TOTAL // 3 or a.poll() is not None,
            30,
            interval=0.005,
            what="a third of the jobs completed",
        )
        assert a.poll() is None, f"worker A exited early:\n{fx.output('worker-a')}"
        a.kill()
        wait_for_exit(a, 10)
        at_kill = _records(app)
        in_flight = {i for i, r in at_kill.items() if r.state == JobState.ACTIVE}
        assert in_flight, "no job was active when worker A died"
        assert _count(app, "completed") < TOTAL
        # Worker B in burst mode rescues expired leases when it starts: wait them out.
        last_lease = max(at_kill[i].lease_expires_at for i in in_flight)
        time.sleep(max(0.0, last_lease - time.time()) + 0.1)
        b = fx.start("worker-b", burst=True)
        assert wait_for_exit(b, 30) == 0, fx.output("worker-b")
    finally:
        kill_all(a, b)

    records = _records(app)
    assert set(records) == ids
    states = {r.state for r in records.values()}
    assert states == {JobState.COMPLETED}, states
    assert all(records[i].result == records[i].data["n"] for i in ids)

    runs = fx.executions()
    assert set(runs) == ids, "some job never ran"
    interrupted = {i for i, r in records.items() if r.attempt == 2}
    assert in_flight <= interrupted
    ran_twice = {i for i, r in runs.items() if len(r) == 2}
    assert ran_twice, "no interrupted job had started running before the kill"
    assert ran_twice <= interrupted
    assert all(len(r) <= 2 for r in runs.values())

    for job_id, record in records.items():
        attempts = [attempt for attempt, _ in runs[job_id]]
        pids = [pid for _, pid in runs[job_id]]
        if job_id in interrupted:
            # Lost with worker A (ran, or was claimed but had not started yet), then run by B.
            assert [e.attempt for e in record.errors] == [1], record
            assert "worker lost" in record.errors[0].error
            assert attempts in ([1, 2], [2]), (job_id, runs[job_id])
            assert pids[-1] == b.pid
            if attempts == [1, 2]:
                assert pids[0] == a.pid
        else:
            assert record.attempt == 1, record
            assert record.errors == (), record
            assert attempts == [1], (job_id, runs[job_id])
    assert any(pid == a.pid for r in runs.values() for _, pid in r)
    assert any(pid == b.pid for r in runs.values() for _, pid in r)
