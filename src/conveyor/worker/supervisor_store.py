"""The supervisor's one store-facing thread: the supervisor's loop never waits on the store.

The loop (which enforces hard timeouts and memory limits) hands this thread what it must
write: the attempts of children that died or were killed (settlements), its registry beat,
and requests for queue figures (autoscaling). While the store is down every call is retried
with a capped backoff; nothing here ever raises into the loop. The loop reads back only
non-blocking state: whether the store answered lately, and the last queue figures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..backends.base import Outcome, ReleaseParams, WorkerInfo
from ..model.states import JobState
from .executor import attempt_timeout, failure_outcome

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.supervisor")

MAX_BACKOFF = 5.0
"""The longest pause between two tries while the store is down."""
OUTAGE_LOG_INTERVAL = 5.0
"""While the store stays down, a warning this often."""
MAX_SETTLEMENTS = 1000
"""Dead children's settlements waiting for the store; past this the oldest is dropped (its
jobs come back when their leases expire), so an outage cannot grow memory without bound."""
SETTLE_TRIES = 3
"""A settlement that fails this many times while the store answers is given up (a bug, not
an outage): its jobs come back when their leases expire."""
FIGURES_STALE = 30.0
"""Queue figures older than this are not used for autoscaling."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one attempt of a dead child ends.

    `timeout`: it overran its hard timeout (fails with the timeout error, retry policy).
    `failure`: it counts, with `message` (retried at once if attempts remain).
    `release`: its handler never started: back to its queue, the attempt not counted.
    """

    job_id: str
    attempt: int
    kind: Literal["timeout", "failure", "release"]
    message: str = ""


@dataclass(frozen=True, slots=True)
class Settlement:
    worker_id: str
    verdicts: tuple[Verdict, ...]


class SupervisorStore:
    """Runs the supervisor's store calls on a thread of its own (see the module doc)."""

    def __init__(self, app: Conveyor, supervisor_id: str, queues: tuple[str, ...]) -> None:
        self.app = app
        self.supervisor_id = supervisor_id
        self.queues = queues
        self._cond = threading.Condition()
        self._settlements: deque[Settlement] = deque()
        self._beat: tuple[WorkerInfo, float] | None = None
        self._want_figures = False
        self._figures: tuple[tuple[int, float | None], float] | None = None
        self._closing = False
        self._down_since: float | None = None
        self._last_outage_log = 0.0
        self._thread = threading.Thread(target=self._run, name="conveyor-sv-store", daemon=True)
        self._thread.start()

    # the loop's side (never blocks on the store) ------------------------------------------
    @property
    def down(self) -> bool:
        """The last store call failed (the store is unreachable, as far as we know)."""
        return self._down_since is not None

    def settle(self, settlement: Settlement) -> None:
        with self._cond:
            if len(self._settlements) >= MAX_SETTLEMENTS:
                dropped = self._settlements.popleft()
                log.error(
                    "%d dead children's jobs wait for the store; dropping those of %s (they "
                    "come back when their leases expire)",
                    MAX_SETTLEMENTS,
                    dropped.worker_id,
                )
            self._settlements.append(settlement)
            self._cond.notify()

    def beat(self, info: WorkerInfo, ttl: float) -> None:
        """Beat into the registry; only the latest beat matters, so it replaces a pending one."""
        with self._cond:
            self._beat = (info, ttl)
            self._cond.notify()

    def figures(self) -> tuple[int, float | None]:
        """The last (jobs waiting, age of the oldest) read, and ask for a fresh read.
        Raises LookupError when none is recent (the store did not answer)."""
        with self._cond:
            self._want_figures = True
            self._cond.notify()
            known = self._figures
        if known is None or time.monotonic() - known[1] > FIGURES_STALE:
            raise LookupError("no recent queue figures: the store has not answered")
        return known[0]

    def close(self, timeout: float) -> None:
        """Settle what is pending (for up to `timeout` seconds), leave the registry, stop."""
        with self._cond:
            self._closing = True
            self._beat, self._want_figures = None, False  # we are leaving the registry
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                left = sum(len(s.verdicts) for s in self._settlements)
            log.error(
                "the store did not answer in %g s; %d dead children's jobs come back when "
                "their leases expire",
                timeout,
                left,
            )

    # the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not (self._settlements or self._beat or self._want_figures or self._closing):
                    self._cond.wait()
                closing = self._closing
            try:
                worked = self._step()
            except Exception as exc:
                failures += 1
                self._failed(exc)
                with self._cond:  # a pause that a close request cuts short once
                    self._cond.wait(min(MAX_BACKOFF, 0.1 * 2**failures))
                continue
            failures = 0
            if worked:
                self._answered()
            elif closing:
                self._leave()
                return

    def _step(self) -> bool:
        """Do the most urgent piece of work: a settlement, else the beat, else the queue
        figures. False when there was nothing to do."""
        with self._cond:
            settlement = self._settlements[0] if self._settlements else None
            beat = None
            if settlement is None:
                beat, self._beat = self._beat, None
            want_figures = settlement is None and beat is None and self._want_figures
        if settlement is not None:
            self._apply(settlement)
            with self._cond:
                self._settlements.popleft()
        elif beat is not None:
            try:
                self.app.backend.worker_beat(*beat)
            except Exception:
                with self._cond:  # keep it unless a newer beat came meanwhile
                    self._beat = self._beat or beat
                raise
        elif want_figures:
            figures = self._read_figures()
            with self._cond:
                self._figures = (figures, time.monotonic())
                self._want_figures = False
        else:
            return False
        return True

    def _apply(self, settlement: Settlement) -> None:
        """End a dead child's attempts that the store still lists as that child's."""
        for attempt in range(SETTLE_TRIES):
            try:
                self._write(settlement)
                return
            except Exception:
                self.app.backend.store_time()  # raises while the store is down: retried
                if attempt == SETTLE_TRIES - 1:
                    log.exception(
                        "settling the jobs of %s failed although the store answers; they "
                        "come back when their leases expire",
                        settlement.worker_id,
                    )
                    return
                log.exception("settling the jobs of %s failed; retrying", settlement.worker_id)

    def _write(self, settlement: Settlement) -> None:
        backend = self.app.backend
        outcomes: list[Outcome] = []
        release: list[str] = []
        queues: set[str] = set()
        for verdict in settlement.verdicts:
            record = backend.job_get(verdict.job_id)
            if record is None or record.state is not JobState.ACTIVE:
                continue  # it ended before the child did
            if record.worker_id != settlement.worker_id or record.attempt != verdict.attempt:
                continue  # rescued and claimed again, or a newer attempt already ended
            task = self.app.tasks.get(record.task)
            if verdict.kind == "release":
                release.append(record.id)
                queues.add(record.queue)
            elif verdict.kind == "timeout":
                timeout = attempt_timeout(record, task) or 0.0
                message = (
                    f"TimeoutError: timed out after {timeout:g} s; the worker process "
                    "was killed (hard timeout)"
                )
                outcomes.append(failure_outcome(record, task, settlement.worker_id, message, None))
            else:
                outcomes.append(
                    failure_outcome(
                        record, task, settlement.worker_id, verdict.message, None, delay=0.0
                    )
                )
        if outcomes:
            self.app.changes.publish(backend.job_complete_many(outcomes))
        if release:
            params = ReleaseParams(settlement.worker_id, tuple(release), tuple(sorted(queues)))
            self.app.changes.publish(backend.job_release_many(params))
            log.info("released %d unstarted jobs of %s", len(release), settlement.worker_id)

    def _read_figures(self) -> tuple[int, float | None]:
        """(jobs waiting, age of the oldest) over the children's queues."""
        stats = [s for s in self.app.queue_stats() if s.name in self.queues]
        waiting = sum(s.counts.get("queued", 0) for s in stats)
        oldest = [s.oldest_queued_at for s in stats if s.oldest_queued_at is not None]
        return waiting, (time.time() - min(oldest)) if oldest else None

    def _leave(self) -> None:
        try:  # else it expires from the registry
            self.app.backend.worker_forget(self.supervisor_id)
        except Exception as exc:
            log.warning("could not leave the worker registry (%s); the entry expires", exc)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._last_outage_log = now
            log.warning("the store is unreachable (%s); retrying, children keep working", exc)
        elif now - self._last_outage_log >= OUTAGE_LOG_INTERVAL:
            self._last_outage_log = now
            log.warning(
                "the store is still unreachable after %.0f s (%s); retrying",
                now - self._down_since,
                exc,
            )

    def _answered(self) -> None:
        if self._down_since is not None:
            log.warning("the store answers again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None
