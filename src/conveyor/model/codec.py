"""JSON codec for job data and results: strict plain JSON, fast (orjson), size-limited."""

from __future__ import annotations

import math
from typing import Any

import orjson

from .errors import PayloadError

DEFAULT_PAYLOAD_LIMIT = 1024 * 1024
"""Job data above 1 MiB is refused: pass a reference (a path, a URL) instead."""


def _find_non_json(value: Any, path: str) -> str | None:
    """Return a description of the first value that plain JSON cannot carry, or None.

    orjson would silently turn datetimes, UUIDs and dataclasses into strings or objects that
    come back as something else, so we accept only what round-trips unchanged.
    """
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r} (not finite)"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_non_json(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key of type {type(key).__name__} (keys must be str)"
            found = _find_non_json(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path} is a {type(value).__name__}"


def encode(value: Any, *, what: str, limit: int | None = None) -> bytes:
    """Encode `value` as JSON or raise PayloadError naming what was wrong and what to do."""
    problem = _find_non_json(value, what)
    if problem:
        raise PayloadError(
            f"{problem}, which is not JSON-serialisable; "
            "pass plain JSON values (str, int, float, bool, None, list, dict with str keys)"
        )
    raw = orjson.dumps(value)
    if limit is not None and len(raw) > limit:
        raise PayloadError(
            f"{what} is {len(raw):,} bytes, over the {limit:,}-byte limit; "
            "store large content elsewhere and pass a reference (a path or a URL)"
        )
    return raw


def encode_result(value: Any) -> bytes:
    """Encode a handler's return value; anything not plain JSON is stored as its repr."""
    try:
        return encode(value, what="result")
    except (PayloadError, TypeError):  # TypeError: a str orjson refuses (lone surrogate)
        return orjson.dumps(repr(value).encode("utf-8", "backslashreplace").decode("utf-8"))


def decode(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)
