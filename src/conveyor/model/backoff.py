"""Retry delays: exponential (default, with jitter), linear, fixed, or a callable."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BackoffKind = Literal["exponential", "linear", "fixed"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt n+1 after attempt n failed.

    exponential: base * 2**(n-1); linear: base * n; fixed: base. Capped at `cap`,
    then spread by +-`jitter` (a fraction) so that a burst of failures does not retry in step.
    """

    kind: BackoffKind = "exponential"
    base: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "linear", "fixed"):
            raise ValueError(
                f"unknown backoff {self.kind!r}; use 'exponential', 'linear', 'fixed', "
                "a number of seconds or a callable"
            )
        if self.base < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff base and cap must be >= 0 and jitter within 0..1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        n = max(1, attempt)
        if self.kind == "exponential":
            raw = self.base * 2.0 ** min(n - 1, 62)
        elif self.kind == "linear":
            raw = self.base * n
        else:
            raw = self.base
        raw = min(raw, self.cap)
        if self.jitter:
            raw *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, raw)

    def to_spec(self) -> dict[str, object]:
        return {"kind": self.kind, "base": self.base, "cap": self.cap, "jitter": self.jitter}

    @classmethod
    def from_spec(cls, spec: dict[str, object]) -> Backoff:
        return cls(
            kind=spec.get("kind", "exponential"),  # type: ignore[arg-type]
            base=float(spec.get("base", 2.0)),  # type: ignore[arg-type]
            cap=float(spec.get("cap", 3600.0)),  # type: ignore[arg-type]
            jitter=float(spec.get("jitter", 0.25)),  # type: ignore[arg-type]
        )


BackoffLike = Backoff | BackoffKind | float | int | Callable[[int], float]


def as_backoff(value: BackoffLike) -> Backoff | Callable[[int], float]:
    """Accept the friendly forms: a kind name, a number of seconds (fixed) or a callable."""
    if isinstance(value, Backoff):
        return value
    if isinstance(value, str):
        return Backoff(kind=value)
    if isinstance(value, bool):
        raise TypeError("backoff must be a kind name, seconds, a Backoff or a callable")
    if isinstance(value, int | float):
        return Backoff(kind="fixed", base=float(value), jitter=0.0)
    if callable(value):
        return value
    raise TypeError("backoff must be a kind name, seconds, a Backoff or a callable")
