"""The one boundary above the store: every state change the engine or an admin call applies
passes through `ChangeFeed.publish`, so events, statistics, flows and hooks have a single
place to listen (`app.changes.subscribe(...)`).

Listeners run on the thread that applied the change, after the store committed it; a listener
that raises is logged and never undoes or blocks the change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from .backends.base import JobChange

log = logging.getLogger("conveyor.changes")

ChangeListener = Callable[[Sequence[JobChange]], None]


class ChangeFeed:
    """Fan committed job changes out to listeners (thread-safe)."""

    def __init__(self) -> None:
        self._listeners: tuple[ChangeListener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Hear every batch of changes from now on; call the returned function to stop."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def publish(self, changes: Sequence[JobChange]) -> None:
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("a job change listener failed; the change itself is stored")
