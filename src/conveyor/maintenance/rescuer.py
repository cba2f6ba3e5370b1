"""Rescue jobs whose worker died: their lease ran out (by the store's clock) unrenewed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..backends.base import Backend, JobChange, RescueResult

log = logging.getLogger("conveyor.maintenance")


def rescue_expired(
    backend: Backend, publish: Callable[[Sequence[JobChange]], None]
) -> RescueResult:
    """One idempotent store statement; its changes are published once it returns."""
    result = backend.job_rescue_expired()
    publish(result.changes)
    if result.requeued or result.failed or result.cancelled:
        log.warning(
            "rescued jobs of lost workers: %d requeued, %d failed (out of attempts), %d cancelled",
            result.requeued,
            result.failed,
            result.cancelled,
        )
    return result
