"""Run one attempt of one job and turn how it ended into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from ..backends.base import Outcome, OutcomeKind
from ..model.backoff import Backoff, as_backoff
from ..model.codec import encode_result
from ..model.errors import JobCancelled, NonRetryable, RetryAfter
from ..model.job import AttemptError, JobRecord
from ..task import Task
from .context import JobContext, set_current

log = logging.getLogger("conveyor.worker")
_MAX_TRACEBACK = 16_000
_DEFAULT_BACKOFF = Backoff()


class JobExecutor:
    """Knows the task registry and the thread pool; `run` executes one claimed job."""

    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        worker_id: str,
        thread_pool: Executor,
        on_orphan_done: Callable[[JobContext], None],
    ) -> None:
        self.tasks = tasks
        self.worker_id = worker_id
        self.thread_pool = thread_pool
        self._on_orphan_done = on_orphan_done
        """Called (from the handler's thread) when an orphaned handler finally returns."""
        self.threads_busy = 0
        """Sync handlers running now, including orphans."""
        self.orphaned_threads = 0
        """Sync handlers still running after their job ended (timeout, release): a thread
        cannot be stopped, so each holds a pool thread until its handler returns."""
        self._lock = threading.Lock()

    async def run(self, ctx: JobContext) -> Outcome | None:
        """Execute and classify. None means the job was released (shutdown, lost lease)."""
        job = ctx.record
        task = self.tasks.get(job.task)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            message = f"no handler for task {job.task!r} in this worker (it has: {known})"
            return self.failure(job, None, message, None)
        timeout = self.timeout_of(job)
        soft = task.soft_timeout
        warn = None
        if soft is not None and (timeout is None or soft < timeout):
            warn = asyncio.get_running_loop().call_later(soft, _warn_soft_timeout, ctx, soft)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await self._call(task, ctx)
            return self._outcome(job, "completed", time.time(), result=encode_result(result))
        except asyncio.CancelledError:
            if ctx.released:
                return None
            if ctx.cancel_requested:
                return self._outcome(job, "cancelled", time.time())
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the loop itself is going away
            return self.failure(
                job, task, "CancelledError: the handler was cancelled", current_trace()
            )
        except TimeoutError:
            if deadline.expired():
                ctx.cancel_requested = True  # a sync handler still running stops at its next check
                return self.failure(job, task, f"timed out after {timeout:g} s", None)
            return self.failure(job, task, _describe_current(), current_trace())
        except JobCancelled:
            return self._outcome(job, "cancelled", time.time())
        except NonRetryable:
            return self.failure(job, task, _describe_current(), current_trace(), final=True)
        except RetryAfter as exc:
            return self.failure(job, task, _describe_current(), None, delay=exc.seconds)
        except Exception:
            return self.failure(job, task, _describe_current(), current_trace())
        finally:
            if warn is not None:
                warn.cancel()
            if self._call_running(ctx):
                self._orphan(ctx)

    async def _call(self, task: Task[Any, Any], ctx: JobContext) -> Any:
        # Each job runs in its own asyncio task, whose context is a private copy: no reset.
        set_current(ctx)
        if task.is_async:
            return await task.func(**ctx.record.data)
        call: Callable[[], Any] = functools.partial(
            contextvars.copy_context().run, self._in_thread, task.func, ctx
        )
        return await asyncio.get_running_loop().run_in_executor(self.thread_pool, call)

    def _in_thread(self, func: Callable[..., Any], ctx: JobContext) -> Any:
        ctx.check_cancelled()  # released or timed out while waiting for a thread
        with self._lock:
            self.threads_busy += 1
            ctx.in_thread = True
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

    def _call_running(self, ctx: JobContext) -> bool:
        with self._lock:
            return ctx.in_thread

    def _orphan(self, ctx: JobContext) -> None:
        with self._lock:
            if ctx.in_thread and not ctx.orphaned:
                ctx.orphaned = True
                self.orphaned_threads += 1
        ctx.logger.warning("job %s ended but its sync handler is still running", ctx.id)

    def _outcome(self, job: JobRecord, kind: OutcomeKind, at: float, **details: Any) -> Outcome:
        return Outcome(
            job_id=job.id,
            queue=job.queue,
            attempt=job.attempt,
            worker_id=self.worker_id,
            kind=kind,
            finished_at=at,
            **details,
        )

    def failure(
        self,
        job: JobRecord,
        task: Task[Any, Any] | None,
        message: str,
        trace: str | None,
        *,
        final: bool = False,
        delay: float | None = None,
    ) -> Outcome:
        return failure_outcome(job, task, self.worker_id, message, trace, final=final, delay=delay)

    def timeout_of(self, job: JobRecord) -> float | None:
        return attempt_timeout(job, self.tasks.get(job.task))


def attempt_timeout(job: JobRecord, task: Task[Any, Any] | None) -> float | None:
    """The attempt's time limit: the job's own, else its task's."""
    if job.timeout is not None:
        return job.timeout
    return None if task is None else task.defaults.timeout


def failure_outcome(
    job: JobRecord,
    task: Task[Any, Any] | None,
    worker_id: str,
    message: str,
    trace: str | None,
    *,
    final: bool = False,
    delay: float | None = None,
) -> Outcome:
    """A failed attempt: a retry after the backoff, or `failed` when none is left.

    Also used by the supervisor for attempts it ends itself (hard timeout, lost child).
    """
    now = time.time()
    error = AttemptError(
        attempt=job.attempt,
        at=now,
        error=_printable(message),
        traceback=_printable(trace[-_MAX_TRACEBACK:]) if trace else None,
    )
    ended = functools.partial(
        Outcome, job.id, job.queue, job.attempt, worker_id, finished_at=now, error=error
    )
    if final or job.attempt >= job.max_attempts:
        log.warning("job %s (%s) failed for good: %s", job.id, job.task, error.error)
        return ended(kind="failed")
    if delay is None:
        try:
            delay = _backoff_for(job, task)(job.attempt)
        except Exception:
            log.exception("backoff of task %s failed; retrying at once", job.task)
            delay = 0.0
    return ended(kind="retry", run_at=now + max(0.0, delay))


def _backoff_for(job: JobRecord, task: Task[Any, Any] | None) -> Callable[[int], float]:
    """The job's stored backoff, else the task's (which may be a callable), else default."""
    if job.backoff is not None:
        return Backoff.from_spec(job.backoff).delay
    if task is not None:
        backoff = as_backoff(task.defaults.backoff)
        return backoff.delay if isinstance(backoff, Backoff) else backoff
    return _DEFAULT_BACKOFF.delay


def _describe_current() -> str:
    """`Type: message` of the exception being handled."""
    exc = sys.exc_info()[1]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def current_trace() -> str:
    return traceback.format_exc()


def _printable(text: str) -> str:
    """Error text may carry lone surrogates (undecodable file names): keep it storable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _warn_soft_timeout(ctx: JobContext, soft: float) -> None:
    ctx.logger.warning(
        "job %s (%s) passed its soft timeout of %g s and is still running",
        ctx.id,
        ctx.task,
        soft,
    )
