"""Enqueue from async code inside the caller's transaction (psycopg `AsyncConnection`).

The jobs exist if and only if the caller's transaction commits, and idle workers are woken at
that commit. The wrong kind of connection is a TypeError that names the call to use; stores
that cannot join a transaction (SQLite, Redis) refuse with a StoreError.
Each test runs its coroutine with `asyncio.run`, as the rest of the suite does.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import FAST, POSTGRES_URL, require_store
from conveyor import Conveyor, StoreError

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 -- after the importorskip above


@pytest.fixture
def pg_app() -> Iterator[Conveyor]:
    """An app with an `echo(n)` task on its own schema, dropped afterwards."""
    require_store("postgres")
    schema = f"t_async_{uuid.uuid4().hex}"
    app = Conveyor(f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}")

    @app.task
    def echo(n: int) -> int:
        return n

    try:
        yield app
    finally:
        app.close()
        with psycopg.connect(POSTGRES_URL, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def _enqueue_three_ways(app: Conveyor, conn: Any) -> list[str]:
    """By task options, by name, and a batch: every async way to pass a connection."""
    echo = app.tasks["echo"]
    first = await echo.options(connection=conn).enqueue_async(n=1)
    second = await app.enqueue_async("echo", {"n": 2}, connection=conn)
    rest = await app.enqueue_many_async(
        [echo.prepare(n=3), app.prepare("echo", {"n": 4})], connection=conn
    )
    return [first.id, second.id, *(job.id for job in rest)]


def test_jobs_enqueued_in_a_committed_async_transaction_exist_and_wake_workers(pg_app):
    app = pg_app
    app.backend.jobs_wait(["default"], 0)  # LISTEN before the commit
    woken: list[float] = []
    waiter = threading.Thread(
        target=lambda: app.backend.jobs_wait(["default"], 20) and woken.append(time.monotonic())
    )

    async def main() -> list[str]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            async with conn.transaction():
                ids = await _enqueue_three_ways(app, conn)
                # Not visible to anyone else before the commit.
                assert [app.backend.job_get(job_id) for job_id in ids] == [None] * 4
                waiter.start()
                await asyncio.sleep(0.3)
                assert not woken, "a worker was woken before the commit"
                committed_at = time.monotonic()
            return [*ids, str(committed_at)]

    *ids, committed = asyncio.run(main())
    waiter.join(10)
    assert woken and woken[0] - float(committed) < 5, "the commit did not wake the worker"
    jobs = [app.backend.job_get(job_id) for job_id in ids]
    assert all(job is not None for job in jobs)
    assert [job.data["n"] for job in jobs if job is not None] == [1, 2, 3, 4]


def test_jobs_enqueued_in_a_rolled_back_async_transaction_do_not_exist(pg_app):
    app = pg_app

    class Abort(Exception):
        pass

    async def main() -> list[str]:
        ids: list[str] = []
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            with pytest.raises(Abort):
                async with conn.transaction():
                    ids = await _enqueue_three_ways(app, conn)
                    raise Abort
            # The connection is usable again, and the rollback took the jobs with it.
            await conn.execute("SELECT 1")
        return ids

    ids = asyncio.run(main())
    assert len(ids) == 4
    assert [app.backend.job_get(job_id) for job_id in ids] == [None] * 4
    assert sum(sum(stats.counts.values()) for stats in app.queue_stats()) == 0


def test_the_wrong_kind_of_connection_is_a_type_error_naming_the_right_call(pg_app):
    app = pg_app
    with psycopg.connect(POSTGRES_URL) as sync_conn:
        with pytest.raises(TypeError, match=r"Connection.*enqueue_many\("):
            asyncio.run(
                app.enqueue_many_async([app.prepare("echo", {"n": 1})], connection=sync_conn)
            )
        with pytest.raises(TypeError, match=r"Connection.*enqueue\)"):
            asyncio.run(app.enqueue_async("echo", {"n": 1}, connection=sync_conn))

    async def async_to_sync_path() -> None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            with pytest.raises(TypeError, match=r"AsyncConnection.*enqueue_many_async"):
                app.enqueue("echo", {"n": 1}, connection=conn)
            with pytest.raises(TypeError, match="not str"):
                await app.backend.job_insert_many_async([app.prepare("echo", {"n": 1})], "conn")

    asyncio.run(async_to_sync_path())
    assert sum(sum(stats.counts.values()) for stats in app.queue_stats()) == 0


def test_async_enqueue_without_a_connection_commits_on_its_own(pg_app):
    job = asyncio.run(pg_app.tasks["echo"].enqueue_async(n=7))
    stored = pg_app.backend.job_get(job.id)
    assert stored is not None and stored.data == {"n": 7}


def test_stores_without_transactions_refuse_an_async_connection(store_url):
    if store_url.startswith("postgres"):
        pytest.skip("PostgreSQL joins the caller's transaction")
    app = Conveyor(store_url, settings=FAST)
    try:
        job = app.prepare("echo", {"n": 1})
        with pytest.raises(StoreError, match="cannot enqueue inside your transaction"):
            asyncio.run(app.enqueue_many_async([job], connection=object()))
        with pytest.raises(StoreError, match="cannot enqueue inside your transaction"):
            asyncio.run(app.backend.job_insert_many_async([job], object()))
        assert app.backend.job_get(job.id) is None
    finally:
        app.close()
