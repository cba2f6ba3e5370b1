"""Reads: job_list, job_next_due_in, queue_stats and pause/resume as stats show them."""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import JobListParams
from conveyor.model.states import JobState

from .factory import claim, claim_one, get, insert, insert_one, new_job, outcome, store_window


def insert_in_distinct_milliseconds(backend, count, **kwargs):
    """Insert one job at a time, each created in a later millisecond than the one before."""
    records = []
    for _ in range(count):
        created = time.time()
        while time.time() - created < 0.002:
            pass
        records.append(insert_one(backend, **kwargs))
    return records


# job_list -------------------------------------------------------------------------------
def test_job_list_filters_by_queue_state_and_task(backend):
    now = time.time()
    a1 = insert_one(backend, queue="a", task="x", now=now)
    a2 = insert_one(backend, queue="a", task="y", now=now)
    b1 = insert_one(backend, queue="b", task="x", now=now)
    b2 = insert_one(backend, queue="b", task="x", now=now, delay=60)
    running = claim_one(backend, queues=("a",), now=now + 1)
    assert running.id in {a1.id, a2.id}

    def ids(**kw):
        return {r.id for r in backend.job_list(JobListParams(**kw))}

    assert ids() == {a1.id, a2.id, b1.id, b2.id}
    assert ids(queue="a") == {a1.id, a2.id}
    assert ids(queue="b") == {b1.id, b2.id}
    assert ids(task="x") == {a1.id, b1.id, b2.id}
    assert ids(state=JobState.SCHEDULED) == {b2.id}
    assert ids(state=JobState.ACTIVE) == {running.id}
    assert ids(queue="b", state=JobState.QUEUED, task="x") == {b1.id}
    assert ids(queue="a", state=JobState.SCHEDULED) == set()
    assert ids(queue="nope") == set()
    listed = backend.job_list(JobListParams(state=JobState.ACTIVE))
    assert listed == [get(backend, running.id)]


def test_job_list_is_newest_first_and_limited(backend):
    records = insert_in_distinct_milliseconds(backend, 6)
    newest_first = [r.id for r in reversed(records)]
    assert [r.id for r in backend.job_list(JobListParams())] == newest_first
    assert [r.id for r in backend.job_list(JobListParams(limit=2))] == newest_first[:2]


def test_job_list_is_newest_first_for_jobs_created_together(backend):
    jobs = [new_job(data={"i": i}) for i in range(20)]
    backend.job_insert_many(jobs)
    listed = backend.job_list(JobListParams(limit=100))
    assert [r.data["i"] for r in listed] == list(reversed(range(20)))


def test_job_list_cursor_paging_walks_every_job_once(backend):
    inserted = insert(
        backend, *[new_job(queue="a") for _ in range(11)], *[new_job(queue="b") for _ in range(4)]
    )
    pages, cursor = [], None
    while True:
        page = backend.job_list(JobListParams(queue="a", limit=3, before_id=cursor))
        if not page:
            break
        assert len(page) <= 3
        pages.append(page)
        cursor = page[-1].id
    seen = [r.id for page in pages for r in page]
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == {r.id for r in inserted if r.queue == "a"}
    assert seen == [r.id for r in backend.job_list(JobListParams(queue="a", limit=100))]


def test_job_get_of_an_unknown_id_is_none(backend):
    assert backend.job_get("no-such-job") is None


# next due -------------------------------------------------------------------------------
def assert_due_at(backend, queues, run_at):
    """The earliest due time of `queues` is `run_at`: `job_next_due_in` is `run_at` minus
    the store's now."""
    value, window = store_window(backend, lambda: backend.job_next_due_in(queues))
    assert value is not None, f"nothing due in {queues}, expected a job due at {run_at}"
    assert window.holds(run_at - value), (
        f"due in {value} s from a store now of {run_at - value}, outside [{window.start}, "
        f"{window.end}]: not counted from the store's clock to {run_at}"
    )


def test_next_due_in_counts_to_the_earliest_scheduled_job_of_the_queues(backend):
    now = time.time()
    assert backend.job_next_due_in(["a"]) is None
    insert(
        backend,
        new_job(queue="a", delay=50, now=now),
        new_job(queue="a", delay=20, now=now),
        new_job(queue="b", delay=10, now=now),
        new_job(queue="c", delay=5, now=now),
        new_job(queue="a", now=now),
    )  # queued: already due, not a wake-up time

    assert_due_at(backend, ["a"], now + 20)
    assert_due_at(backend, ["b"], now + 10)
    assert_due_at(backend, ["a", "b"], now + 10)
    assert backend.job_next_due_in(["d"]) is None
    assert backend.job_next_due_in([]) is None


def test_next_due_in_is_not_positive_once_the_time_has_come(backend):
    now = time.time()
    insert_one(backend, queue="late", delay=5, now=now - 10)  # due 5 s ago, not yet claimed

    assert backend.job_next_due_in(["late"]) <= 0
    assert_due_at(backend, ["late"], now - 5)


