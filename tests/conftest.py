"""Shared fixtures: every test gets its own fresh store on a real backend.

`STORES` lists the backends the conformance suite runs on; adding one is an entry here plus
a branch in `_store_url` (and, for a server, its per-test isolation and clean-up).

- sqlite: one fresh file in the test's tmp_path.
- postgres: one fresh schema `t_<hex>` in the database at `POSTGRES_URL`, dropped after the
  test.
- redis: one fresh key prefix `t_<hex>` on the server at `REDIS_URL`, its keys deleted after
  the test.

Each server is probed once per session; if it cannot be reached, its tests are skipped
loudly (and counted in the terminal summary), or fail under `CI=true`: in CI a missing
server must never pass as a green run.

`CONVEYOR_TEST_STORES=sqlite` (comma-separated) runs only the named stores.
`CONVEYOR_TEST_POSTGRES_URL` and `CONVEYOR_TEST_REDIS_URL` point the tests at other servers.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conveyor import Conveyor, Settings
from conveyor.backends import open_backend
from conveyor.backends.base import Backend

STORES = ["sqlite", "postgres", "redis"]

POSTGRES_URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The server and database the postgres tests use; each test adds its own `?schema=`."""

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The server the redis tests use; each test adds its own `?prefix=`."""

UNREACHABLE = "UNREACHABLE"
"""Opens the skip reason of server tests that could not run (counted in the summary)."""


def _selected_stores() -> list[str]:
    raw = os.environ.get("CONVEYOR_TEST_STORES", "").strip()
    if not raw:
        return list(STORES)
    return [name.strip() for name in raw.split(",") if name.strip()]


SELECTED_STORES = _selected_stores()


def pytest_configure(config: pytest.Config) -> None:
    unknown = [name for name in SELECTED_STORES if name not in STORES]
    if unknown or not SELECTED_STORES:
        raise pytest.UsageError(
            f"CONVEYOR_TEST_STORES={os.environ.get('CONVEYOR_TEST_STORES', '')!r}: "
            f"name one or more of {', '.join(STORES)} (comma-separated)"
        )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@functools.cache
def _postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (None if it can): probed once per session."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}); pip install 'conveyor[postgres]'"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        where = urlsplit(POSTGRES_URL)
        reason = " ".join(str(exc).split())  # psycopg's message spans several lines
        return f"{where.hostname}:{where.port or 5432}{where.path}: {reason}"
    return None


@functools.cache
def _redis_unreachable() -> str | None:
    """Why Redis cannot be used (None if it can): probed once per session."""
    try:
        import redis
    except ImportError as exc:
        return f"redis-py is not installed ({exc}); pip install 'conveyor[redis]'"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        where = urlsplit(REDIS_URL)
        return f"{where.hostname}:{where.port or 6379}: {exc}"
    return None


_PROBES = {"postgres": _postgres_unreachable, "redis": _redis_unreachable}
_START_HINT = {
    "postgres": "Start PostgreSQL (or set CONVEYOR_TEST_POSTGRES_URL)",
    "redis": "Start Redis (or set CONVEYOR_TEST_REDIS_URL)",
}


def require_server(store: str) -> None:
    """Skip (locally, loudly) or fail (under CI=true) when the store's server is down."""
    problem = _PROBES[store]()
    if problem is None:
        return
    message = (
        f"{store.upper()} {UNREACHABLE}: {problem}. {_START_HINT[store]}, "
        "or run other stores with CONVEYOR_TEST_STORES=sqlite."
    )
    if in_ci():
        pytest.fail(f"{message} (CI=true: the {store} tests must run, not be skipped)")
    pytest.skip(message)


def require_store(store: str) -> None:
    """For tests about one server store: skip it when CONVEYOR_TEST_STORES leaves it out,
    else require its server (see `require_server`)."""
    if store not in SELECTED_STORES:
        pytest.skip(f"CONVEYOR_TEST_STORES={','.join(SELECTED_STORES)} leaves out {store}")
    require_server(store)


def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, connect_timeout=2, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")  # a leftover session must not hang the run
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _postgres_url(schema: str) -> str:
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


def _store_url(store: str, tmp_path: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    raise AssertionError(f"unknown store {store}")


def _redis_url(prefix: str) -> str:
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"


def delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        # Every key of the store holds `{<prefix>` or `{<prefix>:<queue>}`.
        for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*"):
            batch = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(batch), 500):
                client.delete(*batch[start : start + 500])
    finally:
        client.close()


@pytest.fixture(params=SELECTED_STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    store = request.param
    if store == "sqlite":
        yield _store_url(store, tmp_path)
        return
    require_server(store)
    name = f"t_{uuid.uuid4().hex}"
    # `backend` and `make_app` depend on this fixture, so their stores are closed by the end
    if store == "postgres":
        try:
            yield _postgres_url(name)
        finally:
            _drop_schema(name)
    else:
        try:
            yield _redis_url(name)
        finally:
            delete_redis_keys(name)


@pytest.fixture
def backend(store_url: str) -> Iterator[Backend]:
    """An opened, empty store."""
    store = open_backend(store_url)
    store.open()
    yield store
    store.close()


FAST = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=2.0)
"""Engine timings shrunk so that lease expiry and rescue happen within a test."""


@pytest.fixture
def make_app(store_url: str) -> Iterator[type[Conveyor]]:
    """Build `Conveyor` apps on the test's store; all are closed at the end."""
    apps: list[Conveyor] = []

    def factory(settings: Settings | None = None, **kwargs: object) -> Conveyor:
        app = Conveyor(store_url, settings=settings or FAST, **kwargs)  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield factory  # type: ignore[misc]
    for app in apps:
        app.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Make an unreachable server impossible to miss at the end of a local run."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and UNREACHABLE in str(report.longrepr[2])
    ]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"SERVER {UNREACHABLE}: {len(skipped)} tests skipped; they did NOT run",
            red=True,
            bold=True,
        )
