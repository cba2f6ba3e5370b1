"""The lease keeper renews a job's lease until its outcome is stored: an outcome the store
refuses for longer than a lease does not let another worker rerun a finished job."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import POSTGRES_URL
from conveyor import JobState, current_job
from conveyor.backends.sqlite.backend import path_from_url

from .helpers import running_worker, wait_until


def _refuse_completions(app) -> Callable[[bool], None]:
    """Make the store itself refuse to record completions while the switch is on (it starts
    on): a trigger in the database, as a store failing that one write would."""
    url = app.backend.url
    if url.startswith("sqlite"):
        path = path_from_url(url)

        def run(*statements: str) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                for statement in statements:
                    conn.execute(statement)
            finally:
                conn.close()

        run(
            "CREATE TABLE test_refuse (refuse INTEGER NOT NULL)",
            "INSERT INTO test_refuse VALUES (1)",
            """
            CREATE TRIGGER refuse_completions BEFORE UPDATE OF state ON conveyor_jobs
            WHEN NEW.state = 'completed' AND (SELECT refuse FROM test_refuse)
            BEGIN SELECT RAISE(ABORT, 'the store refuses completions'); END
            """,
        )
        return lambda on: run(f"UPDATE test_refuse SET refuse = {int(on)}")
    if url.startswith("postgres"):
        import psycopg

        schema = parse_qs(urlsplit(url).query)["schema"][0]

        def execute(*statements: str) -> None:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f"SET search_path TO {schema}")
                for statement in statements:
                    conn.execute(statement)

        execute(
            "CREATE TABLE test_refuse (refuse boolean NOT NULL)",
            "INSERT INTO test_refuse VALUES (true)",
            f"""
            CREATE FUNCTION test_refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF (SELECT refuse FROM {schema}.test_refuse) THEN
                    RAISE EXCEPTION 'the store refuses completions';
                END IF;
                RETURN NEW;
            END $$
            """,
            """
            CREATE TRIGGER refuse_completions BEFORE INSERT ON jobs_done FOR EACH ROW
            WHEN (NEW.state = 'completed') EXECUTE FUNCTION test_refuse_completion()
            """,
        )
        return lambda on: execute(f"UPDATE test_refuse SET refuse = {str(on).lower()}")
    pytest.skip("needs a store with triggers (SQLite or PostgreSQL) to refuse one write")


def test_an_outcome_refused_longer_than_a_lease_does_not_rerun_the_job(make_app):
    app, other = make_app(), make_app()  # FAST: lease 1 s, rescue every 0.2 s
    runs: list[int] = []
    lock = threading.Lock()
    for each in (app, other):

        @each.task(name="quick")
        def quick() -> str:
            with lock:
                runs.append(current_job().attempt)
            return "done"

    refusing = _refuse_completions(app)
    with running_worker(app), running_worker(other):  # one of them leads and rescues
        job = app.enqueue("quick")
        wait_until(lambda: runs, 5, what="the job ran")
        time.sleep(3.0)  # three leases: only renewals keep it from being rescued
        assert app.get_job(job.id).state == JobState.ACTIVE
        refusing(False)
        wait_until(lambda: app.get_job(job.id).state == JobState.COMPLETED, 8)
    record = app.get_job(job.id).record
    assert runs == [1]
    assert record.attempt == 1 and record.errors == ()
