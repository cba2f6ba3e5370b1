"""What only the Redis store does: its key layout (one hash tag per queue, for Redis
Cluster), key prefixes that keep stores apart on one server, its layout version, and its
errors. Behaviour shared with the other stores is in the conformance suite.

Every test gets its own key prefix (keys deleted afterwards) on the server at
`CONVEYOR_TEST_REDIS_URL`. If Redis cannot be reached the tests are skipped, except under
`CI=true`, where they fail; `CONVEYOR_TEST_STORES` without redis skips them.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest

from conftest import REDIS_URL, delete_redis_keys, require_store
from conveyor import Conveyor, JobState, StoreError
from conveyor.backends import open_backend
from conveyor.backends.base import PruneParams, WorkerInfo
from conveyor.backends.redis.backend import SCHEMA_VERSION
from conveyor.backends.redis.held import HeldJobs

from .factory import claim, claim_one, get, heartbeat, insert, insert_one, new_job, outcome

redis = pytest.importorskip("redis")


@pytest.fixture
def prefix() -> Iterator[str]:
    require_store("redis")
    name = f"t_{uuid.uuid4().hex}"
    yield name
    delete_redis_keys(name)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield conn
    conn.close()


def url_for(prefix: str) -> str:
    return f"{REDIS_URL}?prefix={prefix}"


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


def test_every_key_carries_its_queues_hash_tag_or_the_stores(prefix, client):
    """Each script touches one cluster slot: a queue's keys share `{prefix:queue}`."""
    store = open_backend(url_for(prefix))
    store.open()
    try:
        now = time.time()
        for queue in ("mail", "reports"):
            done = insert_one(store, queue=queue, key=f"k-{queue}", now=now)
            insert_one(store, queue=queue, delay=60, now=now)
            claimed = claim_one(store, queues=(done.queue,), now=now)
            store.job_complete_many([outcome(claimed, "completed")])
            insert_one(store, queue=queue, key=f"held-{queue}", now=now)
        store.queue_pause("idle")
        assert store.leader_elect("maintenance", "w1", 30.0)
    finally:
        store.close()

    keys = sorted(client.scan_iter(match=f"*{prefix}*"))
    tags = {hash_tag(key) for key in keys}
    assert tags == {prefix, f"{prefix}:mail", f"{prefix}:reports", f"{prefix}:idle"}
    for key in keys:
        assert key.startswith("{"), key  # the tag opens every key: prefix text cannot shift it
    job_keys = [key for key in keys if ":job:" in key]
    assert len(job_keys) == 6
    assert all(hash_tag(key) != prefix for key in job_keys)


def test_two_prefixes_on_one_server_do_not_see_each_other(prefix):
    other = f"{prefix}_other"
    first = Conveyor(url_for(prefix))
    second = Conveyor(url_for(other))
    try:
        job = first.enqueue("some.task", {"n": 1})
        assert second.get_job(job.id) is None
        assert second.queue_stats() == []
        assert [s.counts["queued"] for s in first.queue_stats()] == [1]
    finally:
        first.close()
        second.close()
        delete_redis_keys(other)


def test_a_layout_newer_than_the_code_is_refused(prefix, client):
    client.hset(f"{{{prefix}}}:meta", "schema_version", SCHEMA_VERSION + 1)
    store = open_backend(url_for(prefix))
    with pytest.raises(StoreError, match="newer than this Conveyor understands"):
        store.open()
    store.close()


