"""LISTEN/NOTIFY wake-ups: one autocommit connection per store, used by the waiting thread.

Enqueue, retry, release, rescue and resume send `pg_notify(channel, queue)` inside their
transaction, so a notification arrives only once its job is visible.

A LISTEN connection only ever reads, so a half-open one (the server or the network gone
without a word) would look like a quiet one forever, and workers would fall back to their
poll silently. So it has TCP keepalives and a send timeout, and is checked with `SELECT 1`
when it has been quiet for `CHECK_EVERY` seconds. A lost connection is logged once at
WARNING, reconnected every 0.05 to 0.5 s (within each wait), and its return is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql

from .pool import Conn, reason

log = logging.getLogger("conveyor.store")

CHECK_EVERY = 5.0
"""Seconds without a notification after which the connection is checked."""
LISTEN_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,
}
"""A dead peer is noticed within about 9 s idle, 5 s after a send (the check's)."""

Connect = Callable[[float], Conn]
"""Makes a connection, retrying until the given deadline (monotonic); raises on failure."""


class Listener:
    def __init__(self, connect: Connect, channel: str, where: str) -> None:
        self._connect_until = connect
        self.channel = channel
        self.where = where
        """The store's URL (password hidden), for the log."""
        self._conn: Conn | None = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._lost_since: float | None = None
        self._closing = False

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a notification names one of `queues` (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        try:
            conn = self._connection(deadline)
            if conn is None:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return False
            if time.monotonic() - self._checked_at >= CHECK_EVERY:
                conn.execute("SELECT 1")
                self._checked_at = time.monotonic()
            return self._receive(conn, set(queues), deadline, timeout == 0)
        except psycopg.Error as exc:
            if not self._closing:  # closed under us at shutdown: not a lost connection
                self._drop(exc)
            return False

    def _receive(self, conn: Conn, wanted: set[str], deadline: float, once: bool) -> bool:
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            woken = False
            for note in conn.notifies(timeout=remaining, stop_after=1):
                self._checked_at = time.monotonic()  # it spoke: it is alive
                woken = note.payload in wanted
            if woken:
                for _ in conn.notifies(timeout=0.0):  # drain: one claim serves them all
                    pass
                return True
            if once or time.monotonic() >= deadline:
                return False

    def _connection(self, deadline: float) -> Conn | None:
        """The LISTEN connection, (re)made if needed; None if the store stays unreachable
        until `deadline`."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            try:
                conn = self._connect_until(max(deadline, time.monotonic() + 0.05))
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except Exception as exc:  # StoreError or a driver error: still down
                if self._lost_since is None:
                    self._lost_since = time.monotonic()
                    log.warning(
                        "cannot listen for wake-ups at %s (%s); polling until it is back",
                        self.where,
                        reason(exc),
                    )
                return None
            self._conn = conn
            self._checked_at = time.monotonic()
            if self._lost_since is not None:
                log.warning(
                    "listening for wake-ups at %s again after %.1f s",
                    self.where,
                    time.monotonic() - self._lost_since,
                )
                self._lost_since = None
            return conn

    def _drop(self, exc: Exception) -> None:
        with self._lock:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                log.warning(
                    "lost the LISTEN connection to %s (%s); reconnecting, polling meanwhile",
                    self.where,
                    reason(exc),
                )
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def close(self) -> None:
        self._closing = True
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
