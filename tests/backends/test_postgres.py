"""What only the PostgreSQL store does: enqueue inside the caller's transaction, migrations that
many processes may run at once, the hot `jobs` table that finished jobs leave, and its errors.

Every test gets its own schema (created by the store, dropped afterwards) in the database at
`CONVEYOR_TEST_POSTGRES_URL`. If PostgreSQL cannot be reached the tests are skipped, except
under `CI=true`, where they fail; `CONVEYOR_TEST_STORES` without postgres skips them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import POSTGRES_URL, require_store
from conveyor import Conveyor, JobState, Settings, StoreError
from conveyor.backends import open_backend
from conveyor.backends.postgres.backend import SCHEMA_VERSION
from conveyor.worker.runner import Worker
from engine.helpers import WorkerThread, running_worker, wait_until

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 -- after the importorskip above

TABLES = ["conveyor_leaders", "jobs", "jobs_done", "meta", "queues", "workers"]
"""Every table of a migrated schema."""
NEWER = SCHEMA_VERSION + 1
"""A schema version this code does not know."""
FAST = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=2.0)


@dataclass
class Schema:
    """One test's own schema: its store URL and plain connections to the same database."""

    name: str

    @property
    def url(self) -> str:
        return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={self.name}"

    @property
    def tagged_url(self) -> str:
        """The store URL with the connections marked, so that `cut()` can end just them."""
        return f"{self.url}&application_name={self.name}"

    def cut(self) -> int:
        """End every connection of stores opened on `tagged_url`, as a server restart does."""
        with self.connect(autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (self.name,),
            ).fetchall()
        return len(rows)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(POSTGRES_URL, connect_timeout=5, **kwargs)

    def count(self, table: str) -> int:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(self.name), sql.Identifier(table)
        )
        with self.connect() as conn:
            return conn.execute(query).fetchone()[0]

    def tables(self) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.name,),
            ).fetchall()
        return sorted(name for (name,) in rows)

    def exists(self) -> bool:
        with self.connect() as conn:
            found = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (self.name,)
            ).fetchone()
        return found is not None

    def drop(self) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name))
            )


@pytest.fixture
def pg() -> Iterator[Schema]:
    require_store("postgres")
    schema = Schema(f"t_pg_{uuid.uuid4().hex}")
    try:
        yield schema
    finally:
        schema.drop()


@pytest.fixture
def make_pg_app(pg: Schema) -> Iterator[Callable[..., Conveyor]]:
    """Conveyor apps on the test's schema, each with an `echo(n)` task; closed at the end."""
    apps: list[Conveyor] = []

    def factory(on_run: Callable[[int], None] | None = None, **kwargs: Any) -> Conveyor:
        url = kwargs.pop("url", pg.url)
        app = Conveyor(url, settings=kwargs.pop("settings", FAST), **kwargs)
        apps.append(app)

        @app.task
        def echo(n: int) -> int:
            if on_run is not None:
                on_run(n)
            return n

        return app

    yield factory
    for app in apps:
        app.close()


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


# migrations ---------------------------------------------------------------------------------
def test_many_processes_migrating_a_new_schema_at_once_all_succeed(pg):
    opened: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    lock = threading.Lock()

    def open_one() -> None:
        store = open_backend(pg.url)
        try:
            start.wait(10)
            store.open()
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            opened.append(store)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert not any(t.is_alive() for t in threads), "an open() hung"
        assert errors == []
        assert len(opened) == 8
        assert {store.schema_version() for store in opened} == {SCHEMA_VERSION}
    finally:
        for store in opened:
            store.close()
    assert pg.tables() == TABLES
    with pg.connect() as conn:
        meta = conn.execute(
            sql.SQL("SELECT key, value FROM {}.meta").format(sql.Identifier(pg.name))
        ).fetchall()
    assert meta == [("schema_version", str(SCHEMA_VERSION))]


def test_reopening_a_migrated_schema_changes_nothing(pg, make_pg_app):
    app = make_pg_app()
    job = app.enqueue("echo", {"n": 3})
    app.close()
    for migrate in (True, False):
        again = make_pg_app(migrate=migrate)
        assert again.backend.schema_version() == SCHEMA_VERSION
        assert again.get_job(job.id).state == JobState.QUEUED
        again.close()
    assert pg.tables() == TABLES
    assert pg.count("jobs") == 1
    assert pg.count("meta") == 1


