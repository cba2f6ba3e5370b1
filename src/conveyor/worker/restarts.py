"""When the supervisor starts a child again, and when it gives up.

Pure bookkeeping over what the loop observed, so that the rules read in one place:
- a child that crashes young is restarted with backoff (0.5 s, 1 s, 2 s, ... up to 30 s); one
  that lived STABLE_AFTER seconds resets its slot's backoff;
- children that die before they start, MAX_START_FAILURES in a row, mean a broken app: the
  supervisor gives up. A child that could not start because the store was unreachable is not
  a broken app: it is retried with a short capped backoff, for as long as it takes;
- a child stopped by a signal from outside is replaced after OUTSIDE_STOP_DELAY, time enough
  for the supervisor to get its own share of a signal sent to the whole process group.
"""

from __future__ import annotations

import time

STABLE_AFTER = 10.0
"""A child that lived this long resets its slot's crash backoff."""
MAX_CRASH_DELAY = 30.0
MAX_START_FAILURES = 5
"""Children that die before they start, in a row, after which the supervisor gives up."""
MAX_OUTAGE_DELAY = 5.0
"""The longest wait before starting again a child that could not reach the store."""
OUTSIDE_STOP_DELAY = 1.0


class RestartPolicy:
    """Per-slot restart times and the run of failed starts (times are time.monotonic())."""

    def __init__(self) -> None:
        self._crashes: dict[int, int] = {}
        self._outages: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self.start_failures = 0
        """Children in a row that died before they started (store outages not counted)."""

    def may_start(self, slot: int, now: float) -> bool:
        return self._restart_at.get(slot, 0.0) <= now

    def started(self) -> None:
        """A child said hello: the app can start."""
        self.start_failures = 0

    @property
    def give_up(self) -> bool:
        return self.start_failures >= MAX_START_FAILURES

    def crashed(self, slot: int, lived: float, *, started: bool, store_down: bool) -> float:
        """A child died unasked; returns the delay before its slot is filled again.

        `store_down`: it never started and the store could not be reached (its own exit code
        said so, or our store calls fail): retried without counting toward giving up."""
        if not started and store_down:
            outages = self._outages.get(slot, 0) + 1
            self._outages[slot] = outages
            return self._delay(slot, min(MAX_OUTAGE_DELAY, 0.5 * 2 ** (outages - 1)))
        self._outages.pop(slot, None)
        if not started:
            self.start_failures += 1
        crashes = 0 if lived >= STABLE_AFTER else self._crashes.get(slot, 0) + 1
        self._crashes[slot] = crashes
        delay = 0.0 if crashes == 0 else min(MAX_CRASH_DELAY, 0.5 * 2 ** (crashes - 1))
        return self._delay(slot, delay)

    def stopped_from_outside(self, slot: int) -> float:
        return self._delay(slot, OUTSIDE_STOP_DELAY)

    def reset(self, slot: int) -> None:
        """The slot's child started properly: outage backoff starts over."""
        self._outages.pop(slot, None)

    def _delay(self, slot: int, delay: float) -> float:
        self._restart_at[slot] = time.monotonic() + delay
        return delay
