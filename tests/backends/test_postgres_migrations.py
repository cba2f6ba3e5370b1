"""PostgreSQL schema migrations: many processes may run them at once, older schemas are
upgraded only when migrating, newer ones refused, and `conveyor migrate` reports the version.

Every test gets its own schema (the `pg` fixture, tests/backends/conftest.py); without a
reachable server they are skipped, except under `CI=true`, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from conveyor import Conveyor, JobState, StoreError
from conveyor.backends import open_backend
from conveyor.backends.postgres.backend import SCHEMA_VERSION

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 -- after the importorskip above

TABLES = ["conveyor_leaders", "jobs", "jobs_done", "meta", "queues", "workers"]
"""Every table of a migrated schema."""
NEWER = SCHEMA_VERSION + 1
"""A schema version this code does not know."""


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
