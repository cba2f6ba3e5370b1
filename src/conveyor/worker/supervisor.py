"""The supervisor: runs worker child processes and keeps them healthy.

Each child is a `conveyor worker APP` process of its own (own event loop, own store
connections) that reports every attempt's start (with its deadline) and end over a pipe.
That knowledge lets the supervisor:
- stop a job past its hard timeout even when it is stuck in C code: the child is killed,
  the attempt fails with a timeout error (retry policy applies) and the child's other jobs
  are released unrun;
- end a crashed child's attempts at once ("worker lost", the attempt counts) instead of
  waiting for their leases, and restart the child with backoff;
- kill a child over its hard memory limit (its jobs released) and start another.
Children recycle themselves gracefully (max jobs, max age, soft memory limit) and say so,
so a replacement starts at once. The number of children follows the queues between
`min_processes` and `max_processes`. See docs/workers.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import psutil

from ..backends.base import Outcome, ReleaseParams, WorkerInfo
from ..model.states import JobState
from .autoscale import Autoscaler, ScalePolicy
from .executor import attempt_timeout, failure_outcome

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.supervisor")

TICK = 0.1
"""Seconds between the supervisor's checks (pipes are read as soon as they have data)."""
HARD_TIMEOUT_MARGIN = 2.0
"""A job still running this long after its timeout gets its child killed: the child's own
timeout (cancelling async handlers, stopping sync ones at their next check) goes first."""
RSS_CHECK_INTERVAL = 0.5
REGISTRY_INTERVAL = 2.0
"""Seconds between the supervisor's beats in the worker registry."""
MAX_START_FAILURES = 5
"""Children that die before they start, in a row, after which the supervisor gives up."""
STABLE_AFTER = 10.0
MEMORY_KILLS_PER_ATTEMPT = 2
"""A job running in this many children killed over the hard memory limit fails that attempt
(the retry policy applies) instead of being released again."""
"""A child that lived this long resets its slot's crash backoff."""


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


@dataclass
class Child:
    slot: int
    worker_id: str
    proc: subprocess.Popen[bytes]
    reader: int
    started_at: float
    held: dict[tuple[str, int], float | None] = field(default_factory=dict)
    """Attempts running now: (job id, attempt) -> deadline (Unix time) or None."""
    buffer: bytes = b""
    started: bool = False
    """It said hello: the app imported and the store opened."""
    stopping: str | None = None
    """Why we asked it to stop gracefully (it exits 0 when done)."""
    killed: str | None = None
    """Why we killed it."""
    timed_out: set[tuple[str, int]] = field(default_factory=set)
    """Held jobs past their hard timeout when it was killed."""
    rss_mb: float | None = None