def test_migrate_false_refuses_a_store_that_was_never_set_up(prefix, client):
    store = open_backend(url_for(prefix))
    with pytest.raises(StoreError, match="conveyor migrate"):
        store.open(migrate=False)
    store.close()
    assert list(client.scan_iter(match=f"*{prefix}*")) == []  # refused, nothing written

    store.open(migrate=True)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_an_unreachable_server_fails_fast_naming_host_and_port():
    url = "redis://127.0.0.1:6399/0"
    store = open_backend(url)
    started = time.monotonic()
    with pytest.raises(StoreError, match=re.escape("127.0.0.1:6399")):
        store.open()
    assert time.monotonic() - started < 10
    store.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://", "bad Redis URL"),
        ("redis://127.0.0.1:6379/0?prefix=", "bad prefix"),
        ("redis://127.0.0.1:6379/0?prefix=a{b}", "bad prefix"),
        ("redis://127.0.0.1:6379/0?prefix=a:b", "bad prefix"),
    ],
)
def test_a_bad_url_is_refused_with_what_to_write(url, problem):
    with pytest.raises(StoreError, match=problem):
        open_backend(url)


def test_a_job_id_reused_in_another_queue_returns_the_existing_job(prefix):
    store = open_backend(url_for(prefix))
    store.open()
    try:
        first = new_job(queue="mail", job_id="order-7")  # an id the caller chose
        [stored] = insert(store, first)
        [answer] = insert(store, new_job(queue="reports", job_id="order-7"))
        assert answer.queue == "mail" and answer.id == first.id
        assert get(store, first.id).queue == "mail"
        assert [s.name for s in store.queue_stats()] == ["mail", "reports"]
        assert store.queue_stats(name="reports")[0].counts["queued"] == 0
        assert stored.state is JobState.QUEUED
    finally:
        store.close()


def test_pruned_jobs_leave_no_keys_behind(prefix, client):
    store = open_backend(url_for(prefix))
    store.open()
    try:
        now = time.time()
        for _ in range(3):
            insert_one(store, now=now - 100)
            claimed = claim_one(store, now=now - 100)
            store.job_complete_many([outcome(claimed, "completed", finished_at=now - 100)])
        assert store.job_prune(PruneParams(keep_completed=10, keep_failed=10, now=now)) == 3
    finally:
        store.close()
    leftovers = {
        key: client.type(key)
        for key in client.scan_iter(match=f"*{prefix}*")
        if not key.endswith((":meta", ":queues"))
    }
    assert leftovers == {}


def test_the_worker_registry_is_two_store_keys_that_forget_and_prune_empty(prefix, client):
    store = open_backend(url_for(prefix))
    store.open()
    try:
        for n in range(3):
            entry = WorkerInfo(f"w{n}", "worker", "h", n, ("mail",), 1, 10.0, 10.0 + n)
            store.worker_beat(entry, ttl=5.0)
        registry = sorted(k for k in client.scan_iter(match=f"*{prefix}*") if "worker" in k)
        assert registry == [f"{{{prefix}}}:workers", f"{{{prefix}}}:workers_expiry"]
        assert {hash_tag(key) for key in registry} == {prefix}  # one slot: MULTI works
        store.worker_forget("w2")
        assert store.worker_prune(store.store_time() + 100.0) == 2
    finally:
        store.close()
    assert [k for k in client.scan_iter(match=f"*{prefix}*") if "worker" in k] == []


def test_the_claimed_job_map_is_capped_and_dropped_jobs_are_found_in_the_store(prefix, caplog):
    # The store remembers each claimed job's queue (to find its keys); an outcome never
    # written must not grow that map forever. Past the cap the oldest entries go, with a
    # warning, and a heartbeat for a forgotten job still finds it through the store's index.
    backend = open_backend(f"{REDIS_URL}?prefix={prefix}")
    backend.open()
    try:
        backend._held = HeldJobs(cap=3)  # type: ignore[attr-defined]
        jobs = insert(backend, *(new_job(queue=f"q{i % 2}") for i in range(5)))
        claimed = claim(backend, queues=("q0", "q1"), limit=5)
        assert len(claimed) == 5
        assert len(backend._held) == 3  # type: ignore[attr-defined]
        assert "dropped the 2 oldest" in caplog.text
        held = heartbeat(backend, [job.id for job in jobs])
        assert held == {job.id: False for job in jobs}
    finally:
        backend.close()
