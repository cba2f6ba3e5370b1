"""The supervisor's children: how one is started, what it reports, how its exit reads.

A child is a `conveyor worker APP` process that writes JSON lines to a pipe (see
`ChildReporter` in observer.py): `hello` once it can work, `start` for each claimed attempt
(with its deadline) before any of them runs, `run` when an attempt's handler begins, `end`
when the handler returned, `recycling` when it stops by itself. The supervisor reads the
pipe without ever blocking and keeps, per child, the attempts it holds.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("conveyor.supervisor")

EXIT_STORE_UNREACHABLE = 75
"""A child exits with this (EX_TEMPFAIL) when it could not start because the store could not
be reached: the supervisor retries it without counting it as a broken app."""
MAX_LINE = 1 << 20
"""A report line longer than this is garbage: dropped, so a confused child cannot make the
supervisor's buffer grow without bound."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start a child: the `conveyor worker` command line and the limits it keeps."""

    app_spec: str
    url: str | None
    queues: tuple[str, ...] | None
    concurrency: int
    max_jobs: int | None = None
    max_age: float | None = None
    soft_rss_mb: float | None = None
    hard_rss_mb: float | None = None

    def command(self, worker_id: str, report_fd: int, supervisor_id: str) -> list[str]:
        argv = [sys.executable, "-m", "conveyor"]
        if self.url is not None:
            argv += ["--url", self.url]
        argv += ["worker", self.app_spec, "-p", "0", "-c", str(self.concurrency)]
        if self.queues:
            argv += ["-q", ",".join(self.queues)]
        if self.max_jobs is not None:
            argv += ["--max-jobs", str(self.max_jobs)]
        if self.max_age is not None:
            argv += ["--max-age", repr(self.max_age)]
        if self.soft_rss_mb is not None:
            argv += ["--max-rss-mb", repr(self.soft_rss_mb)]
        argv += ["--worker-id", worker_id, "--report-fd", str(report_fd)]
        argv += ["--parent-pid", str(os.getpid()), "--supervisor-id", supervisor_id]
        return argv


@dataclass(slots=True)
class Attempt:
    """One attempt a child holds, as its reports describe it."""

    deadline: float | None
    """When its timeout passes (Unix time), or None."""
    claimed: float = field(default_factory=time.monotonic)
    running_since: float | None = None
    """When its handler began (a `run` report), None if not (yet) reported."""


@dataclass
class Child:
    slot: int
    worker_id: str
    proc: subprocess.Popen[bytes]
    reader: int
    started_at: float
    held: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    """Attempts claimed and not ended: (job id, attempt) -> what we know of it."""
    reports_runs: bool = False
    """It sent a `run` report: an attempt without one has not started its handler."""
    buffer: bytes = b""
    started: bool = False
    """It said hello: the app imported and the store opened."""
    stopping: str | None = None
    """Why we asked it to stop gracefully (it exits 0 when done)."""
    killed: str | None = None
    """Why we killed it."""
    timed_out: set[tuple[str, int]] = field(default_factory=set)
    """Held attempts past their hard timeout when it was killed."""
    rss_mb: float | None = None

    def ran(self, key: tuple[str, int]) -> bool:
        """Whether that attempt's handler may have started (unknown counts as started)."""
        return not self.reports_runs or self.held[key].running_since is not None

    def read(self) -> list[dict[str, Any]]:
        """Every complete report waiting in the pipe (never blocks); closes the pipe at EOF."""
        events: list[dict[str, Any]] = []
        while self.reader != -1:
            try:
                data = os.read(self.reader, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:  # the child closed its end: it exited
                self.close_pipe()
                break
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            if len(self.buffer) > MAX_LINE:
                log.error(
                    "child %d wrote a report line over %d bytes; dropped", self.slot, MAX_LINE
                )
                self.buffer = b""
            for line in lines:
                try:
                    events.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error("child %d wrote a report that is not JSON: %.200r", self.slot, line)
        return events

    def close_pipe(self) -> None:
        if self.reader != -1:
            os.close(self.reader)
            self.reader = -1


def spawn(spec: ChildSpec, slot: int, worker_id: str, supervisor_id: str) -> Child:
    """Start a child whose reports come over a fresh pipe (read end non-blocking)."""
    reader, writer = os.pipe()
    try:
        proc = subprocess.Popen(spec.command(worker_id, writer, supervisor_id), pass_fds=(writer,))
    except BaseException:
        os.close(reader)
        raise
    finally:
        os.close(writer)
    os.set_blocking(reader, False)
    return Child(slot, worker_id, proc, reader, time.time())


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def stopped_from_outside(code: int) -> bool:
    """A child that exits 0 unasked, or on SIGTERM/SIGINT it got before its own handlers were
    installed, was stopped by a signal sent from outside (to the whole process group by
    systemd, `timeout`, a terminal): a stop, not a crash."""
    return code in (0, -signal.SIGTERM, -signal.SIGINT)
