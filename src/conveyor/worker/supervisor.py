"""The supervisor: runs worker child processes and keeps them healthy.

Each child is a `conveyor worker APP` process of its own (own event loop, own store
connections) that reports every attempt it claims (with its deadline), whose handler begins,
and that ends, over a pipe (children.py). That knowledge lets the supervisor:
- stop a job past its hard timeout even when it is stuck in C code: the child is killed, the
  attempt fails with a timeout error (retry policy applies);
- end a dead child's attempts at once instead of waiting for their leases, and restart the
  child with backoff (restarts.py);
- kill a child over its hard memory limit and start another.
A killed or crashed child's attempts whose handler had started count (every run is bounded by
`max_attempts`); those that never started go back to their queue uncounted.
Children recycle themselves gracefully (max jobs, max age, soft memory limit) and say so, so
a replacement starts at once. The number of children follows the queues between
`min_processes` and `max_processes`.

The loop never waits on the store: every store call (ending dead children's attempts,
the registry beat, queue figures) runs on the supervisor's store thread
(supervisor_store.py), which retries while the store is down. See docs/workers.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import psutil

from ..backends.base import WorkerInfo
from .autoscale import Autoscaler, ScalePolicy
from .children import (
    EXIT_STORE_UNREACHABLE,
    Attempt,
    Child,
    ChildSpec,
    describe_exit,
    spawn,
    stopped_from_outside,
)
from .restarts import MAX_START_FAILURES, RestartPolicy
from .supervisor_store import Settlement, SupervisorStore, Verdict

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
SETTLE_AT_EXIT = 10.0
"""How long an exiting supervisor waits for the store to take its last settlements."""


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
        self.restarts = RestartPolicy()
        self._selector = selectors.DefaultSelector()
        self._generation = 0
        self._signals = 0
        """Signals received (by the handler, which only counts them)."""
        self._signals_handled = 0
        self._exit_code = 0
        self._shutdown_started: float | None = None
        self._last_rss_check = 0.0
        self._last_beat = 0.0
        self.started_at = time.time()
        self.store: SupervisorStore | None = None
        """The store thread, while `run` runs."""

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
        self.store = SupervisorStore(self.app, self.id, self.queues)
        try:
            return self._loop()
        finally:
            for child in self._all_children():
                if child.proc.poll() is None:
                    child.proc.kill()
            self._selector.close()
            self.store.close(SETTLE_AT_EXIT)

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
            if self.restarts.give_up:
                log.error(
                    "supervisor %s: %d children in a row exited before starting; giving up "
                    "(their output above says why)",
                    self.id,
                    MAX_START_FAILURES,
                )
                self._exit_code = 1
                self._begin_shutdown("giving up")
                continue
            now = time.time()
            self._enforce_hard_timeouts(now)
            self._enforce_memory(now)
            self._scale(now)
            self._fill_slots()
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
        """Children that outlive grace + release time are killed."""
        assert self._shutdown_started is not None
        limit = self.app.settings.grace_period + 30.0
        if time.monotonic() - self._shutdown_started < limit:
            return
        for child in self._all_children():
            if child.proc.poll() is None and child.killed is None:
                self._kill(child, "did not exit after the grace period")

    # children -----------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        now = time.monotonic()
        for slot in range(self.target):
            if slot in self.children or not self.restarts.may_start(slot, now):
                continue
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self._generation += 1
        worker_id = f"{self.id}/{slot}.{self._generation}"
        child = spawn(self.spec, slot, worker_id, self.id)
        self.children[slot] = child
        self._selector.register(child.reader, selectors.EVENT_READ, child)
        log.info("child %d started (pid %d, worker %s)", slot, child.proc.pid, worker_id)

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
            self._drain(key.data)

    def _drain(self, child: Child) -> None:
        was_open = child.reader != -1
        reader = child.reader
        for event in child.read():
            self._on_report(child, event)
        if was_open and child.reader == -1:
            self._selector.unregister(reader)

    def _on_report(self, child: Child, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind == "start":
            child.held[event["job"], event["attempt"]] = Attempt(event["deadline"])
        elif kind == "run":
            attempt = child.held.get((event["job"], event["attempt"]))
            child.reports_runs = True
            if attempt is not None:
                attempt.running_since = time.monotonic()
        elif kind == "end":
            child.held.pop((event["job"], event["attempt"]), None)
        elif kind == "hello":
            child.started = True
            self.restarts.started()
            self.restarts.reset(child.slot)
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
                reader = child.reader
                self._drain(child)
                if child.reader != -1:
                    self._selector.unregister(reader)
                    child.close_pipe()
            self._forget(child)
            self._on_exit(child, code)

    def _forget(self, child: Child) -> None:
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
        if child in self.retiring:
            self.retiring.remove(child)

    def _on_exit(self, child: Child, code: int) -> None:
        pid, how = child.proc.pid, describe_exit(code)
        if child.killed is not None:
            log.warning("child %d (pid %d) killed: %s", child.slot, pid, child.killed)
            self._settle(child, f"worker killed ({child.killed})")
            return  # its slot refills at once: the fault was the job's or the memory's
        if child.stopping is not None or stopped_from_outside(code):
            why = child.stopping or "by a signal from outside (sent to the whole process group?)"
            if code == 0:
                log.info("child %d (pid %d) stopped: %s", child.slot, pid, why)
            else:
                log.warning("child %d (pid %d) stopped (%s): %s", child.slot, pid, how, why)
            if child.held:  # it ended or released them itself; anything still listed was lost
                self._settle(child, f"worker lost: its process exited ({how})")
            if child.stopping is None and self._shutdown_started is None:
                # A signal to the whole group reaches us too: do not refill the slot at once.
                self.restarts.stopped_from_outside(child.slot)
            return
        lived = time.time() - child.started_at
        store_down = not child.started and (
            code == EXIT_STORE_UNREACHABLE or (self.store is not None and self.store.down)
        )
        if store_down:
            log.warning(
                "child %d (pid %d) could not start (%s): the store is unreachable; not "
                "counted as a failed start",
                child.slot,
                pid,
                how,
            )
        else:
            log.error(
                "child %d (pid %d) died (%s) after %.1f s holding %d jobs",
                child.slot,
                pid,
                how,
                lived,
                len(child.held),
            )
        self._settle(child, f"worker lost: its process died during the attempt ({how})")
        delay = self.restarts.crashed(
            child.slot, lived, started=child.started, store_down=store_down
        )
        if delay:
            log.warning("child %d restarts in %.1f s", child.slot, delay)

    def _settle(self, child: Child, cause: str) -> None:
        """Hand the store thread how each attempt the dead child held ends.

        Past its hard timeout: fails with the timeout error. Its handler had started (or we
        cannot tell, the child not reporting handler starts): counts, with `cause`. Claimed
        but never started: released, uncounted. So a child that crashes running one job
        costs only that job an attempt; with several running, each counts (which one crashed
        it cannot be told)."""
        if not child.held:
            return
        now = time.monotonic()
        verdicts = []
        for key, attempt in child.held.items():
            job_id, number = key
            if key in child.timed_out:
                verdicts.append(Verdict(job_id, number, "timeout"))
            elif child.ran(key):
                ran_for = now - (attempt.running_since or attempt.claimed)
                message = f"{cause} after this attempt ran {ran_for:.1f} s"
                verdicts.append(Verdict(job_id, number, "failure", message))
            else:
                verdicts.append(Verdict(job_id, number, "release"))
        child.held.clear()
        assert self.store is not None
        self.store.settle(Settlement(child.worker_id, tuple(verdicts)))

    # limits -------------------------------------------------------------------------------
    def _enforce_hard_timeouts(self, now: float) -> None:
        for child in self._all_children():
            if child.killed is not None:
                continue
            late = {
                held
                for held, attempt in child.held.items()
                if attempt.deadline is not None and now > attempt.deadline + HARD_TIMEOUT_MARGIN
            }
            if late:
                child.timed_out = late
                names = ", ".join(sorted(job_id for job_id, _ in late))
                self._kill(child, f"job {names} overran its timeout")

    def _enforce_memory(self, now: float) -> None:
        if now - self._last_rss_check < RSS_CHECK_INTERVAL:
            return
        self._last_rss_check = now
        for child in self._all_children():
            if child.killed is not None or child.proc.poll() is not None:
                continue
            try:
                child.rss_mb = psutil.Process(child.proc.pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            hard = self.spec.hard_rss_mb
            if hard is not None and child.rss_mb > hard:
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
        assert self.store is not None
        self.store.beat(info, 5 * REGISTRY_INTERVAL)

    # autoscaling --------------------------------------------------------------------------
    def _scale(self, now: float) -> None:
        assert self.store is not None
        busy = sum(len(c.held) for c in self.children.values())
        decision = self.autoscaler.decide(now, self.target, busy, self.store.figures)
        if decision is None:
            return
        new_target, reason = decision
        log.info("scaling %d -> %d processes: %s", self.target, new_target, reason)
        if new_target < self.target:
            for slot in range(new_target, self.target):
                self._retire(slot, f"scaled down: {reason}")
        self.target = new_target
