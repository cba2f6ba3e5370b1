"""Rescue jobs whose worker died: their lease ran out without a heartbeat."""

from __future__ import annotations

import logging
import time

from ..backends.base import Backend, RescueResult

log = logging.getLogger("conveyor.maintenance")


def rescue_expired(backend: Backend) -> RescueResult:
    """One idempotent store statement, so every worker can run it without a leader."""
    result = backend.job_rescue_expired(time.time())
    if result.requeued or result.failed or result.cancelled:
        log.warning(
            "rescued jobs of lost workers: %d requeued, %d failed (out of attempts), %d cancelled",
            result.requeued,
            result.failed,
            result.cancelled,
        )
    return result
