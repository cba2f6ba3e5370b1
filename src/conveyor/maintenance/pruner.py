"""Delete finished jobs past their retention (completed 7 days, failed 30 by default)."""

from __future__ import annotations

import logging
import time

from ..backends.base import Backend, PruneParams

log = logging.getLogger("conveyor.maintenance")


def prune_finished(backend: Backend, keep_completed: float, keep_failed: float) -> int:
    now = time.time()
    removed = backend.job_prune(
        PruneParams(completed_before=now - keep_completed, failed_before=now - keep_failed)
    )
    if removed:
        log.info("pruned %d finished jobs past retention", removed)
    return removed