def test_next_due_in_moves_on_once_the_earliest_job_ran(backend):
    now = time.time()
    first = insert_one(backend, delay=10, now=now)
    insert_one(backend, delay=30, now=now)
    assert_due_at(backend, ["default"], now + 10)
    assert claim_one(backend, now=now + 10).id == first.id
    assert_due_at(backend, ["default"], now + 30)
    claim_one(backend, now=now + 30)
    assert backend.job_next_due_in(["default"]) is None


def test_next_due_in_includes_a_retry_scheduled_later(backend):
    now = time.time()
    insert_one(backend, now=now)
    running = claim_one(backend, now=now)
    assert backend.job_next_due_in(["default"]) is None
    backend.job_complete_many([outcome(running, "retry", finished_at=now + 1, run_at=now + 9)])
    assert_due_at(backend, ["default"], now + 9)


def test_next_due_in_ignores_paused_queues(backend):
    now = time.time()
    insert_one(backend, queue="paused", delay=5, now=now - 10)  # due 5 s ago
    backend.queue_pause("paused")
    assert claim(backend, ("paused",), now=now) == []
    assert backend.job_next_due_in(["paused"]) is None


# queue stats ----------------------------------------------------------------------------
def stats_of(backend, now, name):
    (stats,) = backend.queue_stats(now, name)
    assert stats.name == name
    return stats


def test_queue_stats_counts_jobs_per_state(backend):
    now = time.time()
    base = now - 30
    insert(
        backend,
        new_job(queue="q", now=base),  # queued (oldest)
        new_job(queue="q", now=base + 10),  # queued
        new_job(queue="q", now=base, delay=20),  # scheduled, due at now - 10: queued
        new_job(queue="q", now=base, delay=3600),  # scheduled
        new_job(queue="q", now=base + 1, priority=1),
        new_job(queue="q", now=base + 1, priority=1),
        new_job(queue="q", now=base + 1, priority=1),
        new_job(queue="q", now=base + 1, priority=1),
        new_job(queue="other", now=base),
    )
    a, b, c, d = claim(backend, ("q",), limit=4, now=base + 2)
    assert {j.priority for j in (a, b, c, d)} == {1}
    backend.job_complete_many(
        [
            outcome(a, "completed", finished_at=now - 5),
            outcome(b, "completed", finished_at=now - 120),  # more than a minute ago
            outcome(c, "failed", finished_at=now - 5),
        ]
    )

    stats = stats_of(backend, now, "q")

    assert stats.paused is False
    assert stats.counts["queued"] == 3
    assert stats.counts["scheduled"] == 1
    assert stats.counts["active"] == 1
    assert stats.counts["completed"] == 2
    assert stats.counts["failed"] == 1
    assert stats.counts.get("cancelled", 0) == 0
    assert stats.oldest_queued_at == pytest.approx(base, abs=1e-6)
    assert stats.completed_last_minute == 1
    assert stats.failed_last_minute == 1
    assert stats.error_rate == pytest.approx(1 / 3)

    other = stats_of(backend, now, "other")
    assert other.counts["queued"] == 1
    assert other.counts.get("active", 0) == 0
    assert other.error_rate is None


def test_queue_stats_lists_every_queue_sorted_and_shows_pauses(backend):
    now = time.time()
    insert(
        backend,
        new_job(queue="b", now=now),
        new_job(queue="a", now=now),
        new_job(queue="c", now=now),
    )
    backend.queue_pause("b")

    stats = backend.queue_stats(now)
    assert [s.name for s in stats] == ["a", "b", "c"]
    assert [s.paused for s in stats] == [False, True, False]
    assert all(s.counts["queued"] == 1 for s in stats)

    backend.queue_resume("b")
    assert stats_of(backend, now, "b").paused is False


def test_queue_stats_of_an_idle_queue(backend):
    now = time.time()
    insert_one(backend, queue="q", now=now, delay=600)
    stats = stats_of(backend, now, "q")
    assert stats.counts.get("queued", 0) == 0
    assert stats.counts["scheduled"] == 1
    assert stats.oldest_queued_at is None
    assert stats.completed_last_minute == 0 and stats.failed_last_minute == 0
    assert stats.error_rate is None
    # The same job counts as queued once its time has come.
    later = stats_of(backend, now + 600, "q")
    assert later.counts["queued"] == 1 and later.counts.get("scheduled", 0) == 0
    assert later.oldest_queued_at == pytest.approx(now + 600, abs=1e-6)


def test_paused_queue_without_jobs_shows_in_stats(backend):
    backend.queue_pause("empty")
    (stats,) = backend.queue_stats(name="empty")
    assert stats.paused is True
    assert sum(stats.counts.values()) == 0
