"""Run one attempt of one job and turn how it ended into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from ..backends.base import Outcome, OutcomeKind
from ..model.backoff import Backoff, as_backoff
from ..model.codec import DEFAULT_PAYLOAD_LIMIT, encode_result
from ..model.errors import JobCancelled, NonRetryable, RetryAfter, Snooze
from ..model.job import AttemptError, JobRecord
from ..model.limits import LATEST_DUE
from .context import JobContext, set_current
from .handler import Handler

log = logging.getLogger("conveyor.worker")
_MAX_TRACEBACK = 16_000
_DEFAULT_BACKOFF = Backoff()


class JobExecutor:
    """Knows the handlers and the thread pool; `run` executes one claimed job."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        worker_id: str,
        thread_pool: Executor,
        on_orphan_done: Callable[[JobContext], None],
        on_decided: Callable[[JobContext], None],
        on_running: Callable[[JobContext], None] | None = None,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
    ) -> None:
        self.handlers = handlers
        self.payload_limit = payload_limit
        """Results larger than this (encoded) fail their attempt, as enqueue refuses data."""
        self.worker_id = worker_id
        self.thread_pool = thread_pool
        self._on_orphan_done = on_orphan_done
        """Called (from the handler's thread) when an orphaned handler finally returns."""
        self._on_decided = on_decided
        self._on_running = on_running
        """Called (loop or handler thread) as a handler begins: its attempt counts from then."""
        """Called (on the loop) when a timed-out attempt's outcome is decided while its
        thread still runs: a burst worker need not wait for that thread."""
        self.threads_busy = 0
        """Sync handlers running now, including orphans."""
        self.orphaned_threads = 0
        """Sync handlers still running after their attempt was given up (lost lease,
        shutdown): a thread cannot be stopped, so each holds a pool thread until it returns."""
        self._lock = threading.Lock()

    async def run(self, ctx: JobContext) -> Outcome | None:
        """Execute and classify. None means the attempt was taken back (shutdown, lost lease):
        whoever took it back settles it."""
        job = ctx.record
        handler = self.handlers.get(job.task)
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            message = f"no handler for task {job.task!r} in this worker (it has: {known})"
            return self.failure(job, None, message, None)
        timeout = self.timeout_of(job)
        soft = handler.soft_timeout
        warn = None
        if soft is not None and (timeout is None or soft < timeout):
            warn = asyncio.get_running_loop().call_later(soft, _warn_soft_timeout, ctx, soft)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await self._call(handler, ctx)
            encoded = encode_result(result, limit=self.payload_limit)
            return self._outcome(job, "completed", result=encoded)
        except asyncio.CancelledError:
            if ctx.released:
                return None
            if ctx.cancel_requested:
                return self._outcome(job, "cancelled")
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the loop itself is going away
            return self.failure(
                job, handler, "CancelledError: the handler was cancelled", current_trace()
            )
        except TimeoutError:
            if deadline.expired():
                ctx.cancel_requested = True  # a sync handler still running stops at its next check
                outcome = self.failure(job, handler, f"timed out after {timeout:g} s", None)
                return await self._when_thread_returns(ctx, outcome)
            return self.failure(job, handler, _describe_current(), current_trace())
        except JobCancelled:
            return self._outcome(job, "cancelled")
        except NonRetryable:
            return self.failure(job, handler, _describe_current(), current_trace(), final=True)
        except RetryAfter as exc:
            return self.failure(job, handler, _describe_current(), None, delay=exc.seconds)
        except Snooze as exc:
            return self._snooze(job, handler, exc.seconds)
        except Exception:
            return self.failure(job, handler, _describe_current(), current_trace())
        finally:
            if warn is not None:
                warn.cancel()
            if self._call_running(ctx):
                self._orphan(ctx)

    async def _call(self, handler: Handler, ctx: JobContext) -> Any:
        # Each job runs in its own asyncio task, whose context is a private copy: no reset.
        set_current(ctx)
        if handler.is_async:
            ctx.started_at = time.monotonic()
            if self._on_running is not None:
                self._on_running(ctx)
            return await handler.func(**ctx.record.data)
        loop = asyncio.get_running_loop()
        ctx.thread_done = asyncio.Event()
        call: Callable[[], Any] = functools.partial(
            contextvars.copy_context().run, self._in_thread, handler.func, ctx, loop
        )
        return await loop.run_in_executor(self.thread_pool, call)

    def _in_thread(
        self, func: Callable[..., Any], ctx: JobContext, loop: asyncio.AbstractEventLoop
    ) -> Any:
        with self._lock:
            ctx.check_cancelled()  # taken back or timed out while waiting for a thread
            self.threads_busy += 1
            ctx.in_thread = True
            ctx.started_at = time.monotonic()
        if self._on_running is not None:
            self._on_running(ctx)
        try:
            return func(**ctx.record.data)
        finally:
            with self._lock:
                self.threads_busy -= 1
                ctx.in_thread = False
                if ctx.orphaned:
                    self.orphaned_threads -= 1
            if ctx.orphaned:
                self._on_orphan_done(ctx)  # its slot is free again
            done = ctx.thread_done
            if done is not None:
                # the loop may be closed by the time an orphaned thread returns
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(done.set)

    async def _when_thread_returns(self, ctx: JobContext, outcome: Outcome) -> Outcome | None:
        """A timed-out sync handler's thread cannot be stopped: the attempt ends (and its
        outcome is stored) only when it returns, so that the job's next attempt can never
        run beside it. Until then the job stays leased and its slot taken."""
        done = ctx.thread_done
        if done is None or not self._call_running(ctx):
            return outcome
        ctx.logger.warning(
            "job %s timed out but its sync handler could not be stopped (a thread cannot "
            "be); the job stays leased until the handler returns",
            ctx.id,
        )
        ctx.decided = outcome
        self._on_decided(ctx)
        try:
            await done.wait()
        except asyncio.CancelledError:
            if ctx.released:
                return None
            raise
        return outcome

    def take_back(self, ctx: JobContext) -> float | None:
        """Give the attempt up here (shutdown): its handler will not be started any more.
        Returns how long the handler has run, or None if it never started."""
        with self._lock:
            ctx.released = True
            return None if ctx.started_at is None else time.monotonic() - ctx.started_at

    def _call_running(self, ctx: JobContext) -> bool:
        with self._lock:
            return ctx.in_thread

    def _orphan(self, ctx: JobContext) -> None:
        with self._lock:
            if not ctx.in_thread or ctx.orphaned:
                return
            ctx.orphaned = True
            self.orphaned_threads += 1
        ctx.logger.warning("job %s was given up but its sync handler is still running", ctx.id)

    def _snooze(self, job: JobRecord, handler: Handler, seconds: float) -> Outcome:
        if job.snoozes >= handler.max_snoozes:
            message = (
                f"Snooze: the job already snoozed {job.snoozes} times, its task's "
                f"max_snoozes; raise max_snoozes (@app.task(max_snoozes=...)) or raise "
                "RetryAfter, which counts an attempt"
            )
            return self.failure(job, handler, message, None, final=True)
        return self._outcome(job, "snooze", delay=due_delay(seconds))

    def _outcome(self, job: JobRecord, kind: OutcomeKind, **details: Any) -> Outcome:
        return Outcome(job.id, job.queue, job.attempt, self.worker_id, kind, **details)

    def failure(
        self,
        job: JobRecord,
        handler: Handler | None,
        message: str,
        trace: str | None,
        *,
        final: bool = False,
        delay: float | None = None,
    ) -> Outcome:
        return failure_outcome(
            job, handler, self.worker_id, message, trace, final=final, delay=delay
        )

    def timeout_of(self, job: JobRecord) -> float | None:
        return attempt_timeout(job, self.handlers.get(job.task))


