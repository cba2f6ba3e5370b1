"""Input the stores would disagree on is refused in the model, the same way on every store.

Each case runs on every store and expects the exact same exception type and message there,
and that nothing was stored: the check runs when the job (or the attempt's result) is built,
before any store sees it. A handler's result or progress that no store can keep fails the
attempt with a clear, stored error instead of an outcome the store refuses again and again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import pytest

from conveyor import Conveyor, JobState, PayloadError, StoreError, current_job
from conveyor.model.errors import RetryAfter
from conveyor.model.priority import PRIORITY_MAX, PRIORITY_MIN
from engine.helpers import run_burst

from .factory import new_job

PRIORITY_RANGE = "priority must be an integer from -2147483648 to 2147483647"
NUL = "contains a NUL character (\\x00), which PostgreSQL cannot store"


def _nothing_stored(app: Conveyor) -> None:
    assert app.admin.list_jobs(limit=100) == []
    assert app.admin.queue_stats() == []


def _app_with_task(make_app: Any, **task_options: Any) -> tuple[Conveyor, Any]:
    app = make_app()

    @app.task(**task_options)
    def handler(**data: Any) -> None:
        return None

    return app, handler


# enqueue: refused before any store sees the job -------------------------------------------
@dataclasses.dataclass(frozen=True)
class Refused:
    options: dict[str, Any]
    error: type[Exception]
    message: str
    """The exact message, or its start when it ends with `...`."""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


FAR = dt.datetime(2300, 1, 1, tzinfo=dt.UTC)
REFUSED = {
    "NUL in a data value": Refused(
        {}, PayloadError, f"data of task 'handler'['note'][1] {NUL}...", {"note": ["ok", "a\x00b"]}
    ),
    "NUL in a data key": Refused(
        {}, PayloadError, f"data of task 'handler' key 'a\\x00' {NUL}...", {"a\x00": 1}
    ),
    "integer beyond 64 bits in data": Refused(
        {},
        PayloadError,
        "data of task 'handler'['n'] is an integer beyond 64 bits; pass it as a string",
        {"n": 2**64},
    ),
    "lone surrogate in data": Refused(
        {},
        PayloadError,
        "data of task 'handler'['path'] is not valid Unicode text...",
        {"path": "\udcff"},
    ),
    "priority 2**31": Refused({"priority": 2**31}, ValueError, f"{PRIORITY_RANGE}..."),
    "priority below -2**31": Refused(
        {"priority": -(2**31) - 1}, ValueError, f"{PRIORITY_RANGE}..."
    ),
    "priority 10**30": Refused({"priority": 10**30}, ValueError, f"{PRIORITY_RANGE}..."),
    "priority True": Refused({"priority": True}, ValueError, "priority must be an integer..."),
    "priority 1.5": Refused({"priority": 1.5}, ValueError, "priority must be an integer..."),
    "max_attempts 2**31": Refused(
        {"max_attempts": 2**31},
        ValueError,
        "max_attempts must be an integer from 1 to 2147483647, not 2147483648",
    ),
    "max_attempts 0": Refused(
        {"max_attempts": 0}, ValueError, "max_attempts must be an integer..."
    ),
    "timeout inf": Refused(
        {"timeout": math.inf},
        ValueError,
        "timeout must be a finite number of seconds > 0 (or None), not inf",
    ),
    "timeout NaN": Refused({"timeout": math.nan}, ValueError, "timeout must be..."),
    "delay NaN": Refused(
        {"delay": math.nan},
        ValueError,
        "run_at (the due time, from delay or run_at) must be a Unix time from 0 to 9999999999 "
        "(2286-11-20), not nan",
    ),
    "delay inf": Refused({"delay": math.inf}, ValueError, "run_at (the due time, from delay..."),
    "run_at inf": Refused({"run_at": math.inf}, ValueError, "run_at (the due time, from delay..."),
    "run_at after 2286": Refused(
        {"run_at": FAR}, ValueError, "run_at (the due time, from delay..."
    ),
    "key not a string": Refused({"key": 42}, ValueError, "key must be a string, not int"),
    "empty key": Refused({"key": ""}, ValueError, "key must not be empty"),
    "key with NUL": Refused({"key": "k\x00"}, ValueError, f"key 'k\\x00' {NUL}..."),
    "key over 1 KiB": Refused(
        {"key": "é" * 600},
        ValueError,
        "key is 1,200 bytes long (UTF-8), over the 1,024-byte limit that every store can index",
    ),
    "queue with NUL": Refused({"queue": "q\x00"}, ValueError, f"queue 'q\\x00' {NUL}..."),
    "queue over 255 bytes": Refused({"queue": "q" * 256}, ValueError, "queue is 256 bytes long..."),
    "job id with NUL": Refused({"job_id": "id\x00"}, ValueError, f"job id 'id\\x00' {NUL}..."),
}


def _check_refusal(raised: pytest.ExceptionInfo[Exception], case: Refused) -> None:
    assert type(raised.value) is case.error
    if case.message.endswith("..."):
        assert str(raised.value).startswith(case.message[:-3]), str(raised.value)
    else:
        assert str(raised.value) == case.message


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_enqueue_refuses_what_a_store_could_not_keep(make_app, case: Refused) -> None:
    app, handler = _app_with_task(make_app)
    with pytest.raises(Exception) as raised:
        handler.options(**case.options).enqueue(**case.data)
    _check_refusal(raised, case)
    with pytest.raises(Exception) as by_name:
        app.enqueue("handler", case.data, **case.options)
    assert (type(by_name.value), str(by_name.value)) == (type(raised.value), str(raised.value))
    _nothing_stored(app)


def test_the_edges_of_the_priority_range_are_stored_and_claimed_in_order(make_app) -> None:
    app, handler = _app_with_task(make_app)
    low = handler.options(priority=PRIORITY_MAX).enqueue()
    high = handler.options(priority=PRIORITY_MIN).enqueue()
    assert [app.get_job(j.id).record.priority for j in (low, high)] == [PRIORITY_MAX, PRIORITY_MIN]
    claimed = app.backend.job_claim(_claim(limit=2))
    assert [r.id for r in claimed] == [high.id, low.id]


def _claim(limit: int) -> Any:
    from conveyor.backends.base import ClaimParams

    return ClaimParams(queues=("default",), limit=limit, worker_id="w", lease_seconds=30.0)


def test_a_job_built_by_hand_is_checked_before_any_store_sees_it(backend) -> None:
    """`NewJob` itself checks: the stores never get a value only some of them keep."""
    with pytest.raises(ValueError, match=PRIORITY_RANGE):
        new_job(priority=2**31)
    with pytest.raises(PayloadError, match="NUL character"):
        dataclasses.replace(new_job(), data=b'{"a":"\\u0000"}')
    kept = new_job(data={"text": "a literal \\u0000 is six characters"})
    backend.job_insert_many([kept])
    assert backend.job_get(kept.id).data == {"text": "a literal \\u0000 is six characters"}


# outcomes: a result or progress no store can keep fails the attempt -----------------------
def _run_one(app: Conveyor, handler: Any) -> Any:
    job = handler.enqueue()
    run_burst(app)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED, record
    return record


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        ({"text": "a\x00b"}, f"PayloadError: result['text'] {NUL}"),
        ("x" * (1024 * 1024), "PayloadError: result is 1,048,578 bytes, over the 1,048,576-byte"),
    ],
    ids=["NUL in the result", "result over the payload limit"],
)
def test_a_result_no_store_can_keep_fails_the_attempt(make_app, returned, error) -> None:
    app = make_app()

    @app.task(max_attempts=2, backoff=0)
    def produce() -> Any:
        return returned

    record = _run_one(app, produce)
    assert record.attempt == 2  # each attempt failed once, then the job did: no endless rerun
    assert [e.error[: len(error)] for e in record.errors] == [error, error]
    assert record.result is None


def test_progress_no_store_can_keep_fails_the_attempt(make_app) -> None:
    app = make_app()

    @app.task(max_attempts=1)
    def report() -> None:
        current_job().progress({"stage": "\x00"})

    record = _run_one(app, report)
    assert [e.error for e in record.errors] == [
        f"PayloadError: progress['stage'] {NUL}; remove it or encode the value (base64, say)"
    ]
    assert record.progress is None


def test_an_error_text_with_nul_is_stored_escaped(make_app) -> None:
    app = make_app()

    @app.task(max_attempts=1)
    def fail() -> None:
        raise RuntimeError("bad byte \x00 here")

    record = _run_one(app, fail)
    assert [e.error for e in record.errors] == ["RuntimeError: bad byte \\x00 here"]


def test_retry_after_refuses_seconds_that_are_not_a_time() -> None:
    for seconds in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="RetryAfter takes a finite number of seconds"):
            RetryAfter(seconds)


# the app -------------------------------------------------------------------------------------
def test_a_bad_store_url_fails_when_the_app_is_built() -> None:
    with pytest.raises(StoreError) as raised:
        Conveyor("bogus://x")
    assert str(raised.value).startswith("unsupported store URL 'bogus://x'; use sqlite:///")
    app = Conveyor("sqlite:///unused.db")
    with pytest.raises(StoreError, match="unsupported store URL 'nope://'"):
        app.use_url("nope://")


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_a_bad_payload_limit_fails_when_the_app_is_built(limit) -> None:
    with pytest.raises(ValueError, match="payload_limit must be"):
        Conveyor("sqlite:///unused.db", payload_limit=limit)
