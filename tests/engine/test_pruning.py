"""Retention: prune_finished removes old finished jobs (in bounded batches), keeps recent and
pending ones; a freshly elected leader prunes soon, not after a first full interval."""

from __future__ import annotations

import time

from conveyor import Settings
from conveyor.backends.base import ClaimParams, Outcome
from conveyor.maintenance.pruner import prune_finished
from conveyor.model.job import AttemptError

from .helpers import running_worker, wait_until

DAY = 86400.0


def _finish(app, job, kind, finished_at):
    """Claim one job and record its outcome as if it finished at `finished_at`."""
    [claimed] = app.backend.job_claim(
        ClaimParams(queues=(job.queue,), limit=1, worker_id="w", lease_seconds=30, now=time.time())
    )
    assert claimed.id == job.id
    error = None if kind == "completed" else AttemptError(1, finished_at, "boom")
    app.backend.job_complete_many(
        [
            Outcome(
                job_id=job.id,
                queue=job.queue,
                attempt=claimed.attempt,
                worker_id="w",
                kind=kind,
                finished_at=finished_at,
                result=b'"ok"' if kind == "completed" else None,
                error=error,
            )
        ]
    )
    assert app.get_job(job.id).record.finished_at == finished_at


def test_prune_removes_old_finished_jobs_and_keeps_the_rest(make_app):
    app = make_app()
    now = time.time()
    finished = {}
    plan = [
        ("old_completed", "completed", now - 8 * DAY),
        ("recent_completed", "completed", now - 3600),
        ("old_failed", "failed", now - 31 * DAY),
        ("recent_failed", "failed", now - 8 * DAY),
        ("old_cancelled", "cancelled", now - 31 * DAY),
    ]
    for name, kind, at in plan:
        job = app.enqueue("t", {"name": name}, queue=f"q-{name}")
        _finish(app, job, kind, at)
        finished[name] = job.id
    queued = app.enqueue("t", {"name": "queued"})
    scheduled = app.enqueue("t", {"name": "scheduled"}, delay=3600)

    removed = prune_finished(app.backend, keep_completed=7 * DAY, keep_failed=30 * DAY)

    assert removed == 3
    assert app.get_job(finished["old_completed"]) is None
    assert app.get_job(finished["old_failed"]) is None
    assert app.get_job(finished["old_cancelled"]) is None
    assert app.get_job(finished["recent_completed"]) is not None
    assert app.get_job(finished["recent_failed"]) is not None
    assert app.get_job(queued.id) is not None
    assert app.get_job(scheduled.id) is not None
    # idempotent: nothing more is old enough
    assert prune_finished(app.backend, 7 * DAY, 30 * DAY) == 0


def test_prune_never_removes_pending_or_active_jobs(make_app):
    app = make_app()
    pending = [app.enqueue("t", {"n": i}) for i in range(3)]
    [active] = app.backend.job_claim(
        ClaimParams(queues=("default",), limit=1, worker_id="w", lease_seconds=30, now=time.time())
    )
    assert prune_finished(app.backend, keep_completed=0, keep_failed=0) == 0
    for job in pending:
        assert app.get_job(job.id) is not None
    assert app.get_job(active.id).state.value == "active"


def test_prune_goes_in_bounded_batches_until_nothing_is_left(make_app):
    app = make_app()
    now = time.time()
    for n in range(7):
        job = app.enqueue("t", {"n": n})
        _finish(app, job, "completed", now - 8 * DAY)
    calls: list[float] = []

    def pause(seconds: float) -> bool:
        calls.append(seconds)
        return False

    removed = prune_finished(app.backend, 7 * DAY, 30 * DAY, limit=3, pause=pause)
    assert removed == 7
    assert len(calls) == 2  # after each full batch of 3, none after the last one (1)


def test_a_freshly_started_leader_prunes_soon(make_app):
    # Before issue 8 the first prune waited for `prune_interval` of host uptime (it compared
    # 0.0 with time.monotonic()), so a young host never pruned.
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, prune_interval=3600)
    )
    old = app.enqueue("t", {"name": "old"})
    _finish(app, old, "completed", time.time() - 8 * DAY)
    with running_worker(app):
        wait_until(lambda: app.get_job(old.id) is None, 5, what="the old job pruned")
