"""What a worker tells whoever supervises it: which jobs it runs, until when.

A supervised child process reports over a pipe (`ChildReporter`); the supervisor uses it to
enforce hard timeouts and to end a crashed child's attempts at once instead of waiting for
their leases.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import orjson

log = logging.getLogger("conveyor.worker")


class JobObserver(Protocol):
    def worker_started(self, worker_id: str) -> None:
        """The worker opened its store and handles signals: it is about to claim."""

    def jobs_started(self, attempts: Sequence[tuple[str, int, float | None]]) -> None:
        """Attempts (job id, attempt, deadline) are about to begin; the deadline (Unix time)
        is when the attempt's timeout passes, if it has one."""

    def job_running(self, job_id: str, attempt: int) -> None:
        """The attempt's handler begins (any thread): from now on its attempt counts."""

    def job_ended(self, job_id: str, attempt: int) -> None:
        """The attempt's handler returned (for a sync handler: its thread is free again)."""

    def worker_recycling(self, reason: str) -> None:
        """The worker reached a limit and stops gracefully (a replacement may start now)."""


class ChildReporter:
    """Sends events to the supervisor's pipe as JSON lines. Thread-safe, never raises, and
    never blocks its caller (the event loop): writes are non-blocking, and what the pipe
    cannot take now waits in a bounded buffer for the writer thread.

    Starts, handler runs and hello are written at once (a child dying in a handler must not
    take the supervisor's knowledge of it along: what reached the pipe is read even after the
    child died). Ends and recycling are batched: the writer thread writes what gathered every
    FLUSH_INTERVAL, so a busy child makes one write per interval rather than one per job. An
    end the child died before sending only makes the supervisor check that job in the store.
    """

    FLUSH_INTERVAL = 0.01
    MAX_PENDING = 16 << 20
    """Bytes waiting for a supervisor that stopped reading; past this, events are dropped."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._broken = False
        self._overflowed = False
        self.said_hello = False
        self._wakeup = threading.Event()
        threading.Thread(target=self._flush_loop, name="conveyor-report", daemon=True).start()

    def _send(self, *events: dict[str, object], now: bool = False) -> None:
        data = b"".join(orjson.dumps(event) + b"\n" for event in events)
        with self._lock:
            if self._broken:
                return
            if len(self._pending) + len(data) > self.MAX_PENDING:
                if not self._overflowed:
                    self._overflowed = True
                    log.error("the supervisor stopped reading this worker's reports; dropping")
                return
            self._pending += data
            if now:
                self._write_some()
        if self._pending or not now:
            self._wakeup.set()

    def _write_some(self) -> bool:
        """Write what the pipe takes now (the lock held, never blocking); True if all went."""
        while self._pending and not self._broken:
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                return False
            except OSError:
                self._broken = True  # the supervisor is gone: the parent watch stops us
                self._pending.clear()
                return True
            del self._pending[:written]
        return True

    def _flush_loop(self) -> None:
        while not self._broken:
            self._wakeup.wait()
            time.sleep(self.FLUSH_INTERVAL)  # let a burst gather
            self._wakeup.clear()
            self.flush(timeout=None)

    def flush(self, timeout: float | None = 2.0) -> None:
        """Write everything pending, waiting for the pipe to take it (`timeout` None: as long
        as it takes). Called by the writer thread, and once more before the child exits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._write_some():
                    return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            select.select([], [self._fd], [], min(1.0, left) if left is not None else 1.0)

    def worker_started(self, worker_id: str) -> None:
        self.said_hello = True
        self._send({"ev": "hello", "worker": worker_id, "pid": os.getpid()}, now=True)

    def jobs_started(self, attempts: Sequence[tuple[str, int, float | None]]) -> None:
        events: list[dict[str, object]] = [
            {"ev": "start", "job": job_id, "attempt": attempt, "deadline": deadline}
            for job_id, attempt, deadline in attempts
        ]
        self._send(*events, now=True)  # before any runs: if one kills us, the supervisor knows

    def job_running(self, job_id: str, attempt: int) -> None:
        """The attempt's handler begins: from now on a crash or a kill counts this attempt;
        a claimed attempt whose handler never began is released uncounted instead."""
        self._send({"ev": "run", "job": job_id, "attempt": attempt}, now=True)

    def job_ended(self, job_id: str, attempt: int) -> None:
        self._send({"ev": "end", "job": job_id, "attempt": attempt})

    def worker_recycling(self, reason: str) -> None:
        self._send({"ev": "recycling", "reason": reason})
