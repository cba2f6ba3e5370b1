"""Job states: the lifecycle every store implements the same way."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life. `failed` is the dead-letter set."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @classmethod
    def parse(cls, value: str) -> JobState:
        """Turn user input into a state, naming the valid ones when it is not one."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown job state {value!r}; use one of: {names}") from None


PENDING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.BLOCKED})
"""States a job waits in before it runs; a cancel takes effect at once here."""

UNIQUE_STATES = frozenset({*PENDING_STATES, JobState.ACTIVE})
"""While a job is in one of these, another job with its key is not created."""

FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
"""Terminal states; only a manual retry leaves `failed` or `cancelled`."""
