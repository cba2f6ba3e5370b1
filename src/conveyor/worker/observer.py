"""What a worker tells whoever supervises it: which jobs it runs, until when.

A supervised child process reports over a pipe (`ChildReporter`); the supervisor uses it to
enforce hard timeouts and to end a crashed child's attempts at once instead of waiting for
their leases.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import orjson


class JobObserver(Protocol):
    def worker_started(self, worker_id: str) -> None:
        """The worker opened its store and handles signals: it is about to claim."""

    def job_started(self, job_id: str, attempt: int, deadline: float | None) -> None:
        """An attempt began; `deadline` (Unix time) is when its timeout passes, if it has one."""

    def job_ended(self, job_id: str, attempt: int) -> None:
        """The attempt's handler returned (for a sync handler: its thread is free again)."""

    def worker_recycling(self, reason: str) -> None:
        """The worker reached a limit and stops gracefully (a replacement may start now)."""


class ChildReporter:
    """Writes one JSON line per event to the supervisor's pipe (thread-safe, never raises)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._broken = False

    def _send(self, event: dict[str, object]) -> None:
        line = orjson.dumps(event) + b"\n"
        with self._lock:
            if self._broken:
                return
            try:
                os.write(self._fd, line)  # lines under PIPE_BUF are written whole
            except OSError:
                self._broken = True  # the supervisor is gone: the parent watch stops us

    def worker_started(self, worker_id: str) -> None:
        self._send({"ev": "hello", "worker": worker_id, "pid": os.getpid()})

    def job_started(self, job_id: str, attempt: int, deadline: float | None) -> None:
        self._send({"ev": "start", "job": job_id, "attempt": attempt, "deadline": deadline})

    def job_ended(self, job_id: str, attempt: int) -> None:
        self._send({"ev": "end", "job": job_id, "attempt": attempt})

    def worker_recycling(self, reason: str) -> None:
        self._send({"ev": "recycling", "reason": reason})