UNDO_3 = [
    "DROP TABLE {schema}.conveyor_leaders",
    "ALTER TABLE {schema}.jobs DROP COLUMN snoozes",
    "ALTER TABLE {schema}.jobs_done DROP COLUMN snoozes",
]
OLDER_SCHEMAS = {1: [*UNDO_3, "DROP TABLE {schema}.workers"], 2: UNDO_3}
"""How to turn today's schema back into each older version (undo what later migrations
added)."""


@pytest.mark.parametrize("version", sorted(OLDER_SCHEMAS))
def test_an_older_schema_is_upgraded_only_when_migrating(pg, make_pg_app, version):
    app = make_pg_app()
    job = app.enqueue("echo", {"n": 3})
    app.close()
    with pg.connect() as conn:  # as that version left it
        for statement in OLDER_SCHEMAS[version]:
            conn.execute(sql.SQL(statement).format(schema=sql.Identifier(pg.name)))
        conn.execute(
            sql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'schema_version'").format(
                sql.Identifier(pg.name)
            ),
            (str(version),),
        )
    older_tables = pg.tables()
    refused = open_backend(pg.url)
    with pytest.raises(StoreError, match="conveyor migrate"):
        refused.open(migrate=False)
    refused.close()
    assert pg.tables() == older_tables

    upgraded = make_pg_app()
    assert upgraded.backend.schema_version() == SCHEMA_VERSION == 3
    assert pg.tables() == TABLES
    assert upgraded.get_job(job.id).state == JobState.QUEUED
    assert upgraded.backend.job_get(job.id).snoozes == 0
    assert upgraded.backend.leader_elect("maintenance", "w1", 5.0) is True
    upgraded.close()
    assert make_pg_app(migrate=False).backend.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize("migrate", [True, False])
def test_a_schema_newer_than_the_code_is_refused(pg, make_pg_app, migrate):
    app = make_pg_app()
    job = app.enqueue("echo", {"n": 3})
    app.close()
    with pg.connect() as conn:
        conn.execute(
            sql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'schema_version'").format(
                sql.Identifier(pg.name)
            ),
            (str(NEWER),),
        )
    store = open_backend(pg.url)
    with pytest.raises(StoreError, match="upgrade") as info:
        store.open(migrate=migrate)
    store.close()
    assert f"version {NEWER}," in str(info.value)
    with pg.connect() as conn:  # left as it was
        version = conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'schema_version'").format(
                sql.Identifier(pg.name)
            )
        ).fetchone()
    assert version == (str(NEWER),)
    assert pg.count("jobs") == 1, f"job {job.id} is gone"


def test_migrate_false_refuses_an_unmigrated_schema_and_creates_nothing(pg, make_pg_app):
    app = make_pg_app(migrate=False)
    with pytest.raises(StoreError, match="conveyor migrate"):
        app.enqueue("echo", {"n": 1})
    assert not pg.exists(), "migrate=False created the schema"
    # After the deploy step has migrated, the same settings work.
    make_pg_app().backend  # noqa: B018
    again = make_pg_app(migrate=False)
    assert again.enqueue("echo", {"n": 1}).state == JobState.QUEUED


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_URL"}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_migrate_command_creates_the_schema_and_prints_its_version(pg):
    done = _cli("--url", pg.url, "migrate")
    assert done.returncode == 0, done.stderr
    assert f"schema version {SCHEMA_VERSION}" in done.stdout
    assert pg.tables() == TABLES

    again = _cli("--url", pg.url, "migrate", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["schema_version"] == SCHEMA_VERSION
    assert pg.name in report["url"]

    app = Conveyor(pg.url, migrate=False)
    try:
        assert app.backend.schema_version() == SCHEMA_VERSION
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
def test_an_unreachable_server_fails_within_the_connect_timeout_hiding_the_password():
    store = open_backend("postgresql://postgres:s3cret-pw@127.0.0.1:5999/test", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreError) as refused:
        store.open()
    assert time.monotonic() - started < 0.5 + 2.0
    store.close()
    message = str(refused.value)
    assert "127.0.0.1:5999" in message
    assert "0.5" in message, f"the timeout is not named: {message}"
    assert "s3cret-pw" not in message


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
