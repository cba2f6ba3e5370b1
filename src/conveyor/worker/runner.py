"""The worker: one process's lifecycle (start, signals, recycling, graceful shutdown), and
the wiring of the parts that do the work, each on its own thread and store connection:

- the producer claims jobs into free slots (`producer.py`, the claim thread);
- the executor runs each attempt (`executor.py`: async handlers on the event loop, sync ones
  in a thread pool);
- the completer writes outcomes and progress in batches (`completer.py`, the ack thread);
- the lease keeper renews every held job's lease until its outcome is stored
  (`lease_keeper.py`, its own thread);
- the registry beat (`registry.py`) and, on the elected leader only, the maintenance
  services (`conveyor.maintenance`: rescue, pruning, compaction, registry pruning).

Every state change the worker applies to the store is published to `app.changes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from ..backends.base import JobChange, Outcome, ReleaseParams, WorkerInfo
from ..maintenance.rescuer import rescue_expired
from ..maintenance.services import Maintenance
from ..model.states import JobState
from .completer import Completer
from .context import JobContext
from .executor import JobExecutor, failure_outcome
from .jobs import RunningJobs
from .lease_keeper import LeaseKeeper
from .observer import JobObserver
from .producer import Producer
from .registry import RegistryBeat

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.worker")
_LIMIT_CHECK_INTERVAL = 0.5
_PENDING = (JobState.QUEUED, JobState.SCHEDULED)
_MIN_BACKLOG = 100
"""Outcomes waiting to be written above which claiming pauses (at least; 2 x concurrency)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Recycling:
    """When a worker stops by itself, gracefully, so that a supervisor starts a fresh one."""

    max_jobs: int | None = None
    """After this many jobs."""
    max_age: float | None = None
    """After this many seconds."""
    max_rss_mb: float | None = None
    """Once the process's resident memory passes this (checked about twice a second)."""
    parent_pid: int | None = None
    """As soon as this process (its supervisor) is gone."""


