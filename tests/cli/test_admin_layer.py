"""The admin layer (`app.admin`): what the CLI, the HTTP service and `Job` handles call.

Admin actions publish the change the store applied, like the engine does; surfaces never
reach past it to `app.backend`; it reports the maintenance leader and the store's clock.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import conveyor
from backends.factory import claim_one, complete, outcome
from conveyor import Conveyor, JobNotFound, JobState
from conveyor.backends import open_backend
from conveyor.backends.base import MAINTENANCE_LEADER, JobChange, WorkerInfo
from conveyor.model.errors import InvalidTransition

from .helpers import make_cli

SOURCE = Path(conveyor.__file__).parent


def _recorder(app: Conveyor) -> list[JobChange]:
    seen: list[JobChange] = []
    app.changes.subscribe(seen.extend)
    return seen


def test_cancel_and_retry_publish_the_change_the_store_applied(make_app) -> None:
    app = make_app()
    seen = _recorder(app)
    job = app.enqueue("t", {"n": 1})

    cancelled = app.cancel_job(job.id)
    assert cancelled.state == JobState.CANCELLED
    retried = job.retry()
    assert (retried.state, retried.record.max_attempts) == (JobState.QUEUED, 3)
    assert [(c.id, c.from_state, c.to_state) for c in seen] == [
        (job.id, JobState.QUEUED, JobState.CANCELLED),
        (job.id, JobState.CANCELLED, JobState.QUEUED),
    ]
    assert all(c.task == "t" and c.queue == "default" and c.record is not None for c in seen)
    assert seen[1].record == app.get_job(job.id).record


def test_cancel_of_a_running_job_publishes_a_cancel_request(make_app) -> None:
    app = make_app()
    seen = _recorder(app)
    job = app.enqueue("t")
    claim_one(app.backend)

    record = app.admin.cancel_job(job.id)
    assert (record.state, record.cancel_requested) == (JobState.ACTIVE, True)
    [change] = seen
    assert (change.from_state, change.to_state) == (JobState.ACTIVE, JobState.ACTIVE)


def test_refused_admin_calls_publish_nothing(make_app) -> None:
    app = make_app()
    seen = _recorder(app)
    job = app.enqueue("t")
    with pytest.raises(InvalidTransition):
        job.retry()
    with pytest.raises(JobNotFound, match="NOSUCH"):
        app.admin.cancel_job("NOSUCH")
    with pytest.raises(JobNotFound, match="no job with id NOSUCH"):
        app.admin.require_job("NOSUCH")
    assert seen == []


def test_listing_pages_newest_first_and_checks_its_limit(make_app) -> None:
    app = make_app()
    ids = [app.enqueue("t", {"n": n}).id for n in range(3)]
    admin = app.admin
    assert [r.id for r in admin.list_jobs(limit=2)] == ids[:0:-1]
    assert [r.id for r in admin.list_jobs(before_id=ids[1])] == ids[:1]
    assert [r.id for r in admin.list_jobs(state=JobState.QUEUED, task="t")] == ids[::-1]
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        admin.list_jobs(limit=0)


def test_workers_come_with_the_leader_and_the_store_clock(make_app) -> None:
    app = make_app()
    assert app.admin.leader() is None
    now = time.time()
    for worker_id in ("a", "b"):
        info = WorkerInfo(worker_id, "worker", "h", 1, ("default",), 1, now, now)
        app.backend.worker_beat(info, ttl=60)
    assert app.backend.leader_elect(MAINTENANCE_LEADER, "b", ttl=60)

    view = app.admin.workers()
    assert [w.id for w in view.workers] == ["a", "b"]
    assert (view.leader, app.admin.leader()) == ("b", "b")
    assert [w["leader"] for w in view.to_dicts()] == [False, True]
    assert abs(view.now - app.admin.store_time()) < 5


def test_queue_admin_refuses_an_empty_name(make_app) -> None:
    app = make_app()
    with pytest.raises(ValueError, match="queue name must not be empty"):
        app.admin.pause_queue(" ")


def test_no_surface_reaches_past_the_admin_layer() -> None:
    """The CLI (but the worker command, which runs the engine) and `Job` call `app.admin`."""
    files = [p for p in (SOURCE / "cli").glob("*.py") if p.name != "worker_cmd.py"]
    files.append(SOURCE / "job.py")
    offenders = [
        f"{path.name}:{n}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.backend\b", line)
    ]
    assert offenders == []


def test_jobs_show_and_list_give_snoozes_when_there_are_any(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    plain = cli.ok("enqueue", "add", "--data", '{"a": 1, "b": 2}').strip()
    snoozed = cli.ok("enqueue", "add", "--priority", "1", "--data", '{"a": 3, "b": 4}').strip()
    header = cli.ok("jobs", "list").splitlines()[0]
    assert "SNOOZED" not in header
    assert "snoozes" not in cli.ok("jobs", "show", plain)

    store = open_backend(cli.url)  # type: ignore[arg-type]
    store.open()
    try:
        for _ in range(2):  # priority 1 is claimed first, and again once snoozed
            record = claim_one(store)
            assert record.id == snoozed
            complete(store, outcome(record, "snooze", delay=0))
    finally:
        store.close()

    shown = cli.json("jobs", "show", snoozed)
    assert (shown["snoozes"], shown["attempt"], shown["state"]) == (2, 0, "queued")
    text = cli.ok("jobs", "show", snoozed)
    assert re.search(r"^snoozes\s+2 \(postponed without counting an attempt\)$", text, re.M)
    header, *rows = cli.ok("jobs", "list").splitlines()
    assert header.split()[:7] == ["ID", "TASK", "QUEUE", "STATE", "ATTEMPT", "SNOOZED", "PRI"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[snoozed][4:6] == ["0/3", "2"]
    assert by_id[plain][4:6] == ["0/3", "0"]
