"""What only the PostgreSQL store does: enqueue inside the caller's transaction, the hot `jobs`
table that finished jobs leave, and its connection errors (migrations:
test_postgres_migrations.py).

Every test gets its own schema (the `pg` fixture of tests/backends/conftest.py: created by the
store, dropped afterwards) in the database at `CONVEYOR_TEST_POSTGRES_URL`. If PostgreSQL
cannot be reached the tests are skipped, except under `CI=true`, where they fail;
`CONVEYOR_TEST_STORES` without postgres skips them.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from conftest import FAST
from conveyor import Conveyor, JobState, StoreError
from conveyor.backends import open_backend
from conveyor.worker.runner import Worker
from engine.helpers import WorkerThread, running_worker, wait_until

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 -- after the importorskip above


def total_jobs(app: Conveyor) -> int:
    return sum(sum(stats.counts.values()) for stats in app.queue_stats())


def completed_jobs(app: Conveyor) -> int:
    return sum(stats.counts["completed"] for stats in app.queue_stats())


# The three ways to enqueue inside the caller's transaction; each returns the job ids.
def _by_name(app: Conveyor, conn: Any, n: int) -> list[str]:
    return [app.enqueue("echo", {"n": n}, connection=conn).id]


def _by_task_options(app: Conveyor, conn: Any, n: int) -> list[str]:
    return [app.tasks["echo"].options(connection=conn).enqueue(n=n).id]


def _many(app: Conveyor, conn: Any, n: int) -> list[str]:
    jobs = app.enqueue_many(
        [app.tasks["echo"].prepare(n=n), app.prepare("echo", {"n": n + 1})], connection=conn
    )
    return [job.id for job in jobs]


ENQUEUE_WAYS = pytest.mark.parametrize(
    "enqueue", [_by_name, _by_task_options, _many], ids=["app.enqueue", "options", "many"]
)


class Rollback(Exception):
    pass


# transactional enqueue ----------------------------------------------------------------------
@ENQUEUE_WAYS
def test_jobs_enqueued_in_a_rolled_back_transaction_do_not_exist(pg, make_pg_app, enqueue):
    app = make_pg_app()
    app.backend  # noqa: B018 -- migrate now: the user's own table lives in the schema too
    orders = sql.Identifier(pg.name, "orders")
    ids: list[str] = []
    with pg.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(orders))
        with pytest.raises(Rollback), conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(orders))
            ids = enqueue(app, conn, 7)
            raise Rollback
    assert pg.count("orders") == 0

    assert ids, "the enqueue inside the transaction returned no job"
    for job_id in ids:
        assert app.get_job(job_id) is None
    assert total_jobs(app) == 0
    assert pg.count("jobs") == 0
    assert pg.count("jobs_done") == 0


@ENQUEUE_WAYS
def test_jobs_enqueued_in_a_committed_transaction_exist_and_run(pg, make_pg_app, enqueue):
    app = make_pg_app()
    with pg.connect(autocommit=True) as conn, conn.transaction():
        ids = enqueue(app, conn, 7)
    for job_id in ids:
        job = app.get_job(job_id)
        assert job is not None
        assert job.state == JobState.QUEUED
    with running_worker(app):
        results = [app.get_job(job_id).result(timeout=5) for job_id in ids]
    assert results == [7, 8][: len(ids)]
    assert completed_jobs(app) == len(ids)


@ENQUEUE_WAYS
def test_a_job_in_an_open_transaction_is_invisible_and_not_run_until_commit(
    pg, make_pg_app, enqueue
):
    ran = threading.Event()
    app = make_pg_app(on_run=lambda n: ran.set())
    with running_worker(app):
        with pg.connect(autocommit=True) as conn, conn.transaction():
            ids = enqueue(app, conn, 1)
            # Inside the transaction the job is there...
            row = conn.execute(
                sql.SQL("SELECT state FROM {}.jobs WHERE id = %s").format(sql.Identifier(pg.name)),
                (ids[0],),
            ).fetchone()
            assert row == ("queued",)
            # ...but no other connection sees it, and the idle worker does not run it.
            for job_id in ids:
                assert app.get_job(job_id) is None
            assert total_jobs(app) == 0
            with pg.connect() as other:
                count = sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(pg.name))
                assert other.execute(count).fetchone()[0] == 0
            assert not ran.wait(4 * FAST.poll_interval), "a worker ran an uncommitted job"
        # Committed: the worker is woken and runs it.
        for job_id in ids:
            assert app.get_job(job_id).result(timeout=5) in (1, 2)
    assert ran.is_set()


def test_the_caller_transaction_must_be_a_psycopg_connection(make_pg_app):
    app = make_pg_app()
    with pytest.raises(TypeError, match="psycopg"):
        app.enqueue("echo", {"n": 1}, connection=object())
    assert total_jobs(app) == 0


def test_sqlite_refuses_an_enqueue_inside_a_caller_transaction(tmp_path):
    app = Conveyor(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        assert app.backend.capabilities.transactional_enqueue is False
        with pytest.raises(StoreError, match="transaction"):
            app.enqueue("anything", {}, connection=object())
        assert app.queue_stats() == []
    finally:
        app.close()


# jobs and the hot table ---------------------------------------------------------------------
def test_a_custom_job_id_of_a_finished_job_returns_that_job_and_adds_nothing(pg, make_pg_app):
    app = make_pg_app()
    first = app.enqueue("echo", {"n": 1}, job_id="order-42")
    with running_worker(app):
        assert first.result(timeout=5) == 1
    assert (pg.count("jobs"), pg.count("jobs_done")) == (0, 1)

    again = app.enqueue("echo", {"n": 2}, job_id="order-42")
    assert again.id == "order-42"
    assert again.state == JobState.COMPLETED
    assert again.record.data == {"n": 1}
    assert again.record.result == 1
    [via_many] = app.enqueue_many([app.prepare("echo", {"n": 3}, job_id="order-42")])
    assert via_many.state == JobState.COMPLETED
    assert (pg.count("jobs"), pg.count("jobs_done")) == (0, 1)
    assert total_jobs(app) == 1


def test_finished_jobs_leave_the_hot_table(pg, make_pg_app):
    app = make_pg_app()
    app.enqueue_many([app.prepare("echo", {"n": i}) for i in range(500)])
    assert (pg.count("jobs"), pg.count("jobs_done")) == (500, 0)
    with running_worker(app, concurrency=50):
        wait_until(lambda: completed_jobs(app) == 500, 30, 0.05, "500 jobs completed")
    assert pg.count("jobs") == 0
    assert pg.count("jobs_done") == 500


# connection errors --------------------------------------------------------------------------
def test_an_unreachable_server_fails_fast_naming_host_and_port():
    url = "postgresql://postgres@127.0.0.1:5999/test"
    store = open_backend(url)
    started = time.monotonic()
    with pytest.raises(StoreError, match=re.escape("127.0.0.1:5999")):
        store.open()
    assert time.monotonic() - started < 10
    store.close()

    app = Conveyor(url)
    started = time.monotonic()
    with pytest.raises(StoreError, match=re.escape("127.0.0.1:5999")):
        app.enqueue("anything", {})
    assert time.monotonic() - started < 10
    app.close()


@pytest.mark.parametrize(
    "queue",
    ["existing", "brand-new"],
)
def test_an_open_transaction_does_not_hold_up_other_enqueues(pg, make_pg_app, queue):
    app = make_pg_app()
    app.enqueue("echo", {"n": 0}, queue="existing")
    other = make_pg_app()
    finished = threading.Event()

    def enqueue_elsewhere() -> None:
        other.enqueue("echo", {"n": 2}, queue=queue)
        finished.set()

    with pg.connect(autocommit=True) as conn:
        with conn.transaction():
            app.enqueue("echo", {"n": 1}, queue=queue, connection=conn)
            thread = threading.Thread(target=enqueue_elsewhere, daemon=True)
            thread.start()
            done_while_open = finished.wait(1.0)
        thread.join(10)
    assert done_while_open, f"an enqueue to queue {queue!r} waited for another transaction"


# connections cut by the server (a restart, a failover, an idle timeout) ---------------------
def test_a_running_worker_whose_connections_are_cut_carries_on(pg, make_pg_app):
    app = make_pg_app(url=pg.tagged_url)
    producer = make_pg_app()
    with running_worker(app) as worker:
        first = producer.enqueue("echo", {"n": 1})
        assert first.result(timeout=5) == 1
        assert pg.cut() >= 2  # the pooled connections and the LISTEN connection
        job = producer.enqueue("echo", {"n": 2})
        assert job.result(timeout=10) == 2
        assert worker.jobs_done == 2


def test_a_worker_whose_connections_are_cut_as_it_starts_carries_on(pg, make_pg_app):
    app = make_pg_app(url=pg.tagged_url)
    producer = make_pg_app()
    app.backend  # noqa: B018 -- the CLI opens the store, then starts the worker
    assert pg.cut() >= 1
    runner = WorkerThread(Worker(app)).start()
    try:
        job = producer.enqueue("echo", {"n": 1})
        wait_until(
            lambda: not runner.alive or producer.get_job(job.id).state == JobState.COMPLETED,
            10,
            0.02,
            "the job completed or the worker stopped",
        )
        assert runner.alive, f"the worker stopped: {runner.error!r}"
    finally:
        runner.stop_and_join(10)


def test_an_enqueue_after_the_server_cut_idle_connections_succeeds(pg, make_pg_app):
    app = make_pg_app(url=pg.tagged_url)
    assert app.enqueue("echo", {"n": 1}).state == JobState.QUEUED
    assert pg.cut() >= 1
    assert app.enqueue("echo", {"n": 2}).state == JobState.QUEUED
    assert total_jobs(app) == 2
