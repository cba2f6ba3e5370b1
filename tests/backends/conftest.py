"""Fixtures of the PostgreSQL-only tests (`test_postgres*.py`): a schema of the test's own in
the database at `CONVEYOR_TEST_POSTGRES_URL`, and Conveyor apps on it.

psycopg is imported only where used, so the other stores' tests run without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from conftest import FAST, POSTGRES_URL, require_store
from conveyor import Conveyor

if TYPE_CHECKING:
    import psycopg


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
        import psycopg

        return psycopg.connect(POSTGRES_URL, connect_timeout=5, **kwargs)

    def count(self, table: str) -> int:
        from psycopg import sql

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
        from psycopg import sql

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
