"""Forget workers whose registry entry expired (they died without saying goodbye)."""

from __future__ import annotations

import logging

from ..backends.base import Backend

log = logging.getLogger("conveyor.maintenance")


def prune_registry(backend: Backend) -> int:
    removed = backend.worker_prune()
    if removed:
        log.info("forgot %d workers that stopped beating", removed)
    return removed