class Worker:
    """Works the given queues with up to `concurrency` jobs at once.

    `burst=True` rescues expired leases first, then exits once no job of its queues is due.
    `observer` hears of every attempt's start and end (a supervised child's reporter).
    """

    def __init__(
        self,
        app: Conveyor,
        queues: Iterable[str] | None = None,
        concurrency: int = 10,
        *,
        burst: bool = False,
        batch_size: int | None = None,
        worker_id: str | None = None,
        observer: JobObserver | None = None,
        recycling: Recycling | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        self.app = app
        own_queues = sorted({t.defaults.queue for t in app.tasks.values()})
        self.queues: tuple[str, ...] = tuple(queues or own_queues or ["default"])
        self.concurrency = concurrency
        self.burst = burst
        self.batch_size = batch_size or min(concurrency, 100)
        self.worker_id = worker_id or default_worker_id()
        self.settings = app.settings
        self.jobs_done = 0
        self.stop_reason: str | None = None
        self.supervisor_id = supervisor_id
        self.started_at = time.time()
        self._observer = observer
        self._recycling = recycling or Recycling()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: RunningJobs | None = None
        self._maintenance: Maintenance | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._producer: Producer | None = None
        self._executor: JobExecutor | None = None

    # public control -----------------------------------------------------------------------
    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down gracefully (thread-safe). `force` skips the grace."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._request_stop, force)

    def run_until_stopped(self, *, supervised: bool = False) -> None:
        """Run with SIGTERM/SIGINT handlers: the first starts a graceful stop, the second
        skips the rest of the grace period.

        `supervised`: a supervisor's child ignores SIGINT (a terminal's Ctrl-C reaches the
        whole process group; the supervisor passes it on as SIGTERM, once).
        """
        if supervised:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(self._run_with_signals(supervised))
        if supervised:  # done: a late signal from the supervisor must not cut the exit short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    async def _run_with_signals(self, supervised: bool) -> None:
        loop = asyncio.get_running_loop()
        if supervised:
            # SIGTERM may reach a child twice (from the supervisor and from a signal to the
            # whole process group): it only ever means "stop gracefully". The supervisor
            # asks for a forced stop with SIGUSR1.
            loop.add_signal_handler(signal.SIGTERM, self._on_signal, signal.SIGTERM, False)
            loop.add_signal_handler(signal.SIGUSR1, self._on_signal, signal.SIGUSR1, True)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig, None)
        await self.run()

    def _on_signal(self, sig: signal.Signals, force: bool | None) -> None:
        """`force` None: the first signal is graceful, a second one forces."""
        if force is None:
            force = self._stop is not None and self._stop.is_set()
        log.warning(
            "%s: %s",
            sig.name,
            "skipping the grace period"
            if force
            else (f"finishing active jobs (up to {self.settings.grace_period:g} s), then exiting"),
        )
        self._request_stop(force)

    def _recycle(self, reason: str) -> None:
        """Stop gracefully by ourselves (a limit was reached); a supervisor starts anew."""
        if self._stop is not None and not self._stop.is_set():
            log.info("worker %s recycling: %s", self.worker_id, reason)
            self.stop_reason = reason
            if self._observer is not None:
                self._observer.worker_recycling(reason)
            self._request_stop(False)

    def _request_stop(self, force: bool) -> None:
        assert self._stop and self._force
        self._stop.set()
        if force:
            self._force.set()
        if self._producer is not None:
            self._producer.stop()

    # main loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        # Open the store first: if it fails, nothing has been started yet.
        backend = self._backend = self.app.backend
        settings = self.settings
        publish = self.app.changes.publish
        claim_pool = self._claim_pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-claim")
        wait_pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-wait")
        job_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="conveyor-job")
        executor = self._executor = JobExecutor(
            self.app.tasks,
            self.worker_id,
            job_pool,
            on_orphan_done=self._orphan_done,
            on_decided=lambda _ctx: self._slot_freed(),
            on_running=self._tell_running if self._observer is not None else None,
            payload_limit=self.app.payload_limit,
        )
        leases = self._leases = LeaseKeeper(
            backend,
            self.worker_id,
            settings.lease_seconds,
            settings.heartbeat_seconds,
            on_lost=self._from_thread(self._give_up),
            on_cancel=self._from_thread(self._cancel),
        )
        completer = self._completer = Completer(
            backend,
            self._outcomes_applied,
            self._settled,
            max_backlog=max(_MIN_BACKLOG, 2 * self.concurrency),
        )
        jobs = self._jobs = RunningJobs(
            loop,
            self.app.tasks,
            executor,
            completer,
            leases,
            self._observer,
            on_ended=self._job_ended,
            on_slot_freed=self._slot_freed,
        )
        producer = self._producer = Producer(
            backend,
            self.queues,
            self.worker_id,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            batch_size=self.batch_size,
            burst=self.burst,
            completer=completer,
            claim_pool=claim_pool,
            wait_pool=wait_pool,
            free_slots=lambda: self.concurrency - len(jobs) - executor.orphaned_threads,
            busy=lambda: jobs.undecided > 0,
            start=jobs.start,
        )
        registry = RegistryBeat(
            backend, self.worker_info, settings.heartbeat_seconds, settings.lease_seconds + 1.0
        )
        await producer.listen()
        if self.burst:  # no leader to wait for: a burst worker must finish the queue
            try:
                await loop.run_in_executor(claim_pool, rescue_expired, backend, publish)
            except Exception:
                log.exception("rescue at start-up failed")
        log.info(
            "worker %s started: queues %s, concurrency %d",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
        )
        await registry.beat()
        if self._observer is not None:
            self._observer.worker_started(self.worker_id)
        leases.start()
        if not self.burst:
            self._maintenance = Maintenance(backend, self.worker_id, settings, publish)
            self._maintenance.start()
        writing = loop.create_task(completer.run())
        services = [loop.create_task(registry.run())]
        if self._recycling.parent_pid is not None or self._recycling.max_rss_mb is not None:
            services.append(loop.create_task(self._watch_limits()))
        if self._recycling.max_age is not None:
            max_age = self._recycling.max_age
            services.append(
                loop.create_task(self._after(max_age, f"max age {max_age:g} s reached"))
            )
        try:
            if self._stop.is_set():  # stopped while starting
                producer.stop()
            await producer.run()
            await self._shutdown()
        finally:
            for service in services:
                service.cancel()
            completer.close()
            await asyncio.wait([writing], timeout=10)
            # Every outcome is settled (or given up): nothing left to keep.
            await asyncio.to_thread(leases.stop)
            await self._stop_maintenance()
            completer.shutdown()
            for pool in (claim_pool, wait_pool, job_pool):
                pool.shutdown(wait=False, cancel_futures=True)
            registry.forget(self.worker_id)
            self._loop = None
            log.info("worker %s stopped after %d jobs", self.worker_id, self.jobs_done)

    async def _stop_maintenance(self) -> None:
        """Stop the services and resign the lead, so that another worker takes over now."""
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            await asyncio.to_thread(maintenance.stop)

    # callbacks of the parts -----------------------------------------------------------------
    # (The parts are built in `run`, on the worker's event loop; these look them up late.)
    @property
    def _running(self) -> RunningJobs:
        assert self._jobs is not None, "the worker is not running"
        return self._jobs

    def _from_thread(self, fn: Callable[[str, int], None]) -> Callable[[str, int], None]:
        return lambda job_id, attempt: self._running.from_thread(fn)(job_id, attempt)

    def _give_up(self, job_id: str, attempt: int) -> None:
        self._running.give_up(job_id, attempt)

    def _cancel(self, job_id: str, attempt: int) -> None:
        self._running.cancel(job_id, attempt)

    def _orphan_done(self, ctx: JobContext) -> None:
        self._running.orphan_done(ctx)

    def _outcomes_applied(self, changes: Sequence[JobChange]) -> None:
        """(On the ack thread) publish; a job of ours postponed (retry, snooze) may be due
        before the idle producer's wait ends: wake it to read the next due time."""
        self.app.changes.publish(changes)
        if any(c.to_state in _PENDING and c.queue in self.queues for c in changes):
            loop = self._loop
            if loop is not None and self._producer is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._producer.wake)

    def _settled(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes left the completer: their leases need no keeping, claims may resume."""
        self._leases.drop([(outcome.job_id, outcome.attempt) for outcome in outcomes])
        self._slot_freed()

    def _job_ended(self) -> None:
        """An attempt ended here."""
        self.jobs_done += 1
        max_jobs = self._recycling.max_jobs
        if max_jobs is not None and self.jobs_done >= max_jobs:
            self._recycle(f"max jobs {max_jobs} reached")
        self._slot_freed()

    def _tell_running(self, ctx: JobContext) -> None:
        """(Loop or handler thread) tell the supervisor this attempt's handler began."""
        assert self._observer is not None
        self._observer.job_running(ctx.id, ctx.attempt)

    def _slot_freed(self) -> None:
        if self._producer is not None:
            self._producer.slot_freed()

    # services -----------------------------------------------------------------------------
    def worker_info(self) -> WorkerInfo:
        """How this worker describes itself in the registry (`conveyor workers`)."""
        return WorkerInfo(
            id=self.worker_id,
            kind="worker",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            started_at=self.started_at,
            heartbeat_at=time.time(),  # the store sets its own
            jobs_done=self.jobs_done,
            current_jobs=tuple(self._jobs or ()),
            rss_mb=psutil.Process().memory_info().rss / 2**20,
            parent_id=self.supervisor_id,
        )

    async def _after(self, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        self._recycle(reason)

    async def _watch_limits(self) -> None:
        """Stop gracefully when memory passes its limit, or when our supervisor died (a
        child must not run on unsupervised)."""
        limits = self._recycling
        me = psutil.Process()
        while True:
            await asyncio.sleep(_LIMIT_CHECK_INTERVAL)
            if limits.parent_pid is not None and os.getppid() != limits.parent_pid:
                self._recycle(f"supervisor {limits.parent_pid} is gone")
                return
            if limits.max_rss_mb is not None:
                rss_mb = me.memory_info().rss / 2**20
                if rss_mb > limits.max_rss_mb:
                    self._recycle(f"memory {rss_mb:.0f} MB over the {limits.max_rss_mb:g} MB limit")
                    return

    # shutdown -----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Let active jobs finish within the grace period. Then a job whose handler started
        has its attempt counted ("released at shutdown"), so `max_attempts` bounds every
        job's runs; one whose handler never started goes back to its queue, free."""
        assert self._force is not None and self._jobs is not None
        # Hand the lead over now; the services' own steps end on their threads meanwhile.
        maintenance = asyncio.ensure_future(self._stop_maintenance())
        tasks = self._jobs.tasks()
        if tasks:
            log.info(
                "waiting up to %g s for %d active jobs", self.settings.grace_period, len(tasks)
            )
            everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
            forced: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                [everything, forced],
                timeout=self.settings.grace_period,
                return_when=asyncio.FIRST_COMPLETED,
            )
            forced.cancel()
        started, unstarted = await self._jobs.take_back()
        for ctx, ran in started:
            self._completer.add(self._released_at_shutdown(ctx, ran))
        if unstarted:
            await self._release(unstarted)
        self._completer.hurry()
        try:
            await asyncio.wait_for(self._completer.flush(), timeout=30)
        except TimeoutError:
            log.error("could not record every outcome; those jobs rerun after their lease")
        await maintenance

    def _released_at_shutdown(self, ctx: JobContext, ran: float) -> Outcome:
        """A counted attempt, due again at once (or `failed` if it was the last one)."""
        message = (
            f"released at shutdown after {ran:.1f} s: the worker stopped and its grace "
            f"period ({self.settings.grace_period:g} s) ended before the handler returned"
        )
        ctx.logger.warning("job %s %s", ctx.id, message)
        handler = self.app.tasks.get(ctx.task)
        return failure_outcome(ctx.record, handler, self.worker_id, message, None, delay=0.0)

    async def _release(self, contexts: list[JobContext]) -> None:
        """Give back jobs whose handler never started: their attempt does not count."""
        params = ReleaseParams(
            self.worker_id,
            tuple(ctx.id for ctx in contexts),
            tuple({ctx.queue for ctx in contexts}),
        )
        assert self._loop is not None
        try:
            for attempt in range(3):
                try:
                    changes = await self._loop.run_in_executor(
                        self._claim_pool, self._backend.job_release_many, params
                    )
                    self.app.changes.publish(changes)
                    log.warning("released %d unstarted jobs back to their queues", len(contexts))
                    return
                except Exception:
                    log.exception("could not release unstarted jobs (try %d of 3)", attempt + 1)
                    await asyncio.sleep(0.2 * 2**attempt)
            log.error("%d unstarted jobs come back when their lease expires", len(contexts))
        finally:
            self._leases.drop([(ctx.id, ctx.attempt) for ctx in contexts])

    @property
    def active_jobs(self) -> Sequence[str]:
        return tuple(self._jobs or ())

    @property
    def has_stuck_threads(self) -> bool:
        """True when a sync handler still runs after its attempt was given up (shutdown,
        lost lease): a thread cannot be stopped, so the process must exit hard to end it."""
        executor = self._executor
        return executor is not None and executor.threads_busy > 0
