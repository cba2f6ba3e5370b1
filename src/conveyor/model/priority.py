"""Named priority levels. Lower numbers run first; any integer in the range below is accepted."""

from __future__ import annotations

from enum import IntEnum

PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1
"""The range every store keeps (a 32-bit `integer` column on PostgreSQL); others are refused
when the job is built."""


class Priority(IntEnum):
    CRITICAL = 1
    HIGH = 3
    NORMAL = 5
    LOW = 7
    BACKGROUND = 10
