"""Stores kept in a local file: a foreign file is never touched, the schema is checked.

Gated on `capabilities.local_file`; the checks themselves are SQLite's (the only file store).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conveyor.backends import open_backend
from conveyor.backends.base import WorkerInfo
from conveyor.backends.sqlite.backend import SCHEMA_VERSION, path_from_url
from conveyor.model.errors import StoreError
from conveyor.model.states import JobState

from .factory import claim_one, get, insert, new_job, outcome, require_capability


@pytest.fixture
def file_store(backend):
    """(directory, url_for(name)) beside the test's store file, on file stores only."""
    require_capability(backend, "local_file")
    directory = Path(path_from_url(backend.url)).parent
    prefix = backend.url[: backend.url.rindex("/") + 1]
    return directory, lambda name: prefix + name


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def open_refused(url: str) -> StoreError:
    store = open_backend(url)
    try:
        with pytest.raises(StoreError) as info:
            store.open()
    finally:
        store.close()
    return info.value


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(file_store):
    directory, url_for = file_store
    path = directory / "notes.db"
    path.write_bytes(b"my notes, not a database\n" * 200 + bytes(range(256)))
    before = snapshot(directory)

    error = open_refused(url_for("notes.db"))

    assert str(path) in str(error)
    assert "not a SQLite database" in str(error)
    assert snapshot(directory) == before


def test_a_sqlite_file_of_another_application_is_refused_and_left_alone(file_store):
    directory, url_for = file_store
    path = directory / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.close()
    before = snapshot(directory)

    error = open_refused(url_for("shop.db"))

    assert str(path) in str(error)
    assert "customers" in str(error)
    assert snapshot(directory) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_newer_schema_version_is_refused_with_upgrade_advice(backend, file_store):
    path = path_from_url(backend.url)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE conveyor_meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()

    error = open_refused(backend.url)

    assert "upgrade" in str(error).lower()
    assert "999" in str(error)
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute(
            "SELECT value FROM conveyor_meta WHERE key = 'schema_version'"
        ).fetchone()
    conn.close()
    assert version == "999"


UNDO_3 = [
    "DROP TABLE conveyor_leaders",
    "ALTER TABLE conveyor_jobs DROP COLUMN snoozes",
]
OLDER_SCHEMAS = {1: [*UNDO_3, "DROP TABLE conveyor_workers"], 2: UNDO_3}
"""How to turn today's schema back into each older version (undo what later migrations
added)."""


@pytest.mark.parametrize("version", sorted(OLDER_SCHEMAS))
def test_an_older_store_is_upgraded_on_open_and_keeps_its_jobs(file_store, version):
    _, url_for = file_store
    url = url_for(f"old-{version}.db")
    store = open_backend(url)
    store.open()
    try:
        (job,) = insert(store, new_job())
    finally:
        store.close()
    with sqlite3.connect(path_from_url(url)) as conn:  # as that version left it
        for statement in OLDER_SCHEMAS[version]:
            conn.execute(statement)
        conn.execute(
            "UPDATE conveyor_meta SET value = ? WHERE key = 'schema_version'", (str(version),)
        )
    conn.close()

    upgraded = open_backend(url)
    upgraded.open(migrate=True)
    try:
        assert SCHEMA_VERSION == 3
        assert upgraded.schema_version() == SCHEMA_VERSION
        assert get(upgraded, job.id) == job
        assert get(upgraded, job.id).snoozes == 0
        entry = WorkerInfo("w1", "worker", "h", 1, ("default",), 1, 10.0, 10.0)
        upgraded.worker_beat(entry, ttl=5.0)
        (listed,) = upgraded.worker_list()
        assert listed == replace(entry, heartbeat_at=listed.heartbeat_at)
        assert upgraded.leader_elect("maintenance", "w1", 5.0) is True
        assert upgraded.leader_get("maintenance") == "w1"
    finally:
        upgraded.close()


def test_reopening_a_store_keeps_its_jobs(file_store):
    _, url_for = file_store
    url = url_for("reopen.db")
    now = time.time()
    first = open_backend(url)
    first.open()
    try:
        done, waiting = insert(
            first, new_job(data={"v": 1}, now=now - 1), new_job(data={"v": 2}, now=now)
        )
        running = claim_one(first, now=now)
        assert running.id == done.id
        first.job_complete_many([outcome(running, "completed", finished_at=now, result="ok")])
        first.queue_pause("default")
    finally:
        first.close()

    second = open_backend(url)
    second.open()  # must not re-run the schema on an existing store
    try:
        assert get(second, done.id).state is JobState.COMPLETED
        assert get(second, done.id).result == "ok"
        assert get(second, waiting.id) == waiting
        (stats,) = second.queue_stats(now, "default")
        assert stats.paused is True
        assert stats.counts["completed"] == 1 and stats.counts["queued"] == 1
    finally:
        second.close()


def test_an_empty_file_becomes_a_store(file_store):
    directory, url_for = file_store
    (directory / "empty.db").write_bytes(b"")
    store = open_backend(url_for("empty.db"))
    store.open()
    try:
        (job,) = insert(store, new_job())
        assert get(store, job.id).state is JobState.QUEUED
    finally:
        store.close()


def test_a_missing_directory_is_reported(file_store):
    directory, url_for = file_store
    error = open_refused(url_for("no-such-dir/conveyor.db"))
    assert "does not exist" in str(error)
    assert not (directory / "no-such-dir").exists()


def test_wal_mode_is_on(backend, file_store):
    path = path_from_url(backend.url)
    assert os.path.exists(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def _in_another_process(url: str, code: str) -> str:
    """Run `code` with `store` opened on `url` in a fresh interpreter; return its stdout."""
    script = (
        "import sys\n"
        "from conveyor.backends import open_backend\n"
        "from conveyor.model.codec import encode\n"
        f"store = open_backend({url!r}); store.open()\n"
        f"{code}\n"
        "store.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_a_second_store_in_one_process_keeps_the_first_ones_writes_visible(backend, file_store):
    """Regression: opening a second store on the file must not drop the first one's locks.

    A plain open()/close() of the database file releases every POSIX lock the process holds
    on it; another process closing last then deleted the WAL under the first store, whose
    later commits went into an unlinked file that no other process could see.
    """
    first = insert(backend, new_job(task="first"))[0]
    second = open_backend(backend.url)
    second.open()
    try:
        _in_another_process(backend.url, "store.job_get('none')")
        later = insert(backend, new_job(task="later"))[0]
        seen = _in_another_process(backend.url, f"print(store.job_get({later.id!r}) is not None)")
        assert seen.strip() == "True", "a job committed by the first store was invisible"
        assert get(backend, first.id).task == "first"
    finally:
        second.close()
