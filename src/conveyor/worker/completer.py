"""Batched acknowledgements: outcomes pile up while one write is in flight, then go together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ..backends.base import Outcome

log = logging.getLogger("conveyor.worker")

WriteBatch = Callable[[Sequence[Outcome]], Awaitable[None]]
MAX_TRIES = 10
"""An outcome the store refuses this often (about 25 s of backoff, a store restart's worth) is
dropped: its lease expires and the job runs again."""
STOPPING_TRIES = 3
"""Once the worker is stopping, a refused outcome gets this many tries in all, quickly: a stop
must not wait out the full backoff for a write the store keeps refusing."""
STOPPING_MAX_DELAY = 0.2


class Completer:
    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._pending: list[Outcome] = []
        self._tries: dict[tuple[str, int], int] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._max_tries = MAX_TRIES
        self._hurry = asyncio.Event()

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Write whatever is pending, one batch at a time, until closed and drained."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("could not record %d job outcomes; retrying", len(batch))
                    await self._write_one_by_one(batch)
            self._idle.set()
            if self._closing:
                return

    async def _write_one_by_one(self, batch: list[Outcome]) -> None:
        """Isolate an outcome the store refuses, so it cannot hold back the others."""
        failed: list[Outcome] = []
        for outcome in batch:
            try:
                await self._write([outcome])
                self._tries.pop((outcome.job_id, outcome.attempt), None)
            except Exception:
                key = (outcome.job_id, outcome.attempt)
                self._tries[key] = self._tries.get(key, 0) + 1
                if self._tries[key] >= self._max_tries:
                    log.exception(
                        "dropping the outcome of job %s after %d tries; it reruns "
                        "when its lease expires",
                        outcome.job_id,
                        self._tries.pop(key),
                    )
                else:
                    failed.append(outcome)
        if failed:
            self._pending[:0] = failed
            await self._back_off()

    async def _back_off(self) -> None:
        """Sleep before the next try; cut short (and kept short) once the worker is stopping."""
        delay = min(5.0, 0.05 * 2 ** max(self._tries.values(), default=1))
        if self._hurry.is_set():
            delay = min(delay, STOPPING_MAX_DELAY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), delay)

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def flush(self) -> None:
        """Return once everything added so far is written."""
        await self._idle.wait()

    def hurry(self) -> None:
        """The worker is stopping: give refused outcomes only a few more quick tries."""
        self._max_tries = STOPPING_TRIES
        self._hurry.set()

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()
