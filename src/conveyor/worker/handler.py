"""What the engine needs from a registered handler (a `Task` is one), so that the engine
never imports the surface that defines tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..model.backoff import BackoffLike


class Handler(Protocol):
    @property
    def func(self) -> Callable[..., Any]:
        """The user's function, called with the job's data by name."""

    @property
    def is_async(self) -> bool: ...

    @property
    def soft_timeout(self) -> float | None:
        """Seconds after which a still-running attempt is logged (nothing is stopped)."""

    @property
    def timeout(self) -> float | None:
        """The attempt's time limit when the job carries none."""

    @property
    def backoff(self) -> BackoffLike:
        """Retry delays when the job carries none (a callable is never stored)."""

    @property
    def max_snoozes(self) -> int:
        """How often a job may snooze before it fails."""
