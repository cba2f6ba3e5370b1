"""The registry beat: the worker describes itself in the store (`conveyor workers`) on a
thread of its own, off the claim thread and the lease keeper's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..backends.base import Backend, WorkerInfo
from ..failures import log_failure

log = logging.getLogger("conveyor.worker")


class RegistryBeat:
    """Beats every `interval` seconds; an entry outlives `ttl` seconds without a beat."""

    def __init__(
        self, backend: Backend, describe: Callable[[], WorkerInfo], interval: float, ttl: float
    ) -> None:
        self._backend = backend
        self._describe = describe
        """Called on the event loop, where the worker's state lives."""
        self._interval = interval
        self._ttl = ttl
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-registry")

    async def beat(self) -> None:
        info = self._describe()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._pool, self._backend.worker_beat, info, self._ttl
            )
        except Exception:
            log_failure(log, "could not update the worker registry; will retry")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.beat()

    def forget(self, worker_id: str) -> None:
        """A clean exit: leave the registry now (else the entry expires)."""
        try:
            self._backend.worker_forget(worker_id)
        except Exception:
            log.warning("could not remove worker %s from the registry; it expires", worker_id)
        self._pool.shutdown(wait=False, cancel_futures=True)
