"""Connections to the database: where they go, how long a caller waits for one, and a pool.

Why our own pool rather than psycopg_pool: after an outage, psycopg_pool retries a connection
after 1, 2, 4, ... seconds and lets a caller wait 30 s, so service came back up to 30 s after
the server did; its worker threads also do not survive `fork()`. Here the caller that needs a
connection makes it, retrying every 0.05 to 0.5 s until `connect_timeout`: a store that is
back is used within half a second, and one that is not fails with a StoreError saying why.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads

from ...model.errors import StoreError, StoreUnavailable

Conn = psycopg.Connection[DictRow]

RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5)
"""Pauses between connection attempts while the server is unreachable (then 0.5 s each)."""
MAX_IDLE = 120.0
"""An idle connection unused this long is closed (a busy process keeps its connections)."""

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3}
"""TCP keepalives, so a connection to a vanished server fails instead of waiting forever."""


def split_url(url: str, default_schema: str) -> tuple[str, str]:
    """(conninfo URL without our own `schema` parameter, schema name)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("postgres", "postgresql") or (not parsed.netloc and not parsed.path):
        raise StoreError(f"bad PostgreSQL URL {url!r}; write postgresql://user@host:5432/dbname")
    params = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    schema = default_schema
    kept = []
    for name, value in params:
        if name == "schema":
            schema = value
        else:
            kept.append((name, value))
    if not schema:
        raise StoreError("the schema parameter of the PostgreSQL URL is empty")
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parsed._replace(query=query)), schema


def safe_url(conninfo: str) -> str:
    """The URL for messages and logs: password hidden, query parameters left out."""
    parsed = urllib.parse.urlsplit(conninfo)
    user = f"{parsed.username}{':***' if parsed.password else ''}@" if parsed.username else ""
    host = parsed.hostname or "localhost"
    return f"{parsed.scheme}://{user}{host}:{parsed.port or 5432}{parsed.path}"


def command(conn: Conn, text: bytes) -> None:
    """BEGIN or COMMIT straight through libpq: on the claim and acknowledgement path the
    cursor machinery (query parsing, prepare bookkeeping) cost more than the command itself
    (a profile put it at a third of the PostgreSQL store's per-batch CPU)."""
    result = conn.pgconn.exec_(text)
    if result.status != ExecStatus.COMMAND_OK:
        message = (result.error_message or conn.pgconn.error_message).decode(errors="replace")
        raise psycopg.OperationalError(message.strip() or f"{text.decode()} failed")


def libpq_timeout(seconds: float) -> int:
    """libpq's `connect_timeout` is whole seconds, at least 2 (it reads 1 as 2)."""
    return max(2, int(seconds + 0.999))


def reason(exc: BaseException) -> str:
    """The first line of a driver error: psycopg's messages span several lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def worth_retrying(exc: psycopg.OperationalError) -> bool:
    """A network failure or a server starting or stopping (retry); not a refusal such as a
    wrong password or database (fail now)."""
    state = exc.sqlstate
    if state is not None:
        return state.startswith(("08", "57P", "53300"))
    # A refusal at connect time carries no SQLSTATE, only the server's FATAL message.
    text = str(exc)
    return "FATAL:" not in text or any(busy in text for busy in _TRANSIENT_FATAL)


_TRANSIENT_FATAL = ("starting up", "shutting down", "in recovery", "too many", "terminating")
"""FATAL messages of a server that will accept connections again soon."""


def _configure(conn: Conn) -> None:
    set_json_loads(orjson.loads, conn)


class Pool:
    """Up to `max_size` connections for one kind of traffic, each used by one thread at a time.

    Connections are autocommit at the driver level; `transaction()` sends BEGIN itself, so a
    connection that died while idle (server restart, network cut) is found on that first round
    trip, when retrying on another one is still safe, and is replaced together with its idle
    siblings (they died the same way).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        name: str,
        max_size: int,
        connect_timeout: float,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.name = name
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self._options = {**KEEPALIVES, **(options or {})}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_size)
        self._idle: list[tuple[Conn, float]] = []
        """(connection, when it was put back), most recently used last."""
        self._closed = False

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """A cursor inside a fresh transaction, committed when the block ends without error."""
        conn = self._checkout()
        try:
            with conn.cursor() as cur:
                yield cur
            command(conn, b"COMMIT")
        except psycopg.OperationalError as exc:
            self._checkin(conn, failed=True)
            if conn.broken:  # lost mid-transaction (if during COMMIT, it may have committed)
                raise StoreUnavailable(
                    f"lost the connection to PostgreSQL at {safe_url(self.conninfo)}: {reason(exc)}"
                ) from exc
            raise
        except BaseException:
            self._checkin(conn, failed=True)
            raise
        self._checkin(conn)

    def connect(self, deadline: float | None = None, **overrides: Any) -> Conn:
        """A new connection (not pooled), retried until `deadline` (monotonic) while the server
        is unreachable; StoreError once it passes."""
        if deadline is None:
            deadline = time.monotonic() + self.connect_timeout
        options = {**self._options, **overrides}
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                conn: Conn = psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=libpq_timeout(remaining),
                    **options,
                )
            except psycopg.OperationalError as exc:
                if not worth_retrying(exc):
                    raise StoreError(
                        f"cannot connect to PostgreSQL at {safe_url(self.conninfo)}: {reason(exc)}"
                    ) from None
                pause = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                if time.monotonic() + pause >= deadline:
                    raise self._unreachable(reason(exc)) from None
                time.sleep(pause)
                attempt += 1
                continue
            _configure(conn)
            return conn

    def _unreachable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"no connection to PostgreSQL at {safe_url(self.conninfo)} within "
            f"{self.connect_timeout:g} s (connect_timeout): {why}"
        )

    def _checkout(self) -> Conn:
        deadline = time.monotonic() + self.connect_timeout
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        if not self._slots.acquire(timeout=self.connect_timeout):
            raise self._unreachable(
                f"all {self.max_size} connections of the {self.name} pool stayed busy"
            )
        try:
            while True:
                conn = self._take_idle()
                fresh = conn is None
                try:
                    if conn is None:
                        conn = self.connect(deadline)
                    command(conn, b"BEGIN")
                    return conn
                except psycopg.OperationalError as exc:
                    if conn is not None:
                        conn.close()
                    self._drop_idle()
                    if time.monotonic() >= deadline:
                        raise self._unreachable(reason(exc)) from None
                    if fresh:  # connected, then lost at once: the server is going down
                        time.sleep(RETRY_DELAYS[0])
        except BaseException:
            self._slots.release()
            raise

    def _take_idle(self) -> Conn | None:
        with self._lock:
            while self._idle:
                conn, _ = self._idle.pop()
                if not conn.closed:
                    return conn
        return None

    def _checkin(self, conn: Conn, failed: bool = False) -> None:
        try:
            if failed and not conn.broken:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    conn.close()
            if (
                conn.closed
                or conn.broken
                or conn.info.transaction_status != TransactionStatus.IDLE
                or self._closed
            ):
                conn.close()
                if failed:  # a lost connection: its idle siblings are as likely to be lost
                    self._drop_idle()
                return
            now = time.monotonic()
            with self._lock:
                self._idle.append((conn, now))
                stale = [c for c, at in self._idle if now - at > MAX_IDLE]
                self._idle = [(c, at) for c, at in self._idle if now - at <= MAX_IDLE]
            for old in stale:
                old.close()
        finally:
            self._slots.release()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when they are given back."""
        self._closed = True
        self._drop_idle()