class Supervisor:
    """Keeps `min_processes`..`max_processes` children working until SIGTERM/SIGINT."""

    def __init__(
        self,
        app: Conveyor,
        spec: ChildSpec,
        min_processes: int,
        max_processes: int,
        policy: ScalePolicy | None = None,
    ) -> None:
        if not 1 <= min_processes <= max_processes:
            raise ValueError(
                f"need 1 <= min processes ({min_processes}) <= max processes ({max_processes})"
            )
        self.app = app
        self.spec = spec
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.queues: tuple[str, ...] = spec.queues or tuple(
            sorted({t.defaults.queue for t in app.tasks.values()}) or ["default"]
        )
        """The children's queues (as a worker without -q would choose them)."""
        self.children: dict[int, Child] = {}
        self.retiring: list[Child] = []
        """Children told to stop (recycling, scale-down, shutdown) that have not exited yet."""
        self.autoscaler = Autoscaler(
            policy or ScalePolicy.from_env(), min_processes, max_processes, spec.concurrency
        )
        self.target = min_processes
        self._selector = selectors.DefaultSelector()
        self._generation = 0
        self._crashes: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._start_failures = 0
        self._signals = 0
        """Signals received (by the handler, which only counts them)."""
        self._signals_handled = 0
        self._exit_code = 0
        self._memory_kills: dict[str, int] = {}
        """Job id -> how many children were killed over memory while running it."""
        self._shutdown_started: float | None = None
        self._last_rss_check = 0.0
        self._last_beat = 0.0
        self.started_at = time.time()

    # public -------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped by a signal; return the exit code (0 after a graceful stop)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info(
            "supervisor %s: %d..%d processes of concurrency %d",
            self.id,
            self.autoscaler.min_processes,
            self.autoscaler.max_processes,
            self.spec.concurrency,
        )
        try:
            return self._loop()
        finally:
            for child in self._all_children():
                if child.proc.poll() is None:
                    child.proc.kill()
            self._selector.close()
            with contextlib.suppress(Exception):  # else it expires from the registry
                self.app.backend.worker_forget(self.id)

    # main loop ----------------------------------------------------------------------------
    def _loop(self) -> int:
        while True:
            self._read_reports(TICK)
            self._reap()
            self._handle_signals()
            if self._shutdown_started is not None:
                if not self._all_children():
                    log.info("supervisor %s: every child has exited; bye", self.id)
                    return self._exit_code
                self._bound_shutdown()
                continue
            if self._start_failures >= MAX_START_FAILURES:
                log.error(
                    "supervisor %s: %d children in a row exited before starting; giving up "
                    "(their output above says why)",
                    self.id,
                    self._start_failures,
                )
                self._exit_code = 1
                self._begin_shutdown("giving up")
                continue
            now = time.time()
            self._enforce_hard_timeouts(now)
            self._enforce_memory(now)
            self._scale(now)
            self._fill_slots(now)
            self._beat(now)

    def _all_children(self) -> list[Child]:
        return [*self.children.values(), *self.retiring]

    # signals and shutdown -----------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        """Only count: the loop acts on it between steps, never in the middle of one."""
        self._signals += 1

    def _handle_signals(self) -> None:
        while self._signals_handled < self._signals:
            self._signals_handled += 1
            if self._shutdown_started is None:
                log.warning(
                    "signal: stopping: children finish their active jobs (up to %g s), then exit",
                    self.app.settings.grace_period,
                )
                self._begin_shutdown("shutdown")
            else:
                log.warning("signal again: children skip the rest of their grace period")
                for child in self._all_children():
                    self._signal(child, signal.SIGUSR1)  # a supervised child's "force"

    def _begin_shutdown(self, reason: str) -> None:
        self._shutdown_started = time.monotonic()
        for slot in list(self.children):
            self._retire(slot, reason)

    def _bound_shutdown(self) -> None:
        """Children that outlive grace + release time are killed; their jobs released."""
        assert self._shutdown_started is not None
        limit = self.app.settings.grace_period + 30.0
        if time.monotonic() - self._shutdown_started < limit:
            return
        for child in self._all_children():
            if child.proc.poll() is None and child.killed is None:
                self._kill(child, "did not exit after the grace period")

    # children -----------------------------------------------------------------------------
    def _fill_slots(self, now: float) -> None:
        for slot in range(self.target):
            if slot in self.children or self._restart_at.get(slot, 0.0) > now:
                continue
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self._generation += 1
        worker_id = f"{self.id}/{slot}.{self._generation}"
        reader, writer = os.pipe()
        try:
            proc = subprocess.Popen(
                self.spec.command(worker_id, writer, self.id), pass_fds=(writer,)
            )
        finally:
            os.close(writer)
        os.set_blocking(reader, False)
        child = Child(slot, worker_id, proc, reader, time.time())
        self.children[slot] = child
        self._selector.register(reader, selectors.EVENT_READ, child)
        log.info("child %d started (pid %d, worker %s)", slot, proc.pid, worker_id)

    def _retire(self, slot: int, reason: str) -> None:
        """Ask the child in `slot` to stop gracefully; its slot is free for a new one."""
        child = self.children.get(slot)
        if child is None:
            return
        child.stopping = reason
        self._vacate(child)
        self._signal(child, signal.SIGTERM)

    def _vacate(self, child: Child) -> None:
        """The child leaves its slot (a new one may take it) but is watched until it exits."""
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
            self.retiring.append(child)

    def _signal(self, child: Child, sig: signal.Signals) -> None:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    def _kill(self, child: Child, reason: str) -> None:
        log.warning("killing child %d (pid %d): %s", child.slot, child.proc.pid, reason)
        child.killed = reason
        self._signal(child, signal.SIGKILL)
        self._vacate(child)  # a replacement starts at once

    # reports ------------------------------------------------------------------------------
    def _read_reports(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            child: Child = key.data
            self._drain(child)

    def _drain(self, child: Child) -> None:
        try:
            data = os.read(child.reader, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the child closed its end: it exited
            self._selector.unregister(child.reader)
            os.close(child.reader)
            child.reader = -1
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self._on_report(child, orjson.loads(line))

    def _on_report(self, child: Child, event: dict[str, Any]) -> None:
        kind = event["ev"]
        if kind == "start":
            child.held[event["job"], event["attempt"]] = event["deadline"]
        elif kind == "end":
            child.held.pop((event["job"], event["attempt"]), None)
        elif kind == "hello":
            child.started = True
            self._start_failures = 0
        elif kind == "recycling":
            log.info("child %d recycles: %s", child.slot, event["reason"])
            if self.children.get(child.slot) is child and self._shutdown_started is None:
                # Its jobs finish in the background; a fresh child takes the slot now.
                child.stopping = event["reason"]
                self._vacate(child)

    # exits --------------------------------------------------------------------------------
    def _reap(self) -> None:
        for child in self._all_children():
            code = child.proc.poll()
            if code is None:
                continue
            if child.reader != -1:  # read what it said last before judging
                self._drain(child)
                if child.reader != -1:
                    self._selector.unregister(child.reader)
                    os.close(child.reader)
                    child.reader = -1
            self._forget(child)
            self._on_exit(child, code)

    def _forget(self, child: Child) -> None:
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
        if child in self.retiring:
            self.retiring.remove(child)

    def _on_exit(self, child: Child, code: int) -> None:
        lived = time.time() - child.started_at
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if child.killed is not None:
            log.warning("child %d (pid %d) killed: %s", child.slot, child.proc.pid, child.killed)
            self._end_attempts(child, lost=False)
            return  # its slot refills at once: the fault was the job's or the memory's
        if child.stopping is not None or code == 0:
            # Asked to stop, or it stopped by itself after a signal sent to the whole process
            # group (systemd, `timeout`): not a crash. Its slot is refilled at once if needed.
            why = child.stopping or "on its own (a signal from outside?)"
            if code == 0:
                log.info("child %d (pid %d) stopped: %s", child.slot, child.proc.pid, why)
            else:
                log.warning(
                    "child %d (pid %d) stopped (%s): %s", child.slot, child.proc.pid, how, why
                )
            if child.held:  # it released them itself; anything still listed was lost
                self._end_attempts(child, lost=True)
            return
        log.error(
            "child %d (pid %d) died (%s) after %.1f s holding %d jobs",
            child.slot,
            child.proc.pid,
            how,
            lived,
            len(child.held),
        )
        self._end_attempts(child, lost=True)
        if not child.started:
            self._start_failures += 1
        crashes = 0 if lived >= STABLE_AFTER else self._crashes.get(child.slot, 0) + 1
        self._crashes[child.slot] = crashes
        delay = 0.0 if crashes == 0 else min(30.0, 0.5 * 2 ** (crashes - 1))
        if delay:
            log.warning("child %d restarts in %.1f s", child.slot, delay)
        self._restart_at[child.slot] = time.time() + delay

    def _end_attempts(self, child: Child, *, lost: bool) -> None:
        """Settle the attempts a dead child held: timed-out ones fail with a timeout error,
        a crashed child's fail as "worker lost" (both follow the retry policy), the rest
        of a killed child's go back to their queue unrun."""
        if not child.held:
            return
        backend = self.app.backend
        outcomes: list[Outcome] = []
        release: list[str] = []
        queues: set[str] = set()
        for job_id, attempt in list(child.held):
            record = backend.job_get(job_id)
            if record is None or record.state is not JobState.ACTIVE:
                continue  # it ended before the child did
            if record.worker_id != child.worker_id or record.attempt != attempt:
                continue  # rescued and claimed again, or a newer attempt already ended
            queues.add(record.queue)
            task = self.app.tasks.get(record.task)
            memory_kills = self._memory_kills.get(job_id, 0)
            if (job_id, attempt) in child.timed_out:
                timeout = attempt_timeout(record, task) or 0.0
                message = (
                    f"TimeoutError: timed out after {timeout:g} s; the worker process "
                    "was killed (hard timeout)"
                )
                outcomes.append(failure_outcome(record, task, child.worker_id, message, None))
            elif lost or memory_kills >= MEMORY_KILLS_PER_ATTEMPT:
                # A job that keeps taking its child over the memory limit must not loop.
                why = (
                    "worker lost: its process died during the attempt"
                    if lost
                    else f"worker killed: over the hard memory limit {memory_kills} times "
                    "while running this job"
                )
                self._memory_kills.pop(job_id, None)
                outcomes.append(
                    failure_outcome(record, task, child.worker_id, why, None, delay=0.0)
                )
            else:
                release.append(job_id)
        self._settle(outcomes, release, child.worker_id, queues)
        child.held.clear()

    def _settle(
        self, outcomes: list[Outcome], release: list[str], worker_id: str, queues: set[str]
    ) -> None:
        backend = self.app.backend
        for attempt in range(3):
            try:
                if outcomes:
                    backend.job_complete_many(outcomes)
                if release:
                    backend.job_release_many(
                        ReleaseParams(worker_id, tuple(release), tuple(queues), time.time())
                    )
                    log.info("released %d jobs of a killed child", len(release))
                return
            except Exception:
                log.exception("settling a dead child's jobs failed (try %d of 3)", attempt + 1)
                time.sleep(0.5 * 2**attempt)
        log.error("giving up on a dead child's jobs: they come back when their leases expire")

    # limits -------------------------------------------------------------------------------
    def _enforce_hard_timeouts(self, now: float) -> None:
        for child in list(self.children.values()) + self.retiring:
            if child.killed is not None:
                continue
            late = {
                held
                for held, deadline in child.held.items()
                if deadline is not None and now > deadline + HARD_TIMEOUT_MARGIN
            }
            if late:
                child.timed_out = late
                names = ", ".join(sorted(job_id for job_id, _ in late))
                self._kill(child, f"job {names} overran its timeout")

    def _enforce_memory(self, now: float) -> None:
        if now - self._last_rss_check < RSS_CHECK_INTERVAL:
            return
        self._last_rss_check = now
        for child in list(self.children.values()) + self.retiring:
            if child.killed is not None or child.proc.poll() is not None:
                continue
            try:
                child.rss_mb = psutil.Process(child.proc.pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            hard = self.spec.hard_rss_mb
            if hard is not None and child.rss_mb > hard:
                for job_id, _ in child.held:
                    self._memory_kills[job_id] = self._memory_kills.get(job_id, 0) + 1
                self._kill(child, f"memory {child.rss_mb:.1f} MB over the hard limit {hard:g} MB")

    # registry -----------------------------------------------------------------------------
    def _beat(self, now: float) -> None:
        if now - self._last_beat < REGISTRY_INTERVAL:
            return
        self._last_beat = now
        info = WorkerInfo(
            id=self.id,
            kind="supervisor",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.spec.concurrency,
            started_at=self.started_at,
            heartbeat_at=now,
            current_jobs=tuple(job for c in self.children.values() for job, _ in c.held),
            rss_mb=psutil.Process().memory_info().rss / 2**20,
            stats={
                "processes": len(self.children),
                "target": self.target,
                "min_processes": self.autoscaler.min_processes,
                "max_processes": self.autoscaler.max_processes,
                "children": [
                    {"slot": c.slot, "pid": c.proc.pid, "worker": c.worker_id, "rss_mb": c.rss_mb}
                    for c in self.children.values()
                ],
                "scaling": list(self.autoscaler.decisions),
            },
        )
        try:
            self.app.backend.worker_beat(info, 5 * REGISTRY_INTERVAL)
        except Exception:
            log.exception("could not update the worker registry; will retry")

    # autoscaling --------------------------------------------------------------------------
    def _scale(self, now: float) -> None:
        busy = sum(len(c.held) for c in self.children.values())
        decision = self.autoscaler.decide(now, self.target, busy, self._queue_figures)
        if decision is None:
            return
        new_target, reason = decision
        log.info("scaling %d -> %d processes: %s", self.target, new_target, reason)
        if new_target < self.target:
            for slot in range(new_target, self.target):
                self._retire(slot, f"scaled down: {reason}")
        self.target = new_target

    def _queue_figures(self) -> tuple[int, float | None]:
        """(jobs waiting, age of the oldest) over the children's queues."""
        stats = [s for s in self.app.queue_stats() if s.name in self.queues]
        waiting = sum(s.counts.get("queued", 0) for s in stats)
        oldest = [s.oldest_queued_at for s in stats if s.oldest_queued_at is not None]
        return waiting, (time.time() - min(oldest)) if oldest else None
