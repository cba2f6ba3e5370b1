"""Store robustness: a lost lease shows in the heartbeat answer, and the wake channel neither
breaks when another instance tidies up nor fails an enqueue when it cannot be used."""

from __future__ import annotations

import os
import time

import pytest

from conveyor.backends import open_backend
from conveyor.backends.sqlite import wake
from conveyor.backends.sqlite.backend import path_from_url
from conveyor.model.states import JobState

from .factory import claim_one, get, heartbeat, insert_one, new_job, require_capability

WAIT = 2.0
"""Upper bound of a wait for a wake-up that works: it arrives long before."""


def test_heartbeat_after_rescue_and_reclaim_tells_only_the_new_holder(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    first = claim_one(backend, worker_id="w1", lease=1, now=now)
    assert backend.job_rescue_expired(now=now + 10).requeued == 1
    second = claim_one(backend, worker_id="w2", now=now + 10)
    assert (first.attempt, second.attempt) == (1, 2)

    assert heartbeat(backend, [job.id], worker_id="w1", now=now + 11) == {}  # w1 lost it
    assert heartbeat(backend, [job.id], worker_id="w2", now=now + 11) == {job.id: False}

    record = get(backend, job.id)
    assert record.worker_id == "w2" and record.state is JobState.ACTIVE
    assert record.lease_expires_at == pytest.approx(now + 41, abs=1e-6)  # w1 did not renew


# wake channel (SQLite: Unix datagram sockets in a directory per user and file) -------------
class _OsWithHook:
    """`os` for the wake module, running `hook` once right after its first `makedirs`."""

    def __init__(self, hook) -> None:
        self._hook = hook

    def makedirs(self, *args, **kwargs) -> None:
        os.makedirs(*args, **kwargs)
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()

    def __getattr__(self, name):
        return getattr(os, name)


def test_wait_works_when_another_instance_closes_while_it_starts_listening(backend, monkeypatch):
    """Another instance closing removes the wake directory once empty; one starting to
    listen at that moment must still bind (and be woken by inserts)."""
    require_capability(backend, "local_file")
    backend.jobs_wait(["default"], 0.0)  # listening: its socket is in the directory
    starting = open_backend(backend.url)
    starting.open()
    producer = open_backend(backend.url)
    producer.open()
    try:
        # `backend` closes between `starting`'s makedirs and its bind: the directory is gone
        monkeypatch.setattr(wake, "os", _OsWithHook(backend.close))
        assert starting.jobs_wait(["default"], 0.0) is False
        monkeypatch.undo()
        assert starting.jobs_wait(["default"], 0.05) is False  # nothing pending

        producer.job_insert_many([new_job()])
        assert starting.jobs_wait(["default"], WAIT) is True
    finally:
        starting.close()
        producer.close()


@pytest.fixture
def blocked_wake_dir(backend):
    """The store's wake directory path taken by a plain file: it cannot be listed or used."""
    require_capability(backend, "local_file")
    path = wake.wake_dir_for(path_from_url(backend.url))
    assert not os.path.exists(path)
    with open(path, "w") as f:
        f.write("not a directory")
    yield path
    os.unlink(path)


def test_insert_succeeds_when_the_wake_directory_is_unusable(backend, blocked_wake_dir):
    (record,) = backend.job_insert_many([new_job()])  # the row commits before any wake-up
    assert get(backend, record.id).state is JobState.QUEUED


def test_wait_falls_back_to_its_timeout_when_the_wake_directory_is_unusable(
    backend, blocked_wake_dir
):
    started = time.monotonic()
    assert backend.jobs_wait(["default"], 0.1) is False
    assert time.monotonic() - started >= 0.09  # slept as a poll would, no busy return
