"""The SQLite file itself: per-thread connections, write transactions, migrations, fork reset.

Every statement the store runs is a named block of `queries.sql` (`QUERIES`); the store's
clock is the host's (`clock`), read inside the write transaction that uses it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator

from ...model.errors import StoreError
from ..sqlfile import load_migrations, load_queries

QUERIES = load_queries(__package__ or "conveyor.backends.sqlite", "queries.sql")
_MIGRATIONS = load_migrations(__package__ or "conveyor.backends.sqlite", "migrations")
SCHEMA_VERSION = _MIGRATIONS[-1][0]

BUSY_TIMEOUT = 30.0
"""Seconds a writer waits for another process's write lock. Waiting is normal when many
workers share one file, and giving up would drop an acknowledgement, so a short
`connect_timeout` never lowers it (a longer one raises it)."""

_INHERITED: list[object] = []
"""Connections and sockets a forked child inherited: kept, never closed nor collected, since
closing them would release this process's POSIX locks on the file (and a socket's file is
its parent's)."""


def clock(now: float | None) -> float:
    """The store's clock (the host's: an SQLite file has no other host), unless a test
    passes `now`. Called inside the transaction that uses it, after its lock is taken."""
    return time.time() if now is None else now


class Database:
    """One connection per thread to one file, in WAL mode; every change a BEGIN IMMEDIATE."""

    def __init__(self, url: str, path: str, connect_timeout: float) -> None:
        self.url = url
        self.path = path
        self.busy_timeout = max(BUSY_TIMEOUT, connect_timeout)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create or upgrade the schema, after checking the file is ours to touch."""
        self._refuse_foreign_file()
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot create {self.path}: directory {directory} does not exist")
        conn = self.conn()
        with self.write(conn):
            self._migrate(conn)

    def _refuse_foreign_file(self) -> None:
        """Check an existing file read-only, so a foreign file is never modified.

        The check goes through SQLite, never a plain open(): closing a plain file descriptor
        drops every POSIX lock this process holds on the file, including those of its other
        SQLite connections, and another process could then delete the WAL under them.
        """
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        probe = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        try:
            tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a SQLite database ({exc}); refusing to touch it. "
                "Point CONVEYOR_URL at a new file or an existing Conveyor store"
            ) from None
        finally:
            probe.close()
        if tables and "conveyor_meta" not in tables:
            sample = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{self.path} is a SQLite database but not a Conveyor store "
                f"(it holds {sample}); refusing to touch it. Use another file"
            )

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )
            conn.row_factory = sqlite3.Row
            self._enter_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _enter_wal(self, conn: sqlite3.Connection) -> None:
        """WAL mode, waiting out another process that holds the file while it creates or
        switches it: this pragma can answer "database is locked" at once, without the busy
        timeout (seen: `conveyor workers` beside a worker creating the store)."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    @contextlib.contextmanager
    def write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction: BEGIN IMMEDIATE takes the write lock up front."""
        conn = conn or self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            raise StoreError(
                f"the store at {self.url} stayed locked by another writer for "
                f"{self.busy_timeout:g} s (the busy timeout, at least connect_timeout); "
                "look for a process holding a long transaction on the file"
            ) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # also after a failed COMMIT: never keep the lock
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several reads that see one consistent state."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conveyor_meta'"
        ).fetchone()
        current = 0
        if has_meta:
            row = conn.execute(QUERIES["meta_get"], ("schema_version",)).fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this Conveyor "
                f"understands ({SCHEMA_VERSION}); upgrade conveyor"
            )
        for version, _name, script in _MIGRATIONS:
            if version > current:
                for statement in script.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(QUERIES["meta_set"], ("schema_version", str(version)))

    def schema_version(self) -> int:
        row = self.conn().execute(QUERIES["meta_get"], ("schema_version",)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connections unclosed; reopen lazily."""
        _INHERITED.extend(self._connections)
        self._connections = []
        self._local = threading.local()
        self._lock = threading.Lock()  # another thread may have held it at the fork


def keep_inherited(*objects: object) -> None:
    """Keep a forked child's inherited handles alive (see `_INHERITED`)."""
    _INHERITED.extend(o for o in objects if o is not None)
