"""When the supervisor adds or removes a child: queue depth and wait time, with cooldowns.

Pure decisions over figures the supervisor passes in, so that they can be tested without
processes. Every decision carries its reason; the last ones are kept for worker stats.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

log = logging.getLogger("conveyor.supervisor")

QueueFigures = Callable[[], tuple[int, float | None]]
"""Returns (jobs waiting, seconds the oldest has waited or None); raises LookupError when
it has no recent figures (the store did not answer)."""


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Thresholds and cooldowns. Each can be set by an environment variable named
    CONVEYOR_SCALE_<FIELD> (e.g. CONVEYOR_SCALE_UP_AGE=2)."""

    interval: float = 2.0
    """Seconds between looks at the queues."""
    up_waiting: int | None = None
    """Add a child when this many jobs wait (default: one child's concurrency)."""
    up_age: float = 5.0
    """... or when the oldest waiting job has waited this long (seconds)."""
    up_cooldown: float = 10.0
    """No change for this long after any change, before adding."""
    down_idle: float = 30.0
    """Remove a child after the queues were idle this long: nothing waiting, and the busy
    jobs would fit in one child fewer."""
    down_cooldown: float = 30.0
    """No change for this long after any change, before removing."""

    @classmethod
    def from_env(cls) -> ScalePolicy:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"CONVEYOR_SCALE_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.name == "up_waiting" else float(raw)
            except ValueError:
                raise ValueError(
                    f"CONVEYOR_SCALE_{f.name.upper()}={raw!r} is not a number"
                ) from None
        return cls(**values)


class Autoscaler:
    def __init__(
        self, policy: ScalePolicy, min_processes: int, max_processes: int, concurrency: int
    ) -> None:
        self.policy = policy
        self.min_processes = min_processes
        self.max_processes = max_processes
        self.concurrency = concurrency
        self.decisions: deque[dict[str, Any]] = deque(maxlen=20)
        self._last_look = float("-inf")
        self._last_change = float("-inf")
        self._idle_since: float | None = None
        self._blind = False
        """The last look found no queue figures (the store did not answer)."""

    def decide(
        self, now: float, current: int, busy: int, figures: QueueFigures
    ) -> tuple[int, str] | None:
        """The new number of children and why, or None to keep `current`."""
        if self.min_processes == self.max_processes or now - self._last_look < self.policy.interval:
            return None
        self._last_look = now
        try:
            waiting, oldest_age = figures()
        except LookupError as exc:  # the store is down: said once, until figures come back
            if not self._blind:
                log.warning("autoscaling paused, keeping %d processes: %s", current, exc)
            self._blind = True
            return None
        except Exception:
            log.exception("autoscaling could not read the queues; keeping %d processes", current)
            return None
        if self._blind:
            log.info("autoscaling resumed: the queue figures are fresh again")
            self._blind = False
        since_change = now - self._last_change
        if current < self.max_processes and since_change >= self.policy.up_cooldown:
            threshold = self.policy.up_waiting or self.concurrency
            reason = None
            if waiting >= threshold:
                reason = f"{waiting} jobs waiting (threshold {threshold})"
            elif oldest_age is not None and oldest_age >= self.policy.up_age:
                reason = (
                    f"the oldest waiting job has waited {oldest_age:.1f} s "
                    f"(threshold {self.policy.up_age:g} s)"
                )
            if reason is not None:
                return self._change(now, current, current + 1, reason)
        idle = waiting == 0 and busy <= (current - 1) * self.concurrency
        if not idle:
            self._idle_since = None
            return None
        if self._idle_since is None:
            self._idle_since = now
        idle_for = now - self._idle_since
        if (
            current > self.min_processes
            and idle_for >= self.policy.down_idle
            and since_change >= self.policy.down_cooldown
        ):
            return self._change(now, current, current - 1, f"idle for {idle_for:.0f} s")
        return None

    def _change(self, now: float, current: int, new: int, reason: str) -> tuple[int, str]:
        self._last_change = now
        self._idle_since = None
        self.decisions.append({"at": now, "from": current, "to": new, "reason": reason})
        return new, reason
