"""`Conveyor`: holds the store URL, the task registry and the enqueue API."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from .admin import Admin
from .backends import DEFAULT_CONNECT_TIMEOUT, DEFAULT_URL, open_backend
from .backends.base import Backend, QueueStats
from .changes import ChangeFeed
from .job import Job
from .model.backoff import BackoffLike
from .model.codec import DEFAULT_PAYLOAD_LIMIT
from .model.errors import StoreError
from .model.job import NewJob
from .model.priority import Priority
from .task import JobOptions, Task, build_new_job

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Settings:
    """Engine timings. Defaults bring a dead worker's jobs back within 45 s.

    Checked when built: a value that would make the engine spin or never act is a ValueError.
    """

    lease_seconds: float = 30.0
    heartbeat_interval: float | None = None
    """How often the lease keeper renews leases; None: a third of `lease_seconds`."""
    rescue_interval: float = 15.0
    prune_interval: float = 3600.0
    compact_interval: float = 30.0
    """How often the leader reclaims the hot table's dead rows (PostgreSQL VACUUM)."""
    keep_completed: float = 7 * 86400.0
    keep_failed: float = 30 * 86400.0
    poll_interval: float = 1.0
    """Fallback poll for lost wake-ups; idle workers are normally woken by the store."""
    grace_period: float = 30.0
    leader_ttl: float | None = None
    """How long the maintenance leader's lease lasts unrenewed (a SIGKILLed leader is
    replaced within it); None: `lease_seconds`."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """How long a store call (enqueue included) waits for a connection before failing."""

    def __post_init__(self) -> None:
        positive = (
            "lease_seconds",
            "rescue_interval",
            "prune_interval",
            "compact_interval",
            "poll_interval",
            "connect_timeout",
        )
        for name in positive:
            _require(name, getattr(self, name), lambda v: v > 0, "a number of seconds > 0")
        for name in ("keep_completed", "keep_failed", "grace_period"):
            _require(name, getattr(self, name), lambda v: v >= 0, "a number of seconds >= 0")
        for name in ("heartbeat_interval", "leader_ttl"):
            if getattr(self, name) is not None:
                _require(name, getattr(self, name), lambda v: v > 0, "a number of seconds > 0")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_seconds:g} s) must be shorter than "
                f"lease_seconds ({self.lease_seconds:g} s), or leases expire between beats"
            )

    @property
    def heartbeat_seconds(self) -> float:
        return (
            self.lease_seconds / 3 if self.heartbeat_interval is None else self.heartbeat_interval
        )

    @property
    def leader_seconds(self) -> float:
        return self.lease_seconds if self.leader_ttl is None else self.leader_ttl


def _require(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
    """A finite number passing `ok`, else a ValueError naming the setting."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not ok(float(value)):
        raise ValueError(f"Settings.{name} must be {what}, not {value!r}")


