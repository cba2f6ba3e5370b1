"""The store's clock decides: with `now` left out (as the engine leaves it), claims, heartbeats,
rescue, due times, outcomes and stats read the store's time, never the calling worker's.

A worker whose clock runs far off is simulated by shifting this process's `time.time`
(`skewed_worker_clock`); on a file store the store's clock is this host's, so there is no
skew to simulate and those tests check the store's clock alone.
"""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import RescueResult
from conveyor.model.states import JobState

from .factory import (
    STORE_TIME_PRECISION,
    claim,
    claim_one,
    get,
    heartbeat,
    insert_one,
    outcome,
    release,
    server_clock,
    skewed_worker_clock,
    store_window,
)

SKEWS = [3600.0, -3600.0]
"""A worker clock an hour ahead (it would rescue live jobs) and an hour behind."""


def test_store_time_is_the_servers_clock(backend):
    before = server_clock(backend)
    reading = backend.store_time()
    after = server_clock(backend)
    assert before - STORE_TIME_PRECISION <= reading <= after + STORE_TIME_PRECISION, (
        f"store_time() {reading} is not the server's clock [{before}, {after}]"
    )


@pytest.mark.parametrize("skew", SKEWS)
def test_a_claim_leases_from_the_stores_clock(backend, monkeypatch, skew):
    job = insert_one(backend)
    with skewed_worker_clock(backend, monkeypatch, skew):
        running, window = store_window(backend, lambda: claim_one(backend, lease=42.0))

    assert running.id == job.id
    for record in (running, get(backend, job.id)):
        assert window.holds(record.started_at)
        assert window.holds(record.lease_expires_at, offset=42.0)


@pytest.mark.parametrize("skew", SKEWS)
def test_a_heartbeat_extends_the_lease_from_the_stores_clock(backend, monkeypatch, skew):
    job = insert_one(backend, now=time.time() - 10)
    claim_one(backend, lease=10.0, now=backend.store_time() - 5)
    with skewed_worker_clock(backend, monkeypatch, skew):
        held, window = store_window(backend, lambda: heartbeat(backend, [job.id], lease=10.0))

    assert held == {job.id: False}
    assert window.holds(get(backend, job.id).lease_expires_at, offset=10.0)


@pytest.mark.parametrize("skew", SKEWS)
def test_rescue_never_takes_a_live_lease_and_takes_one_expired_by_the_stores_clock(
    backend, monkeypatch, skew
):
    live = insert_one(backend, queue="live")
    lost = insert_one(backend, queue="lost", now=time.time() - 200)
    claim_one(backend, queues=("live",), lease=30.0)
    claim_one(backend, queues=("lost",), lease=10.0, now=backend.store_time() - 100)

    with skewed_worker_clock(backend, monkeypatch, skew):
        result, window = store_window(backend, backend.job_rescue_expired)

    assert result == RescueResult(requeued=1, failed=0, cancelled=0)
    assert get(backend, live.id).state is JobState.ACTIVE
    rescued = get(backend, lost.id)
    assert rescued.state is JobState.QUEUED
    assert window.holds(rescued.errors[-1].at)
    assert backend.job_rescue_expired() == RescueResult(0, 0, 0)


def test_a_job_enqueued_with_a_due_time_in_the_past_is_due(backend):
    job = insert_one(backend, now=time.time() - 3600)
    assert claim_one(backend).id == job.id


@pytest.mark.parametrize("skew", SKEWS)
def test_a_job_due_later_is_due_by_the_stores_clock_only(backend, monkeypatch, skew):
    later = insert_one(backend, delay=1800)
    with skewed_worker_clock(backend, monkeypatch, skew):
        assert claim(backend) == []
        due_in, window = store_window(backend, lambda: backend.job_next_due_in(["default"]))
        (stats,) = backend.queue_stats(name="default")

    assert due_in is not None and window.holds(later.run_at - due_in)
    assert stats.counts.get("scheduled") == 1 and stats.counts.get("queued", 0) == 0


@pytest.mark.parametrize("skew", SKEWS)
def test_outcomes_without_a_finish_time_are_stamped_by_the_stores_clock(backend, monkeypatch, skew):
    done = insert_one(backend, queue="done")
    again = insert_one(backend, queue="again")
    a = claim_one(backend, queues=("done",))
    b = claim_one(backend, queues=("again",))

    with skewed_worker_clock(backend, monkeypatch, skew):
        _, window = store_window(
            backend,
            lambda: backend.job_complete_many(
                [outcome(a, "completed"), outcome(b, "retry", delay=60.0)]
            ),
        )

    assert window.holds(get(backend, done.id).finished_at)
    retried = get(backend, again.id)
    assert retried.state is JobState.SCHEDULED
    assert window.holds(retried.run_at, offset=60.0)


@pytest.mark.parametrize("skew", SKEWS)
def test_release_and_cancel_without_now_use_the_stores_clock(backend, monkeypatch, skew):
    back = insert_one(backend, queue="back")
    cancelled = insert_one(backend, queue="cancelled")
    claim_one(backend, queues=("back",))

    with skewed_worker_clock(backend, monkeypatch, skew):
        _, released = store_window(backend, lambda: release(backend, [back.id], queues=("back",)))
        _, cancelling = store_window(backend, lambda: backend.job_cancel(cancelled.id))

    record = get(backend, back.id)
    assert record.state is JobState.QUEUED and released.holds(record.run_at)
    assert cancelling.holds(get(backend, cancelled.id).finished_at)
