"""What every store can hold the same way, checked when a job is built (`NewJob`).

A value that one store takes and another refuses (or stores differently) is refused here,
before any store sees it, with the same error on all of them:

- PostgreSQL keeps `priority`, `max_attempts` and `attempt` in 32-bit `integer` columns; SQLite
  and Redis would take 2**31 and PostgreSQL would not.
- PostgreSQL `text` and `jsonb` refuse NUL characters (`\\x00`, JSON `\\u0000`).
- PostgreSQL indexes the queue, the key and the id: one btree entry holds ~2,700 bytes.
- Redis orders ready jobs by a fixed-width due time of 10 integer digits (until 2286).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import PayloadError
from .priority import PRIORITY_MAX, PRIORITY_MIN

if TYPE_CHECKING:
    from .job import NewJob

MAX_ATTEMPTS_LIMIT = 2**31 - 1
"""`max_attempts` is a 32-bit integer on PostgreSQL too."""
LATEST_DUE = 9_999_999_999.0
"""The latest due time (Unix seconds, 2286-11-20T17:46:39Z) every store orders correctly."""
MAX_NAME_BYTES = 255
"""Queue names, task names and job ids, in UTF-8 bytes."""
MAX_KEY_BYTES = 1024
"""Uniqueness keys, in UTF-8 bytes (indexed together with the queue name)."""

NUL_HINT = "which PostgreSQL cannot store; remove it or encode the value (base64, say)"


def check_new_job(job: NewJob) -> None:
    """Raise ValueError (PayloadError for the data) naming the first field that not every
    store would keep the same way. Runs for every job of a bulk enqueue: the common case is
    one expression, the slow path finds what is wrong."""
    p, m, r, e, key = job.priority, job.max_attempts, job.run_at, job.enqueued_at, job.key
    if (
        type(p) is int
        and PRIORITY_MIN <= p <= PRIORITY_MAX
        and type(m) is int
        and 1 <= m <= MAX_ATTEMPTS_LIMIT
        and type(r) is float
        and 0.0 <= r <= LATEST_DUE
        and type(e) is float
        and 0.0 <= e <= LATEST_DUE
        and job.timeout is None
        and key is None
        and (not job.custom_id or _plain_name(job.id))  # generated ids are plain ULIDs
        and _known_name(job.task)
        and _known_name(job.queue)
        and b"\\u0000" not in job.data
    ):
        return
    _check_name("job id", job.id, MAX_NAME_BYTES)
    _check_name("task name", job.task, MAX_NAME_BYTES)
    _check_name("queue", job.queue, MAX_NAME_BYTES)
    if key is not None:
        _check_name("key", key, MAX_KEY_BYTES)
    check_priority(p)
    check_max_attempts(m)
    check_due_time("run_at (the due time, from delay or run_at)", r)
    check_due_time("enqueued_at", e)
    if job.timeout is not None:
        check_timeout(job.timeout)
    if _has_nul(job.data):
        raise PayloadError(f"the data of task {job.task!r} contains a NUL character, {NUL_HINT}")


def check_priority(value: Any) -> None:
    if type(value) is int and PRIORITY_MIN <= value <= PRIORITY_MAX:
        return
    if not _is_int(value) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(
            f"priority must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX} "
            f"(lower runs first; every store keeps 32 bits), not {_show(value)}"
        )


def check_max_attempts(value: Any) -> None:
    if type(value) is int and 1 <= value <= MAX_ATTEMPTS_LIMIT:
        return
    if not _is_int(value) or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(
            f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}, not {_show(value)}"
        )


def check_timeout(value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"timeout must be a finite number of seconds > 0 (or None), not {_show(value)}"
        )


def check_due_time(what: str, value: Any) -> None:
    if type(value) is float and 0.0 <= value <= LATEST_DUE:
        return
    if not _is_number(value) or not 0 <= value <= LATEST_DUE:  # NaN fails both comparisons
        raise ValueError(
            f"{what} must be a Unix time from 0 to {LATEST_DUE:.0f} (2286-11-20), "
            f"not {_show(value)}"
        )


def storable_text(text: str) -> str:
    """`text` with NUL characters and lone surrogates escaped, so every store keeps it."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_KNOWN_NAMES: set[str] = set()
"""Task and queue names found plain: a bulk enqueue repeats a few names many times."""


def _known_name(value: Any) -> bool:
    if type(value) is str and value in _KNOWN_NAMES:
        return True
    if not _plain_name(value):
        return False
    if len(_KNOWN_NAMES) >= 10_000:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES.add(value)
    return True


def _plain_name(value: Any) -> bool:
    """The common case of a name: short ASCII text, not blank, no NUL."""
    return (
        type(value) is str
        and value.isascii()
        and 0 < len(value) <= MAX_NAME_BYTES
        and "\x00" not in value
        and not value.isspace()
    )


def _check_name(what: str, value: Any, max_bytes: int) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL character (\\x00), {NUL_HINT}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid Unicode (a lone surrogate)") from None
    if size > max_bytes:
        raise ValueError(
            f"{what} is {size:,} bytes long (UTF-8), over the {max_bytes:,}-byte limit "
            "that every store can index"
        )


def _has_nul(raw: bytes) -> bool:
    """Whether JSON text holds an escaped NUL (`\\u0000` after an even run of backslashes:
    an odd run is a literal backslash followed by the text `u0000`)."""
    start = 0
    while (at := raw.find(b"\\u0000", start)) >= 0:
        run = 0
        while at - run - 1 >= 0 and raw[at - run - 1] == ord("\\"):
            run += 1
        if run % 2 == 0:
            return True
        start = at + 1
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """The refused value, short: a 10**30 priority is named by its size, not 31 digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}… ({type(value).__name__})"
