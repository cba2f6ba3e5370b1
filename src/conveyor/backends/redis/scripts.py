"""The Redis store's Lua scripts, and how their arguments and answers are encoded.

Each script is a file under `scripts/`: `queue/*.lua` change one queue (its nine keys, one
hash tag), `store/*.lua` the store-wide keys (or, for the bulk insert, several queues at once).
`includes/lib.lua` (helpers) is prepended to every script, `includes/queue.lua` (binding the
queue the KEYS name) to the queue scripts. redis-py calls them by SHA and loads a script again
when the server lost it (NOSCRIPT after a restart or SCRIPT FLUSH).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

from redis.commands.core import Script

from ...model.codec import decode
from ...model.job import JobRecord
from ...model.states import JobState
from ..base import JobChange
from ..rows import record_from_row

_ROOT = resources.files(__package__ or "conveyor.backends.redis") / "scripts"


def _sources(folder: str, prelude: str) -> dict[str, str]:
    return {
        item.name.removesuffix(".lua"): prelude + item.read_text()
        for item in (_ROOT / folder).iterdir()
        if item.name.endswith(".lua")
    }


def _scripts() -> dict[str, Script]:
    lib = (_ROOT / "includes" / "lib.lua").read_text() + "\n"
    queue = lib + (_ROOT / "includes" / "queue.lua").read_text() + "\n"
    sources = _sources("queue", queue) | _sources("store", lib)
    # Bytes need no client to compute the SHA; every call passes its client (or pipeline).
    return {name: Script(cast(Any, None), text.encode()) for name, text in sources.items()}


SCRIPTS = _scripts()

_FLOATS = ("run_at", "enqueued_at", "timeout", "started_at", "finished_at", "lease_expires_at")
_INTS = ("priority", "attempt", "max_attempts")
_TEXTS = ("id", "task", "queue", "state", "key", "worker_id")
_JSON = ("data", "backoff", "progress", "result")


def opt(value: object) -> str:
    """An optional script argument: '' for none, else '=' and the value."""
    return "" if value is None else f"={value}"


def num(value: float) -> str:
    return repr(float(value))


def when(now: float | None) -> str:
    """A time argument: '' lets the script read the store's clock (TIME)."""
    return "" if now is None else repr(float(now))


def record(flat: Sequence[str]) -> JobRecord:
    """A JobRecord from a job hash as a Lua script returns it (field, value, field, ...)."""
    return record_from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def record_from_hash(fields: dict[str, str]) -> JobRecord:
    row: dict[str, Any] = {name: fields.get(name) for name in _TEXTS + _JSON}
    for name in _FLOATS:
        row[name] = None if fields.get(name) is None else float(fields[name])
    for name in _INTS:
        row[name] = int(fields[name])
    row["errors"] = fields.get("errors", "[]")
    row["cancel_requested"] = fields.get("cancel_requested") == "1"
    row["snoozes"] = int(fields.get("snoozes") or 0)
    return record_from_row(row, decode)


_STATES = {state.value: state for state in JobState}
_FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
_ACTIVE = JobState.ACTIVE


def changes(flat: Sequence[Any], queue: str) -> list[JobChange]:
    """The JobChanges a script returned: 7 fields each (see `change` in lib.lua), all from
    ACTIVE. (On the path of every acknowledgement: kept lean.)"""
    found = []
    for i in range(0, len(flat), 7):
        job_id, task, state, attempt, at, run_at, started_at = flat[i : i + 7]
        to_state = _STATES[state]
        at_time = float(at)
        found.append(
            JobChange(
                job_id,
                queue,
                task,
                _ACTIVE,
                to_state,
                attempt,
                at_time,
                float(run_at) if run_at else None,
                float(started_at) if started_at else None,
                at_time if to_state in _FINISHED else None,
            )
        )
    return found
