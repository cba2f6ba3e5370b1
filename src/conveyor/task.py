"""A task: a handler function plus its defaults, and the ways to enqueue it."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import orjson

from .model.backoff import Backoff, BackoffLike, as_backoff
from .model.codec import encode
from .model.ids import new_job_id
from .model.job import NewJob
from .model.priority import Priority

if TYPE_CHECKING:
    from .app import Conveyor
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-job settings; a task's defaults, overridden per call by `.options(...)`."""

    queue: str = "default"
    priority: int = Priority.NORMAL
    max_attempts: int = 3
    backoff: BackoffLike = "exponential"
    timeout: float | None = None
    delay: float | dt.timedelta | None = None
    run_at: float | dt.datetime | None = None
    key: str | None = None
    job_id: str | None = None

    def validated(self) -> JobOptions:
        if not isinstance(self.queue, str) or not self.queue.strip():
            raise ValueError("queue must be a non-empty string")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(
                f"priority must be an integer (lower runs first), not {self.priority!r}"
            )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or (self.max_attempts < 1)
        ):
            raise ValueError(f"max_attempts must be an integer >= 1, not {self.max_attempts!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        as_backoff(self.backoff)
        return self

    def due_at(self, now: float) -> tuple[float, bool]:
        """The job's run_at for a NewJob enqueued at `now` (this host's clock), and whether
        it is absolute. A delay counts from the store's clock as it inserts (only `run_at -
        now` is kept), so this host's clock does not matter; a run_at the caller gave is a
        moment they chose, kept as given (one already past is due at once)."""
        if self.delay is not None:
            seconds = (
                self.delay.total_seconds() if isinstance(self.delay, dt.timedelta) else self.delay
            )
            if seconds < 0:
                raise ValueError(f"delay must be >= 0 seconds, not {seconds!r}")
            return now + float(seconds), False
        if isinstance(self.run_at, dt.datetime):
            if self.run_at.tzinfo is None:
                raise ValueError("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
            return self.run_at.timestamp(), True
        if self.run_at is not None:
            return float(self.run_at), True
        return now, False


@functools.lru_cache(maxsize=256)
def stored_backoff(backoff: BackoffLike) -> bytes | None:
    """A Backoff is stored with the job; a callable stays with the task definition."""
    resolved = as_backoff(backoff)
    return orjson.dumps(resolved.to_spec()) if isinstance(resolved, Backoff) else None


def build_new_job(
    task_name: str, data: dict[str, Any], options: JobOptions, payload_limit: int
) -> NewJob:
    """Encode one job, ready for `Backend.job_insert_many`. `options` are already validated."""
    if not isinstance(task_name, str) or not task_name:
        raise ValueError("task name must be a non-empty string")
    if not isinstance(data, dict):
        raise TypeError(f"job data must be a dict of named arguments, not {type(data).__name__}")
    now = time.time()
    run_at, absolute = options.due_at(now)
    return NewJob(
        id=options.job_id or new_job_id(),
        task=task_name,
        queue=options.queue,
        data=encode(data, what=f"data of task {task_name!r}", limit=payload_limit),
        priority=int(options.priority),
        run_at=run_at,
        max_attempts=options.max_attempts,
        enqueued_at=now,
        key=options.key,
        timeout=options.timeout,
        backoff=stored_backoff(options.backoff),
        custom_id=options.job_id is not None,
        absolute_run_at=absolute,
    )


class Task(Generic[P, R]):
    """Returned by `@app.task`. Call it to run the function here; `.enqueue` to queue it."""

    def __init__(
        self,
        app: Conveyor,
        func: Callable[P, R],
        name: str,
        defaults: JobOptions,
        soft_timeout: float | None,
        max_snoozes: int = 100,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.defaults = defaults.validated()
        self.soft_timeout = soft_timeout
        if isinstance(max_snoozes, bool) or not isinstance(max_snoozes, int) or max_snoozes < 0:
            raise ValueError(
                f"task {name!r}: max_snoozes must be an integer >= 0, not {max_snoozes!r}"
            )
        self.max_snoozes = max_snoozes
        """How often a job may `Snooze` (postpone itself without counting an attempt)
        before it fails."""
        self.is_async = inspect.iscoroutinefunction(func)
        params = inspect.signature(func).parameters.values()
        for param in params:
            if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
                raise TypeError(
                    f"task {name!r}: job data is passed by name, so positional-only and "
                    "*args parameters cannot be filled; use named parameters"
                )
        self._accepts_any = any(p.kind == p.VAR_KEYWORD for p in params)
        self._allowed = frozenset(p.name for p in params if p.kind != p.VAR_KEYWORD)
        self._required = frozenset(
            p.name for p in params if p.default is p.empty and p.kind != p.VAR_KEYWORD
        )
        self.__doc__ = func.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    @property
    def timeout(self) -> float | None:
        """The default time limit of an attempt (a job may carry its own)."""
        return self.defaults.timeout

    @property
    def backoff(self) -> BackoffLike:
        """The default retry delays (a job may carry its own)."""
        return self.defaults.backoff

    def check_data(self, data: dict[str, Any]) -> None:
        """Refuse data the handler could not be called with, before it is stored."""
        missing = self._required.difference(data)
        if missing:
            raise TypeError(f"task {self.name!r}: missing argument(s) {sorted(missing)}")
        if not self._accepts_any:
            unknown = set(data).difference(self._allowed)
            if unknown:
                raise TypeError(
                    f"task {self.name!r}: unknown argument(s) {sorted(unknown)}; "
                    f"it takes {sorted(self._allowed)}"
                )

    def options(self, *, connection: Any = None, **overrides: Any) -> BoundTask[P, R]:
        """Override job options for one enqueue: `task.options(delay=30).enqueue(...)`.

        `connection`: a psycopg connection whose open transaction the job joins (PostgreSQL).
        """
        try:
            options = replace(self.defaults, **overrides)
        except TypeError:
            known = ", ".join(JobOptions.__dataclass_fields__)
            raise TypeError(f"unknown job option in {sorted(overrides)}; known: {known}") from None
        return BoundTask(self, options.validated(), connection)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """Build a job without storing it, for `app.enqueue_many([...])`."""
        return BoundTask(self, self.defaults).prepare(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return BoundTask(self, self.defaults).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return await BoundTask(self, self.defaults).enqueue_async(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"


class BoundTask(Generic[P, R]):
    """A task with options fixed for the next enqueue."""

    def __init__(self, task: Task[P, R], options: JobOptions, connection: Any = None) -> None:
        self.task = task
        self.job_options = options
        self.connection = connection

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        if args:
            raise TypeError(f"task {self.task.name!r}: pass job data by name, not by position")
        data = dict(kwargs)
        self.task.check_data(data)
        return build_new_job(self.task.name, data, self.job_options, self.task.app.payload_limit)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        new_job = self.prepare(*args, **kwargs)
        return self.task.app.enqueue_many([new_job], connection=self.connection)[0]

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """With `options(connection=...)`: a psycopg AsyncConnection whose open transaction
        the job joins (PostgreSQL)."""
        new_job = self.prepare(*args, **kwargs)
        jobs = await self.task.app.enqueue_many_async([new_job], connection=self.connection)
        return jobs[0]