class Conveyor:
    """The application object: `app = Conveyor()`, then `@app.task`, then enqueue."""

    def __init__(
        self,
        url: str | None = None,
        *,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
        settings: Settings | None = None,
        migrate: bool = True,
    ) -> None:
        """`migrate=False`: do not create or upgrade the schema at start-up; a store that is
        not at this version is then refused (run `conveyor migrate` in your deploy step)."""
        if isinstance(payload_limit, bool) or not isinstance(payload_limit, int):
            raise ValueError(f"payload_limit must be a number of bytes, not {payload_limit!r}")
        if payload_limit < 1:
            raise ValueError(f"payload_limit must be at least 1 byte, not {payload_limit}")
        self.url = url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
        self.payload_limit = payload_limit
        self.settings = settings or Settings()
        self.migrate = migrate
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.changes = ChangeFeed()
        """Every job state change the engine and admin calls apply (see `changes.py`)."""
        self.admin = Admin(self)
        """Reads and admin actions (what the CLI and the HTTP service call)."""
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self._built: Backend | None = self._build()  # a bad URL fails here, not at first use

    def _build(self) -> Backend:
        """The store for `self.url`, built but not connected (StoreError for a bad URL)."""
        return open_backend(self.url, connect_timeout=self.settings.connect_timeout)

    @property
    def backend(self) -> Backend:
        """The store, opened (and migrated) on first use."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    backend, self._built = self._built or self._build(), None
                    backend.open(migrate=self.migrate)
                    self._backend = backend
        return self._backend

    def use_url(self, url: str) -> None:
        """Point at another store (the CLI's --url); closes the current one."""
        self.close()
        self.url = url
        self._built = self._build()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # tasks --------------------------------------------------------------------------------
    @overload
    def task(self, func: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = Priority.NORMAL,
        max_attempts: int = 3,
        backoff: BackoffLike = "exponential",
        timeout: float | None = None,
        soft_timeout: float | None = None,
        max_snoozes: int = 100,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = Priority.NORMAL,
        max_attempts: int = 3,
        backoff: BackoffLike = "exponential",
        timeout: float | None = None,
        soft_timeout: float | None = None,
        max_snoozes: int = 100,
    ) -> Any:
        """Register a handler. `soft_timeout` (default 80 % of `timeout`) only logs.
        `max_snoozes`: how often a job may raise `Snooze` before it fails."""

        def register(fn: Callable[P, R]) -> Task[P, R]:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered")
            defaults = JobOptions(
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
            )
            soft = (
                soft_timeout if soft_timeout is not None else (timeout * 0.8 if timeout else None)
            )
            task = Task(self, fn, task_name, defaults, soft, max_snoozes)
            self.tasks[task_name] = task
            return task

        return register(func) if func is not None else register

    # enqueue ------------------------------------------------------------------------------
    def prepare(self, task_name: str, data: dict[str, Any] | None = None, **options: Any) -> NewJob:
        """Build a job by task name. A registered task's defaults apply; others get ours."""
        known = self.tasks.get(task_name)
        base = known.defaults if known else JobOptions()
        try:
            job_options = JobOptions(**{**_as_kwargs(base), **options}) if options else base
        except TypeError:
            allowed = ", ".join(JobOptions.__dataclass_fields__)
            raise TypeError(f"unknown job option in {sorted(options)}; known: {allowed}") from None
        job_options.validated()
        payload = {} if data is None else data
        if known is not None and isinstance(payload, dict):
            known.check_data(payload)
        return build_new_job(task_name, payload, job_options, self.payload_limit)

    def enqueue(
        self,
        task_name: str,
        data: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> Job:
        """Enqueue by name: the task may live in another service's code.

        `connection`: a psycopg connection whose open transaction the job joins (PostgreSQL).
        """
        new_job = self.prepare(task_name, data, **options)
        return self.enqueue_many([new_job], connection=connection)[0]

    async def enqueue_async(
        self,
        task_name: str,
        data: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> Job:
        """`enqueue` for async code; `connection`: a psycopg AsyncConnection whose open
        transaction the job joins (PostgreSQL)."""
        new_job = self.prepare(task_name, data, **options)
        return (await self.enqueue_many_async([new_job], connection=connection))[0]

    def enqueue_many(self, jobs: Iterable[NewJob], *, connection: Any = None) -> list[Job]:
        """Store all jobs in one transaction: all of them or, on error, none.

        With `connection` (a psycopg connection, PostgreSQL only) the jobs are written in the
        caller's own transaction: they exist if and only if it commits.
        """
        batch = self._checked_batch(jobs, connection)
        records = self.backend.job_insert_many(batch, connection=connection)
        return [Job(self, record) for record in records]

    async def enqueue_many_async(
        self, jobs: Iterable[NewJob], *, connection: Any = None
    ) -> list[Job]:
        """`enqueue_many` for async code.

        With `connection` (a psycopg AsyncConnection, PostgreSQL only) the jobs are written in
        the caller's open transaction: they exist if and only if it commits, and idle workers
        are woken at the commit. Without one, the blocking insert runs in a thread.
        """
        import asyncio

        if connection is None:
            return await asyncio.to_thread(self.enqueue_many, list(jobs))
        batch = self._checked_batch(jobs, connection)
        records = await self.backend.job_insert_many_async(batch, connection)
        return [Job(self, record) for record in records]

    def _checked_batch(self, jobs: Iterable[NewJob], connection: Any) -> list[NewJob]:
        """The jobs as a list; a TypeError for what is not a job, a StoreError for a
        `connection` whose transaction this store cannot join."""
        batch = list(jobs)
        for item in batch:
            if not isinstance(item, NewJob):
                raise TypeError(
                    "enqueue_many takes jobs built by task.prepare(...) or app.prepare(name, data)"
                )
        if connection is not None and not self.backend.capabilities.transactional_enqueue:
            raise StoreError(
                f"the store at {self.url} cannot enqueue inside your transaction; "
                "use PostgreSQL, or enqueue after your commit"
            )
        return batch

    # reads and admin (through `self.admin`, like every surface) ---------------------------
    def get_job(self, job_id: str) -> Job | None:
        record = self.admin.get_job(job_id)
        return None if record is None else Job(self, record)

    def queue_stats(self, name: str | None = None) -> list[QueueStats]:
        return self.admin.queue_stats(name)

    def pause_queue(self, name: str) -> None:
        self.admin.pause_queue(name)

    def resume_queue(self, name: str) -> None:
        self.admin.resume_queue(name)

    def retry_job(self, job_id: str) -> Job:
        return Job(self, self.admin.retry_job(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return Job(self, self.admin.cancel_job(job_id))

    def __repr__(self) -> str:
        return f"<Conveyor {self.url} tasks={len(self.tasks)}>"


def _as_kwargs(options: JobOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in JobOptions.__dataclass_fields__}
