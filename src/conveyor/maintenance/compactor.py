"""Reclaim the space of finished work in the store's hot structures (PostgreSQL: VACUUM),
so claims stay fast. It runs on the leader's compactor thread only, so however long it
takes it holds up no claim, lease renewal or acknowledgement."""

from __future__ import annotations

import logging
import time

from ..backends.base import Backend

log = logging.getLogger("conveyor.maintenance")
_SLOW = 5.0


def compact(backend: Backend) -> None:
    started = time.monotonic()
    backend.store_compact()
    took = time.monotonic() - started
    if took >= _SLOW:
        log.info("store compaction took %.1f s", took)