def attempt_timeout(job: JobRecord, handler: Handler | None) -> float | None:
    """The attempt's time limit: the job's own, else its handler's."""
    if job.timeout is not None:
        return job.timeout
    return None if handler is None else handler.timeout


def failure_outcome(
    job: JobRecord,
    handler: Handler | None,
    worker_id: str,
    message: str,
    trace: str | None,
    *,
    final: bool = False,
    delay: float | None = None,
) -> Outcome:
    """A failed attempt: a retry after the backoff (`delay` seconds after the store's now),
    or `failed` when none is left. The finish time is the store's.

    Also used by the supervisor for attempts it ends itself (hard timeout, lost child).
    """
    error = AttemptError(
        attempt=job.attempt,
        at=time.time(),  # informative only: the store judges time
        error=message,  # AttemptError escapes what a store could not keep (NUL, surrogates)
        traceback=trace[-_MAX_TRACEBACK:] if trace else None,
    )
    ended = functools.partial(Outcome, job.id, job.queue, job.attempt, worker_id, error=error)
    if final or job.attempt >= job.max_attempts:
        log.warning("job %s (%s) failed for good: %s", job.id, job.task, error.error)
        return ended(kind="failed")
    if delay is None:
        try:
            delay = _backoff_for(job, handler)(job.attempt)
        except Exception:
            log.exception("backoff of task %s failed; retrying at once", job.task)
            delay = 0.0
    return ended(kind="retry", delay=due_delay(delay))


def _backoff_for(job: JobRecord, handler: Handler | None) -> Callable[[int], float]:
    """The job's stored backoff, else the handler's (which may be a callable), else default."""
    if job.backoff is not None:
        return Backoff.from_spec(job.backoff).delay
    if handler is not None:
        backoff = as_backoff(handler.backoff)
        return backoff.delay if isinstance(backoff, Backoff) else backoff
    return _DEFAULT_BACKOFF.delay


def _describe_current() -> str:
    """`Type: message` of the exception being handled."""
    exc = sys.exc_info()[1]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def current_trace() -> str:
    return traceback.format_exc()


def due_delay(seconds: float) -> float:
    """A retry's or snooze's delay, kept within what every store orders correctly (a huge
    backoff or Snooze would otherwise land past `LATEST_DUE`)."""
    return min(max(0.0, seconds), LATEST_DUE - time.time())


def _warn_soft_timeout(ctx: JobContext, soft: float) -> None:
    ctx.logger.warning(
        "job %s (%s) passed its soft timeout of %g s and is still running",
        ctx.id,
        ctx.task,
        soft,
    )
