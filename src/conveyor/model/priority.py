"""Named priority levels. Lower numbers run first; any integer is accepted."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    CRITICAL = 1
    HIGH = 3
    NORMAL = 5
    LOW = 7
    BACKGROUND = 10
