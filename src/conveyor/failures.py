"""Logging a failed store call: an outage is one line per failure, a bug keeps its traceback.

During an outage every loop (claims, leases, acks, services) fails again and again; a full
traceback each time buries the one line that says what is wrong.
"""

from __future__ import annotations

import logging
import sys

from .model.errors import StoreUnavailable


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Call from an `except` block: ERROR with the reason for an unreachable store, else
    ERROR with the traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, StoreUnavailable):
        logger.error(message + ": %s", *args, exc)
    else:
        logger.exception(message, *args)
