"""`Job`: a handle on a stored job, to read its state and wait for its result."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .model.errors import JobFailed, JobNotFound
from .model.job import AttemptError, JobRecord
from .model.states import FINISHED_STATES, JobState

if TYPE_CHECKING:
    from .app import Conveyor

_FIRST_POLL = 0.002
_MAX_POLL = 0.1


class Job:
    """What `enqueue` returns. `record` is the last snapshot read from the store."""

    def __init__(self, app: Conveyor, record: JobRecord) -> None:
        self.app = app
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def attempt(self) -> int:
        return self.record.attempt

    @property
    def progress(self) -> Any:
        return self.record.progress

    @property
    def errors(self) -> tuple[AttemptError, ...]:
        return self.record.errors

    def refresh(self) -> Job:
        record = self.app.admin.get_job(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} no longer exists (pruned?)")
        self.record = record
        return self

    def _outcome(self) -> Any:
        if self.record.state == JobState.COMPLETED:
            return self.record.result
        raise JobFailed(self.id, self.record.state.value, self.record.last_error)

    def result(self, timeout: float | None = None) -> Any:
        """Wait until the job finishes; return its result or raise `JobFailed`.

        Raises TimeoutError if it has not finished within `timeout` seconds (None: forever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while self.refresh().state not in FINISHED_STATES:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {self.state.value} after {timeout} s")
            time.sleep(
                pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            )
            pause = min(pause * 2, _MAX_POLL)
        return self._outcome()

    async def result_async(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while (await asyncio.to_thread(self.refresh)).state not in FINISHED_STATES:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {self.state.value} after {timeout} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)
        return self._outcome()

    def cancel(self) -> Job:
        """Cancel: a pending job at once, a running one cooperatively."""
        self.record = self.app.admin.cancel_job(self.id)
        return self

    def retry(self) -> Job:
        """Run a failed or cancelled job again, with one more attempt allowed."""
        self.record = self.app.admin.retry_job(self.id)
        return self

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} {self.state.value}>"
