"""`current_job()`: what a running handler can ask about its own job."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..model.codec import encode
from ..model.errors import JobCancelled
from ..model.job import JobRecord

if TYPE_CHECKING:
    from ..backends.base import Outcome

_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "conveyor_current_job", default=None
)
logger = logging.getLogger("conveyor.job")


class JobContext:
    """The running attempt: id, attempt, data, progress reporting, cancellation, logger."""

    def __init__(self, record: JobRecord, report_progress: Callable[[JobContext, bytes], None]):
        self.record = record
        self._report_progress = report_progress
        self.cancel_requested = False
        self.released = False
        """Set when the attempt is taken back (shutdown, lost lease): the executor records
        nothing, whoever took it back settles it."""
        self.in_thread = False
        self.started_at: float | None = None
        """When the handler started (monotonic); None while it waits for a thread."""
        self.thread_done: asyncio.Event | None = None
        """A sync handler's: set once its thread returned."""
        self.orphaned = False
        """The sync handler still runs in its thread after the attempt ended."""
        self.decided: Outcome | None = None
        """A timed-out attempt's outcome, decided while its sync handler's thread still runs:
        stored when the thread returns, or at shutdown (whose hard exit ends the thread)."""
        self.logger = logging.LoggerAdapter(
            logger, {"job_id": record.id, "task": record.task, "attempt": record.attempt}
        )

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def attempt(self) -> int:
        return self.record.attempt

    @property
    def max_attempts(self) -> int:
        return self.record.max_attempts

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def data(self) -> dict[str, Any]:
        return self.record.data

    def progress(self, value: Any) -> None:
        """Report progress (0-100 or any JSON value). Raises JobCancelled once cancelled."""
        self.check_cancelled()
        self._report_progress(self, encode(value, what="progress", limit=64 * 1024))

    def check_cancelled(self) -> None:
        """Long sync handlers call this now and then to honour a cancel (also after a hard
        timeout or a shutdown that took the job back, so the thread stops early)."""
        if self.cancel_requested or self.released:
            raise JobCancelled(f"job {self.id} was cancelled or taken back")


def current_job() -> JobContext:
    """The job this handler runs for. Raises RuntimeError outside a handler."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_job() is only available inside a running job's handler")
    return ctx


def set_current(ctx: JobContext | None) -> None:
    _current.set(ctx)
