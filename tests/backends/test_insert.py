"""job_insert_many: what is stored, the initial state, and de-duplication by id and key."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.backends.base import JobListParams, PruneParams
from conveyor.model.errors import StoreError
from conveyor.model.states import JobState

from .factory import claim_one, get, insert, insert_one, new_job, outcome


def count_jobs(backend) -> int:
    return len(backend.job_list(JobListParams(limit=1000)))


def test_fields_round_trip(backend):
    now = time.time()
    data = {
        "to": "a@b.c",
        "n": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "tags": ["x", "ÿ", "日本"],
        "nested": {"deep": [1, {"k": "v"}]},
    }
    job = new_job(
        task="send_email",
        queue="email",
        priority=2,
        delay=90.5,
        key="welcome:42",
        max_attempts=7,
        data=data,
        now=now,
        timeout=12.5,
        backoff={"kind": "fixed", "base": 3.0, "cap": 60.0, "jitter": 0.0},
    )

    (returned,) = insert(backend, job)

    for record in (returned, get(backend, job.id)):
        assert record.id == job.id
        assert record.task == "send_email"
        assert record.queue == "email"
        assert record.data == data
        assert record.priority == 2
        assert record.run_at == pytest.approx(now + 90.5, abs=1e-6)
        assert record.enqueued_at == pytest.approx(now, abs=1e-6)
        assert record.max_attempts == 7
        assert record.key == "welcome:42"
        assert record.timeout == 12.5
        assert record.backoff == {"kind": "fixed", "base": 3.0, "cap": 60.0, "jitter": 0.0}
        assert record.state is JobState.SCHEDULED
        assert record.attempt == 0
        assert record.errors == ()
        assert record.result is None and record.progress is None
        assert record.started_at is None and record.finished_at is None
        assert record.worker_id is None and record.lease_expires_at is None
        assert record.cancel_requested is False
        assert record.snoozes == 0


def test_optional_fields_default_to_none(backend):
    record = insert_one(backend)
    stored = get(backend, record.id)
    assert stored.key is None and stored.timeout is None and stored.backoff is None
    assert stored.data == {}


def test_state_is_queued_when_due_and_scheduled_when_later(backend):
    now = time.time()
    due, later = insert(backend, new_job(now=now), new_job(delay=60, now=now))
    assert due.state is JobState.QUEUED
    assert later.state is JobState.SCHEDULED
    assert get(backend, due.id).state is JobState.QUEUED
    assert get(backend, later.id).state is JobState.SCHEDULED


def test_many_jobs_in_one_call_come_back_in_order(backend):
    jobs = [new_job(task=f"t{i}", data={"i": i}, priority=i % 4) for i in range(50)]
    records = backend.job_insert_many(jobs)
    assert [r.id for r in records] == [j.id for j in jobs]
    assert [r.data for r in records] == [{"i": i} for i in range(50)]
    assert len({r.id for r in records}) == 50
    for i, job in enumerate(jobs):
        stored = get(backend, job.id)
        assert stored.task == f"t{i}" and stored.priority == i % 4
    assert count_jobs(backend) == 50


def test_empty_insert_returns_nothing(backend):
    assert backend.job_insert_many([]) == []
    assert count_jobs(backend) == 0


def test_existing_id_returns_the_existing_job_and_inserts_nothing(backend):
    first = insert_one(backend, job_id="order-1", task="a", data={"v": 1}, priority=3)
    again = new_job(job_id="order-1", task="b", queue="other", data={"v": 2}, priority=9)

    (returned,) = insert(backend, again)

    assert returned == first
    assert get(backend, "order-1") == first
    assert count_jobs(backend) == 1
    assert backend.job_list(JobListParams(queue="other")) == []


def test_existing_id_of_a_finished_job_is_not_reinserted(backend):
    first = insert_one(backend, job_id="once", data={"v": 1})
    running = claim_one(backend)
    backend.job_complete_many([outcome(running, "completed", result=1)])

    (returned,) = insert(backend, new_job(job_id="once", data={"v": 2}))

    assert returned.id == first.id
    assert returned.state is JobState.COMPLETED
    assert returned.data == {"v": 1}
    assert count_jobs(backend) == 1


def test_same_id_twice_in_one_call_inserts_once(backend):
    a = new_job(job_id="dup", data={"v": 1})
    b = new_job(job_id="dup", data={"v": 2})
    first, second = insert(backend, a, b)
    assert first.data == {"v": 1}
    assert second == first
    assert count_jobs(backend) == 1


@pytest.mark.parametrize("delay", [0, 3600], ids=["queued", "scheduled"])
def test_key_held_by_a_pending_job_returns_that_job(backend, delay):
    first = insert_one(backend, key="k", data={"v": 1}, delay=delay)
    (returned,) = insert(backend, new_job(key="k", data={"v": 2}))
    assert returned.id == first.id
    assert returned.data == {"v": 1}
    assert returned.state is first.state
    assert count_jobs(backend) == 1


def test_key_held_by_an_active_job_returns_that_job(backend):
    first = insert_one(backend, key="k", data={"v": 1})
    running = claim_one(backend)
    assert running.id == first.id

    (returned,) = insert(backend, new_job(key="k", data={"v": 2}))

    assert returned.id == first.id
    assert returned.state is JobState.ACTIVE
    assert count_jobs(backend) == 1


def test_same_key_twice_in_one_call_inserts_once(backend):
    first, second = insert(
        backend, new_job(key="k", data={"v": 1}), new_job(key="k", data={"v": 2})
    )
    assert second.id == first.id
    assert second.data == {"v": 1}
    assert count_jobs(backend) == 1


def test_same_key_in_another_queue_creates_a_new_job(backend):
    first = insert_one(backend, key="k", queue="a")
    (other,) = insert(backend, new_job(key="k", queue="b", data={"v": 2}))
    assert other.id != first.id
    assert other.queue == "b" and other.data == {"v": 2}
    assert get(backend, first.id).queue == "a"
    assert count_jobs(backend) == 2


def test_key_held_in_two_queues_returns_the_job_of_the_same_queue(backend):
    in_a = insert_one(backend, key="k", queue="a", data={"q": "a"})
    in_b = insert_one(backend, key="k", queue="b", data={"q": "b"})
    assert in_a.id != in_b.id
    (returned,) = insert(backend, new_job(key="k", queue="b", data={"q": "new"}))
    assert returned.id == in_b.id
    assert returned.data == {"q": "b"}
    assert count_jobs(backend) == 2


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
def test_same_key_after_the_first_job_finished_creates_a_new_job(backend, kind):
    first = insert_one(backend, key="k", data={"v": 1})
    running = claim_one(backend)
    backend.job_complete_many([outcome(running, kind)])
    assert get(backend, first.id).state == kind

    (second,) = insert(backend, new_job(key="k", data={"v": 2}))

    assert second.id != first.id
    assert second.state is JobState.QUEUED
    assert second.data == {"v": 2}
    assert get(backend, first.id).state == kind
    assert count_jobs(backend) == 2


def test_same_key_after_a_pending_job_was_cancelled_creates_a_new_job(backend):
    first = insert_one(backend, key="k")
    backend.job_cancel(first.id)
    (second,) = insert(backend, new_job(key="k"))
    assert second.id != first.id
    assert second.state is JobState.QUEUED


def prune_everything_finished(backend) -> None:
    backend.job_prune(PruneParams(keep_completed=0, keep_failed=0, now=time.time() + 1))


def test_a_queue_stays_known_after_its_jobs_are_gone(backend):
    (job,) = insert(backend, new_job(queue="fresh"))
    backend.job_cancel(job.id)
    prune_everything_finished(backend)
    assert backend.job_get(job.id) is None
    assert [s.name for s in backend.queue_stats()] == ["fresh"]


def test_a_queue_first_named_in_a_batch_with_a_duplicate_is_known(backend):
    insert(backend, new_job(job_id="taken"))
    fresh, _ = insert(backend, new_job(queue="fresh"), new_job(job_id="taken"))
    backend.job_cancel(fresh.id)
    prune_everything_finished(backend)
    assert backend.job_get(fresh.id) is None
    assert "fresh" in [s.name for s in backend.queue_stats()]


def test_a_store_without_transactional_enqueue_refuses_an_async_one(backend):
    if backend.capabilities.transactional_enqueue:
        pytest.skip(f"the store at {backend.url} enqueues inside the caller's transaction")
    with pytest.raises(StoreError, match="enqueue after your commit"):
        asyncio.run(backend.job_insert_many_async([new_job()], connection=object()))
    assert count_jobs(backend) == 0
