"""Leader election: one worker per store holds the maintenance lease and runs the services.

The lease lives in the store with a TTL on the store's clock (`Backend.leader_elect`); the
elector renews it every third of the TTL on a thread of its own, resigns on a clean exit (a
successor takes over at its next try) and, after a SIGKILL, the lease runs out within one
TTL. Correctness never depends on there being exactly one leader: every service is
idempotent, leadership only keeps the work from being done many times over.
"""

from __future__ import annotations

import logging
import threading

from ..backends.base import MAINTENANCE_LEADER, Backend
from ..failures import log_failure

log = logging.getLogger("conveyor.maintenance")


class Leadership:
    """Whether this worker leads now, and which term (a new one each time it takes the lead),
    shared by the elector and the services (thread-safe)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._term = 0
        self._leading = False
        self._stopped = False

    def set(self, leading: bool) -> None:
        with self._changed:
            if leading and not self._leading:
                self._term += 1
            if leading != self._leading:
                self._leading = leading
                self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._leading = False
            self._changed.notify_all()

    @property
    def leading(self) -> bool:
        with self._changed:
            return self._leading

    @property
    def stopped(self) -> bool:
        with self._changed:
            return self._stopped

    def wait_for_lead(self) -> int | None:
        """Block until this worker leads (returns the term) or stops (returns None)."""
        with self._changed:
            while not self._leading and not self._stopped:
                self._changed.wait()
            return None if self._stopped else self._term

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when leadership changes or the worker stops."""
        with self._changed:
            if not self._stopped:
                self._changed.wait(seconds)


class LeaderElector:
    def __init__(self, backend: Backend, holder: str, ttl: float, leadership: Leadership) -> None:
        self._backend = backend
        self._holder = holder
        self._ttl = ttl
        self._leadership = leadership
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-leader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop electing; the caller resigns once the services are stopped."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def resign(self) -> None:
        try:
            self._backend.leader_resign(MAINTENANCE_LEADER, self._holder)
        except Exception:
            log.exception("could not resign the maintenance lead; it expires in %g s", self._ttl)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                leading = self._backend.leader_elect(MAINTENANCE_LEADER, self._holder, self._ttl)
            except Exception:
                log_failure(log, "leader election failed; will retry")
                leading = False  # unconfirmed: the lease may run out before the next try
            if leading != self._leadership.leading and not self._stop.is_set():
                log.info(
                    "worker %s %s the maintenance services",
                    self._holder,
                    "now leads" if leading else "no longer leads",
                )
                self._leadership.set(leading)
            self._stop.wait(self._ttl / 3)
