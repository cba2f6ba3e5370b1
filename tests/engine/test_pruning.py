"""Retention: prune_finished removes old finished jobs, keeps recent and pending ones."""

from __future__ import annotations

import time

from conveyor.backends.base import ClaimParams, Outcome
from conveyor.maintenance.pruner import prune_finished
from conveyor.model.job import AttemptError

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
