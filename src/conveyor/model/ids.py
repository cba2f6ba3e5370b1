"""Job ids: ULIDs, so ids sort by creation time and need no coordination."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
"""Every 10-bit value as two Crockford base32 characters: 8 lookups encode 80 bits."""
_last_ms = -1
_last_prefix = ""
_last_random = 0


def _encode(value: int, chars: int) -> str:
    """`value` as `chars` (even) base32 characters, most significant first."""
    pairs = _PAIRS
    return "".join(pairs[(value >> shift) & 1023] for shift in range(5 * (chars - 2), -1, -10))


def new_job_id() -> str:
    """A 26-character Crockford base32 ULID: 48 bits of milliseconds, 80 random bits.

    Monotonic within a process: ids made in the same millisecond (a bulk enqueue) count up
    from one random start, so they sort in creation order.
    """
    global _last_ms, _last_prefix, _last_random
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:  # the time part changes once per millisecond: encode it once
        _last_ms, _last_prefix = ms, _encode(ms, 10)
        _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
    else:
        _last_random += 1
    return _last_prefix + _encode(_last_random, 16)
