"""Delete finished jobs past their retention (completed 7 days, failed 30 by default), in
bounded batches so that no statement runs long."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..backends.base import Backend, PruneParams

log = logging.getLogger("conveyor.maintenance")

BATCH = 1000
BATCH_PAUSE = 0.05
"""Seconds between two full batches: other writers get the table in between."""


def prune_finished(
    backend: Backend,
    keep_completed: float,
    keep_failed: float,
    *,
    limit: int = BATCH,
    pause: Callable[[float], object] | None = None,
) -> int:
    """Repeat bounded deletes while each deletes `limit` jobs; return how many in all.
    `pause(seconds)` yields between batches and returns True to stop early."""
    params = PruneParams(keep_completed=keep_completed, keep_failed=keep_failed, limit=limit)
    removed = 0
    while True:
        batch = backend.job_prune(params)
        removed += batch
        if batch < limit or (pause is not None and pause(BATCH_PAUSE)):
            break
    if removed:
        log.info("pruned %d finished jobs past retention", removed)
    return removed
