"""job_claim: which jobs are taken, in what order, and what a claim writes."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.backends import open_backend
from conveyor.model.states import JobState

from .factory import claim, claim_one, get, insert, insert_one, new_job, outcome


def claim_all_one_by_one(backend, **kwargs) -> list[str]:
    taken = []
    while jobs := claim(backend, limit=1, **kwargs):
        taken.extend(j.id for j in jobs)
    return taken


def test_lower_priority_number_is_claimed_first(backend):
    now = time.time()
    jobs = [new_job(priority=p, now=now + i * 0.001) for i, p in enumerate([5, 1, 10, 3, 7])]
    insert(backend, *jobs)
    by_priority = [j.id for j in sorted(jobs, key=lambda j: j.priority)]
    assert claim_all_one_by_one(backend, now=now + 1) == by_priority


def test_priority_beats_age(backend):
    now = time.time()
    old = insert_one(backend, priority=5, now=now - 600)
    urgent = insert_one(backend, priority=1, now=now)
    assert claim_one(backend, now=now + 1).id == urgent.id
    assert claim_one(backend, now=now + 1).id == old.id


def test_fifo_within_a_priority(backend):
    now = time.time()
    jobs = [new_job(priority=5, now=now + i * 0.001, data={"i": i}) for i in range(8)]
    # Inserted in one call in shuffled order: the enqueue time decides, not the insert order.
    insert(backend, *jobs[4:], *jobs[:4])
    assert claim_all_one_by_one(backend, now=now + 1) == [j.id for j in jobs]


def test_delayed_job_is_claimed_only_once_due(backend):
    now = time.time()
    delayed = insert_one(backend, delay=60, now=now)
    assert claim(backend, now=now) == []
    assert claim(backend, now=now + 59.999) == []
    assert get(backend, delayed.id).state is JobState.SCHEDULED

    (job,) = claim(backend, now=now + 60)
    assert job.id == delayed.id
    assert job.state is JobState.ACTIVE


def test_due_delayed_job_competes_by_priority_and_due_time(backend):
    now = time.time()
    queued = insert_one(backend, priority=5, now=now)
    delayed_urgent = insert_one(backend, priority=1, delay=10, now=now)
    delayed_same = insert_one(backend, priority=5, delay=5, now=now - 10)  # due at now - 5
    order = claim_all_one_by_one(backend, now=now + 10)
    assert order == [delayed_urgent.id, delayed_same.id, queued.id]


def test_limit_is_respected(backend):
    insert(backend, *[new_job() for _ in range(7)])
    sizes = [len(claim(backend, limit=3)) for _ in range(4)]
    assert sizes == [3, 3, 1, 0]


def test_claims_from_several_queues_and_only_those(backend):
    a = insert_one(backend, queue="a")
    b = insert_one(backend, queue="b")
    c = insert_one(backend, queue="c")
    jobs = claim(backend, ("a", "b"), limit=10)
    assert {j.id for j in jobs} == {a.id, b.id}
    assert get(backend, c.id).state is JobState.QUEUED
    assert claim(backend, ("a", "b")) == []


def test_limit_applies_across_queues(backend):
    insert(
        backend, *[new_job(queue="a") for _ in range(3)], *[new_job(queue="b") for _ in range(3)]
    )
    first = claim(backend, ("a", "b"), limit=4)
    assert len(first) == 4
    rest = claim(backend, ("a", "b"), limit=4)
    assert len(rest) == 2
    assert len({j.id for j in first + rest}) == 6


def test_paused_queue_is_skipped_until_resumed(backend):
    a = insert_one(backend, queue="a")
    b = insert_one(backend, queue="b")
    backend.queue_pause("a")

    assert [j.id for j in claim(backend, ("a", "b"))] == [b.id]
    assert claim(backend, ("a", "b")) == []
    assert get(backend, a.id).state is JobState.QUEUED

    backend.queue_resume("a")
    assert [j.id for j in claim(backend, ("a", "b"))] == [a.id]


def test_pausing_a_queue_before_it_has_jobs_holds(backend):
    backend.queue_pause("later")
    job = insert_one(backend, queue="later")
    assert claim(backend, ("later",)) == []
    backend.queue_resume("later")
    assert [j.id for j in claim(backend, ("later",))] == [job.id]


def test_claim_marks_the_job_active_and_leased(backend):
    now = time.time()
    inserted = insert_one(backend, now=now - 5)

    (job,) = claim(backend, worker_id="worker-7", lease=42.0, now=now)

    for record in (job, get(backend, inserted.id)):
        assert record.id == inserted.id
        assert record.state is JobState.ACTIVE
        assert record.attempt == 1
        assert record.worker_id == "worker-7"
        assert record.started_at == pytest.approx(now, abs=1e-6)
        assert record.lease_expires_at == pytest.approx(now + 42.0, abs=1e-6)
        assert record.finished_at is None
        assert record.data == inserted.data
        assert record.enqueued_at == inserted.enqueued_at


def test_each_claim_counts_an_attempt(backend):
    inserted = insert_one(backend, max_attempts=5)
    for attempt in (1, 2, 3):
        job = claim_one(backend)
        assert job.attempt == attempt
        backend.job_complete_many([outcome(job, "retry", run_at=None)])
    assert get(backend, inserted.id).attempt == 3


def test_a_claimed_job_is_not_claimed_again(backend):
    jobs = insert(backend, new_job(), new_job())
    first = claim(backend, worker_id="w1")
    assert {j.id for j in first} == {j.id for j in jobs}
    assert claim(backend, worker_id="w2") == []
    assert claim(backend, worker_id="w1") == []
    assert all(get(backend, j.id).worker_id == "w1" for j in jobs)


def test_empty_store_claims_nothing(backend):
    assert claim(backend, ("default", "other")) == []


def test_concurrent_claims_from_two_instances_never_share_a_job(backend):
    total = 500
    ids = {r.id for r in backend.job_insert_many([new_job() for _ in range(total)])}
    other = open_backend(backend.url)
    other.open()
    try:
        stores = [backend, other, backend, other]
        taken: list[list[str]] = [[] for _ in stores]
        errors: list[BaseException] = []
        start = threading.Barrier(len(stores))

        def drain(i: int) -> None:
            try:
                start.wait()
                while jobs := claim(stores[i], limit=10, worker_id=f"w{i}"):
                    taken[i].extend(j.id for j in jobs)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []

        every = [job_id for part in taken for job_id in part]
        assert len(every) == len(set(every)), "a job was claimed twice"
        assert set(every) == ids
        for i, part in enumerate(taken):
            for job_id in part[:5]:
                assert get(backend, job_id).worker_id == f"w{i}"
    finally:
        other.close()
