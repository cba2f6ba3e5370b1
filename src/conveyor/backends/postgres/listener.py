"""LISTEN/NOTIFY wake-ups: one autocommit connection per store, used by the waiting thread.

Enqueue, retry, release, rescue and resume send `pg_notify(channel, queue)` inside their
transaction, so a notification arrives only once its job is visible. If the connection
drops, waiting falls back to sleeping the caller's timeout (its poll interval) while it
reconnects, so lost notifications cost at most one poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("conveyor.store")


class Listener:
    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._closing = False

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a notification names one of `queues` (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        try:
            with self._lock:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                    if self._failures:
                        log.warning(
                            "listening for wake-ups again after %d failures", self._failures
                        )
                    self._failures = 0
                conn = self._conn
            wanted = set(queues)
            while (remaining := deadline - time.monotonic()) > 0 or timeout == 0:
                woken = False
                for note in conn.notifies(timeout=max(remaining, 0.0), stop_after=1):
                    woken = note.payload in wanted
                if woken:
                    for _ in conn.notifies(timeout=0.0):  # drain: one claim serves them all
                        pass
                    return True
                if timeout == 0 or time.monotonic() >= deadline:
                    return False
            return False
        except psycopg.Error as exc:
            if self._closing:
                return False  # closed under us at shutdown: not a lost connection
            self._drop(exc)
            time.sleep(max(0.0, min(deadline - time.monotonic(), 0.1 * 2**self._failures)))
            return False

    def _drop(self, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            if self._failures == 1:
                log.warning("lost the LISTEN connection (%s); polling until it is back", exc)
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
