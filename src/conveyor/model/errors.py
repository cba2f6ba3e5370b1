"""Exceptions users raise in handlers or catch from the API."""

from __future__ import annotations

import math


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on its own."""


class PayloadError(ConveyorError, ValueError):
    """Job data that cannot be stored: not JSON, or larger than the limit."""


class StoreError(ConveyorError):
    """The store URL or file cannot be used."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (down, restarting, network): worth retrying, unlike
    a bad URL, password or schema."""


class JobNotFound(ConveyorError, LookupError):
    """No job has the given id."""


class InvalidTransition(ConveyorError):
    """An operation that the job's current state does not allow (retry a running job...)."""


class JobFailed(ConveyorError):
    """Raised by `Job.result()` when the job ended `failed` or `cancelled`."""

    def __init__(self, job_id: str, state: str, error: str | None) -> None:
        self.job_id = job_id
        self.state = state
        self.error = error
        super().__init__(f"job {job_id} ended {state}" + (f": {error}" if error else ""))


class NonRetryable(Exception):
    """Raise from a handler to fail the job at once, skipping remaining attempts."""


class RetryAfter(Exception):
    """Raise from a handler to retry after `seconds` (a rate-limited API, say)."""

    def __init__(self, seconds: float, message: str = "") -> None:
        self.seconds = float(seconds)
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"RetryAfter takes a finite number of seconds >= 0, not {seconds!r}")
        super().__init__(message or f"retry after {self.seconds:g}s")


class JobCancelled(Exception):
    """Raised inside a handler (from `progress()` or `check_cancelled()`) once a cancel arrived."""


class Snooze(Exception):
    """Raise from a handler to postpone the job by `seconds` without counting an attempt
    (waiting on something outside the job). Capped by the task's `max_snoozes`."""

    def __init__(self, seconds: float, message: str = "") -> None:
        self.seconds = float(seconds)
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"Snooze takes a finite number of seconds >= 0, not {seconds!r}")
        super().__init__(message or f"snoozed for {self.seconds:g}s")
