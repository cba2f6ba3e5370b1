"""JSON codec for job data and results: strict plain JSON, fast (orjson), size-limited.

Everything encoded here is storable on every store: besides what JSON cannot carry, NUL
characters are refused (PostgreSQL `jsonb` cannot hold `\\u0000`), so data, results and
progress fail the same way everywhere, before a store sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import PayloadError
from .limits import NUL_HINT

DEFAULT_PAYLOAD_LIMIT = 1024 * 1024
"""Job data and results above 1 MiB are refused: pass a reference (a path, a URL) instead."""

_PLAIN_JSON = "pass plain JSON values (str, int, float, bool, None, list, dict with str keys)"
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
"""The integers orjson encodes."""


@dataclass(frozen=True, slots=True)
class _Problem:
    message: str
    not_json: bool
    """The value is not plain JSON (a result is then stored as its repr); else it is JSON
    that no store may keep (a NUL character)."""


def _find_problem(value: Any, path: str) -> _Problem | None:
    """The first value that plain JSON cannot carry or a store would refuse, or None.

    orjson would silently turn datetimes, UUIDs and dataclasses into strings or objects that
    come back as something else, so we accept only what round-trips unchanged.
    """
    if isinstance(value, str):
        return _nul(path) if "\x00" in value else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return _Problem(f"{path} is an integer beyond 64 bits; pass it as a string", True)
    if isinstance(value, float):
        return None if math.isfinite(value) else _not_json(f"{path} is {value!r} (not finite)")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_problem(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                return _not_json(f"{path} has a key of type {kind} (keys must be str)")
            found = _nul(f"{path} key {key!r}") if "\x00" in key else None
            found = found or _find_problem(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return _not_json(f"{path} is a {type(value).__name__}")


def _not_json(problem: str) -> _Problem:
    return _Problem(f"{problem}, which is not JSON-serialisable; {_PLAIN_JSON}", True)


def _nul(path: str) -> _Problem:
    return _Problem(f"{path} contains a NUL character (\\x00), {NUL_HINT}", False)


def _dumps(value: Any, what: str) -> bytes:
    """orjson, its refusals (text with lone surrogates, nesting too deep) as PayloadError."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        path = _bad_text(value, what)
        if path is None:
            raise PayloadError(f"{what} cannot be encoded as JSON: {exc}") from None
        raise PayloadError(
            f"{path} is not valid Unicode text (a lone surrogate, as from undecodable bytes); "
            "decode such bytes properly or pass them as base64"
        ) from None


def _bad_text(value: Any, path: str) -> str | None:
    """Where a str that UTF-8 cannot encode is, if anywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items: Any = ()
    if isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, dict):
        for key in value:
            if _bad_text(key, path) is not None:
                return f"{path} key {key!r}"
        items = ((f"{path}[{key!r}]", item) for key, item in value.items())
    for where, item in items:
        found = _bad_text(item, where)
        if found:
            return found
    return None


def _check_size(raw: bytes, what: str, limit: int | None) -> bytes:
    if limit is not None and len(raw) > limit:
        raise PayloadError(
            f"{what} is {len(raw):,} bytes, over the {limit:,}-byte limit; "
            "store large content elsewhere and pass a reference (a path or a URL)"
        )
    return raw


def encode(value: Any, *, what: str, limit: int | None = None) -> bytes:
    """Encode `value` as JSON or raise PayloadError naming what was wrong and what to do."""
    problem = _find_problem(value, what)
    if problem:
        raise PayloadError(problem.message)
    return _check_size(_dumps(value, what), what, limit)


def encode_result(value: Any, *, limit: int | None = DEFAULT_PAYLOAD_LIMIT) -> bytes:
    """Encode a handler's return value; anything not plain JSON is stored as its repr.

    Raises PayloadError for a result no store may keep (a NUL character, or over `limit`:
    pass the app's `payload_limit`), so the attempt fails with that error instead of the
    store refusing the outcome later.
    """
    problem = _find_problem(value, "result")
    if problem is not None and not problem.not_json:
        raise PayloadError(problem.message)
    try:
        raw = _dumps(value, "result") if problem is None else _as_repr(value)
    except PayloadError:  # a str with lone surrogates: its repr escapes them
        raw = _as_repr(value)
    return _check_size(raw, "result", limit)


def _as_repr(value: Any) -> bytes:
    return orjson.dumps(repr(value).encode("utf-8", "backslashreplace").decode("utf-8"))


def decode(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)
