"""A periodic maintenance service: one thread (so one store connection) per service, running
its step only while this worker leads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..failures import log_failure
from .leader import Leadership

log = logging.getLogger("conveyor.maintenance")


class PeriodicService:
    """Runs `step` every `interval` seconds while leading; the first run of each term comes
    `first_delay` seconds after this worker took the lead."""

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        interval: float,
        leadership: Leadership,
        *,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._first_delay = first_delay
        self._leadership = leadership
        self._thread = threading.Thread(target=self._run, name=f"conveyor-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        term: int | None = None
        due = 0.0
        while True:
            current = self._leadership.wait_for_lead()
            if current is None:
                return
            if current != term:
                term, due = current, time.monotonic() + self._first_delay
            wait = due - time.monotonic()
            if wait > 0:
                self._leadership.sleep(wait)
                continue
            try:
                self._step()
            except Exception:
                log_failure(log, "%s failed; will retry in %g s", self.name, self._interval)
            due = time.monotonic() + self._interval
