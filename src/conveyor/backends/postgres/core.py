"""What every part of the PostgreSQL store shares: its statements, its connections (three
pools and the LISTEN connection), transactions, the schema's migrations, and fork safety.

Pools (connections are made on demand, so an idle process holds few):
- `durable` (up to `pool_size`, default 8): enqueues, admin, the worker registry, leader
  leases, pruning; commits wait for the WAL flush.
- `engine` (up to `pool_size`): claims, acknowledgements, releases, rescue, progress, due
  times, with `synchronous_commit=off`: a database crash can undo the last fraction of a
  second of them, which at-least-once delivery absorbs (the job runs again).
- `lease` (up to 2): heartbeats only, so lease renewal never waits behind claims,
  acknowledgements or progress writes that fill the engine pool.
The engine calls the store from several threads at once (producer, completer, lease keeper,
one thread per maintenance service, handler threads writing progress); 8 per pool lets all
of them hold a connection at the same time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from ...model.errors import StoreError
from ..fork import forget_connections_in_children
from ..rows import refusal
from ..sqlfile import load_migrations, load_queries
from .listener import LISTEN_OPTIONS, Listener
from .pool import Pool, safe_url, split_url

_PACKAGE = __package__ or "conveyor.backends.postgres"
_RAW_QUERIES = load_queries(_PACKAGE, "queries.sql")
_MIGRATIONS = load_migrations(_PACKAGE, "migrations")
SCHEMA_VERSION = _MIGRATIONS[-1][0]
DEFAULT_SCHEMA = "conveyor"
DEFAULT_POOL_SIZE = 8
LEASE_POOL_SIZE = 2

NOW = sql.SQL("coalesce(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)")
"""`{now}` in queries.sql: a time a test gave, else the store's."""
FAST_COMMIT = {"options": "-c synchronous_commit=off"}

Cursor = psycopg.Cursor[DictRow]


class PostgresCore:
    def __init__(
        self, url: str, *, connect_timeout: float, pool_size: int = DEFAULT_POOL_SIZE
    ) -> None:
        self.url = url
        self.conninfo, self.schema = split_url(url, DEFAULT_SCHEMA)
        self.where = safe_url(self.conninfo)
        self.channel = f"conveyor.{self.schema}"
        self.connect_timeout = connect_timeout
        identifier = sql.Identifier(self.schema)
        self._q = {
            name: sql.SQL(text).format(schema=identifier, now=NOW)
            for name, text in _RAW_QUERIES.items()
        }
        self._pool_size = pool_size
        self._known_queues: set[str] = set()
        """Queues this process has seen registered, so enqueue skips that round trip."""
        self._opened = False
        self._make_connections()
        forget_connections_in_children(self)

    def _make_connections(self) -> None:
        """New pools and LISTEN connection (none connected yet)."""

        def pool(name: str, size: int, options: dict[str, Any] | None = None) -> Pool:
            return Pool(
                self.conninfo,
                name=name,
                max_size=size,
                connect_timeout=self.connect_timeout,
                options=options,
            )

        self._durable = pool("durable", self._pool_size)
        self._engine = pool("engine", self._pool_size, FAST_COMMIT)
        self._lease = pool("lease", LEASE_POOL_SIZE, FAST_COMMIT)
        self._listener = Listener(
            lambda deadline: self._durable.connect(deadline, **LISTEN_OPTIONS),
            self.channel,
            self.where,
        )

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's connections are its own, so they are dropped
        without closing them (a close would end the parent's sessions) and made anew on
        first use. (psycopg does not close a connection collected in another process.)"""
        self._make_connections()

    # connections --------------------------------------------------------------------------
    def open(self, migrate: bool = True) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            self._migrate(apply=migrate)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._opened = False
        self._listener.close()
        for pool in (self._durable, self._engine, self._lease):
            pool.close()
        self._make_connections()  # ready for another open()

    @contextmanager
    def _tx(self, connection: Any = None, *, pool: Pool | None = None) -> Iterator[Cursor]:
        """One transaction on a pooled connection (durable unless `pool` says otherwise), or a
        cursor inside the caller's own transaction."""
        if connection is not None:
            with connection.cursor(row_factory=dict_row) as cur:
                yield cur
            return
        if not self._opened:
            raise StoreError("the PostgreSQL store is not open")
        with (pool or self._durable).transaction() as cur:
            yield cur

    def _notify(self, cur: Cursor, queues: set[str]) -> None:
        """Delivered at commit, so a worker never wakes for a job it cannot see yet."""
        cur.execute(self._q["notify"], {"channel": self.channel, "queues": sorted(queues)})

    def _refusal(self, cur: Cursor, job_id: str, rule: str) -> Exception:
        cur.execute(self._q["job_get"], {"id": job_id})
        existing = cur.fetchone()
        return refusal(job_id, None if existing is None else existing["state"], rule)

    def store_time(self) -> float:
        with self._tx() as cur:
            cur.execute(self._q["store_time"])
            row = cur.fetchone()
        assert row is not None
        return float(row["now"])

    # schema -------------------------------------------------------------------------------
    def _migrate(self, *, apply: bool) -> None:
        with self._tx() as cur:
            if apply:
                cur.execute(self._q["migrate_lock"], {"lock": f"conveyor:migrate:{self.schema}"})
                cur.execute(self._q["schema_create"])
                cur.execute(self._q["meta_create"])
            current = self._schema_version(cur)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"schema {self.schema!r} has version {current}, newer than this Conveyor "
                    f"understands ({SCHEMA_VERSION}); upgrade conveyor"
                )
            if current < SCHEMA_VERSION and not apply:
                raise StoreError(
                    f"schema {self.schema!r} is at version {current}, this Conveyor needs "
                    f"{SCHEMA_VERSION}; run `conveyor migrate`"
                )
            for version, _name, script in _MIGRATIONS:
                if version > current:
                    for statement in script.split(";\n"):
                        if statement.strip() and not _only_comments(statement):
                            cur.execute(
                                sql.SQL(statement).format(schema=sql.Identifier(self.schema))
                            )
                    cur.execute(
                        self._q["meta_set"], {"key": "schema_version", "value": str(version)}
                    )

    def _schema_version(self, cur: Cursor) -> int:
        cur.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'meta'",
            (self.schema,),
        )
        if cur.fetchone() is None:
            return 0
        cur.execute(self._q["meta_get"], {"key": "schema_version"})
        row = cur.fetchone()
        return int(row["value"]) if row else 0

    def schema_version(self) -> int:
        with self._tx() as cur:
            return self._schema_version(cur)


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())
