"""What a worker tells whoever supervises it: which jobs it runs, until when.

A supervised child process reports over a pipe (`ChildReporter`); the supervisor uses it to
enforce hard timeouts and to end a crashed child's attempts at once instead of waiting for
their leases.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import orjson


class JobObserver(Protocol):
    def worker_started(self, worker_id: str) -> None:
        """The worker opened its store and handles signals: it is about to claim."""

    def jobs_started(self, attempts: Sequence[tuple[str, int, float | None]]) -> None:
        """Attempts (job id, attempt, deadline) are about to begin; the deadline (Unix time)
        is when the attempt's timeout passes, if it has one."""

    def job_ended(self, job_id: str, attempt: int) -> None:
        """The attempt's handler returned (for a sync handler: its thread is free again)."""

    def worker_recycling(self, reason: str) -> None:
        """The worker reached a limit and stops gracefully (a replacement may start now)."""


class ChildReporter:
    """Sends events to the supervisor's pipe as JSON lines (thread-safe, never raises).

    Starts go out at once, one write per claimed batch, before any of its handlers runs.
    Other events are batched: a background thread writes what gathered every FLUSH_INTERVAL,
    so a busy child makes one write per interval rather than one per job. An end the child
    died before sending only makes the supervisor check that job in the store.
    """

    FLUSH_INTERVAL = 0.01

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._broken = False
        self._wakeup = threading.Event()
        threading.Thread(target=self._flush_loop, name="conveyor-report", daemon=True).start()

    def _send(self, event: dict[str, object]) -> None:
        line = orjson.dumps(event) + b"\n"
        with self._lock:
            self._pending.append(line)
        self._wakeup.set()

    def _flush_loop(self) -> None:
        while not self._broken:
            self._wakeup.wait()
            time.sleep(self.FLUSH_INTERVAL)  # let a burst gather
            self._wakeup.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            data, self._pending = b"".join(self._pending), []
            if not data or self._broken:
                return
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError:
                self._broken = True  # the supervisor is gone: the parent watch stops us

    def worker_started(self, worker_id: str) -> None:
        self._send({"ev": "hello", "worker": worker_id, "pid": os.getpid()})

    def jobs_started(self, attempts: Sequence[tuple[str, int, float | None]]) -> None:
        for job_id, attempt, deadline in attempts:
            self._send({"ev": "start", "job": job_id, "attempt": attempt, "deadline": deadline})
        self.flush()  # at once: if the child dies in a handler, the supervisor must know

    def job_ended(self, job_id: str, attempt: int) -> None:
        self._send({"ev": "end", "job": job_id, "attempt": attempt})

    def worker_recycling(self, reason: str) -> None:
        self._send({"ev": "recycling", "reason": reason})
