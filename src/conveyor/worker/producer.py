"""The producer: claims due jobs into free slots, and otherwise waits for work.

Claims run on the claim thread (and its store connection); waiting for a wake-up blocks a
thread of its own. The producer claims nothing while every slot is taken, nor while too many
outcomes wait to be written (backpressure: a slow store must not let memory grow).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from ..backends.base import Backend, ClaimParams
from ..failures import log_failure
from ..model.job import JobRecord
from .completer import Completer

log = logging.getLogger("conveyor.worker")
_MIN_IDLE_WAIT = 0.002
T = TypeVar("T")


class Producer:
    def __init__(
        self,
        backend: Backend,
        queues: tuple[str, ...],
        worker_id: str,
        *,
        lease_seconds: float,
        poll_interval: float,
        batch_size: int,
        burst: bool,
        completer: Completer,
        claim_pool: Executor,
        wait_pool: Executor,
        free_slots: Callable[[], int],
        busy: Callable[[], bool],
        start: Callable[[Sequence[JobRecord]], None],
    ) -> None:
        self._backend = backend
        self._queues = queues
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._burst = burst
        self._completer = completer
        self._claim_pool = claim_pool
        self._wait_pool = wait_pool
        self._free_slots = free_slots
        """Slots free for new jobs (sync handlers that outlived their job still hold one)."""
        self._busy = busy
        """Whether any job of ours still runs."""
        self._start = start
        self._nudge = asyncio.Event()
        self._stop = asyncio.Event()
        self._waiting_for_slot = False
        self._waiter: asyncio.Future[bool] | None = None
        self._wait_failures = 0

    def stop(self) -> None:
        self._stop.set()
        self._nudge.set()

    def wake(self) -> None:
        """A job of our queues may have become due (one of our outcomes postponed it)."""
        self._nudge.set()

    def slot_freed(self) -> None:
        """A job ended or an outcome was stored: a waiting claim may go ahead."""
        if self._waiting_for_slot:
            self._nudge.set()

    async def listen(self) -> None:
        """Listen before the first claim, so that no wake-up between the two is missed."""
        try:
            await self._on(self._claim_pool, self._backend.jobs_wait, self._queues, 0.0)
        except Exception:  # a stale wake-up connection: the wait loop reconnects and polls
            log_failure(log, "listening for wake-ups failed at start-up; will retry")

    async def run(self) -> None:
        """Claim and start jobs until stopped (a burst worker: until nothing is left)."""
        failures = 0
        while not self._stop.is_set():
            free = self._free_slots()
            if free <= 0 or self._completer.full:
                await self._wait(for_slot=True)
                continue
            # Burst mode may only end on an empty claim that began after every outcome of
            # ours was written: one written during the claim may have made a retry due.
            settled = not self._busy() and self._completer.idle
            try:
                jobs = await self._on(
                    self._claim_pool,
                    self._backend.job_claim,
                    ClaimParams(
                        queues=self._queues,
                        limit=min(free, self._batch_size),
                        worker_id=self._worker_id,
                        lease_seconds=self._lease_seconds,
                    ),
                )
                failures = 0
            except Exception:
                failures += 1
                log_failure(log, "claim failed; retrying")
                await self._pause(min(5.0, 0.1 * 2**failures))
                continue
            if jobs:
                self._start(jobs)
                continue
            if self._burst:
                if self._busy():
                    await self._wait(for_slot=True)
                elif not settled:
                    await self._completer.flush()  # a retry due at once may follow
                else:
                    return
                continue
            await self._wait_for_work()

    async def _on(self, pool: Executor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args))

    async def _wait(self, *, for_slot: bool) -> None:
        self._waiting_for_slot = for_slot
        await self._nudge.wait()
        self._nudge.clear()
        self._waiting_for_slot = False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _wait_for_work(self) -> None:
        """Sleep until the store wakes us, the next delayed job is due (by the store's
        clock), or the fallback poll."""
        timeout = self._poll_interval
        try:
            due_in = await self._on(self._claim_pool, self._backend.job_next_due_in, self._queues)
        except Exception:
            log_failure(log, "could not read when the next job is due")
            due_in = None
        if due_in is not None:
            # A claim just came back empty, so never spin: wait at least a moment.
            timeout = max(_MIN_IDLE_WAIT, min(timeout, due_in))
        if self._wait_failures:  # never spin on a failing wait
            await self._pause(min(5.0, 0.1 * 2**self._wait_failures))
        loop = asyncio.get_running_loop()
        if self._waiter is None:
            waiter = loop.run_in_executor(
                self._wait_pool, self._backend.jobs_wait, self._queues, timeout
            )
            waiter.add_done_callback(self._on_waiter_done)
            self._waiter = waiter
        # A waiter still blocked from an earlier round may wait longer than the job now due.
        timer = loop.call_later(timeout, self._nudge.set)
        try:
            await self._wait(for_slot=False)
        finally:
            timer.cancel()

    def _on_waiter_done(self, fut: asyncio.Future[bool]) -> None:
        self._waiter = None
        if not fut.cancelled() and fut.exception() is not None:
            log.error("waiting for wake-ups failed: %s", fut.exception())
            self._wait_failures += 1
        else:
            self._wait_failures = 0
        self._nudge.set()
