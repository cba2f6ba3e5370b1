"""The lease keeper: renews the lease of every job this worker holds, on a thread of its own.

A job is held from its claim until its outcome is stored (or it is released), not only while
its handler runs: an outcome waiting for a slow or failing write keeps its lease, so no other
worker reruns a job that finished here. The keeper has its own thread (and so its own store
connection) and shares it with nothing: no claim, acknowledgement, registry beat or
maintenance statement can make it late, and a blocked event loop cannot either.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from ..backends.base import Backend, HeartbeatParams
from ..failures import log_failure

log = logging.getLogger("conveyor.worker")

AttemptCallback = Callable[[str, int], None]
"""Called from the keeper's thread with (job id, attempt)."""


class LeaseKeeper:
    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        lease_seconds: float,
        interval: float,
        *,
        on_lost: AttemptCallback,
        on_cancel: AttemptCallback,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._interval = interval
        self._on_lost = on_lost
        """The store no longer lists the job as ours (it was rescued after its lease ran out)."""
        self._on_cancel = on_cancel
        """A cancel of the job was requested."""
        self._held: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-lease-keeper", daemon=True)

    def hold(self, attempts: Iterable[tuple[str, int]]) -> None:
        """Keep renewing these (job id, attempt) leases until `drop` (one lock per batch:
        this runs for every claimed job)."""
        with self._lock:
            self._held.update(attempts)

    def drop(self, attempts: Iterable[tuple[str, int]]) -> None:
        """These attempts' outcomes are stored (or they were released): stop renewing them."""
        with self._lock:
            held = self._held
            for key in attempts:
                left = held[key] - 1
                if left <= 0:
                    del held[key]
                else:
                    held[key] = left

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing (at the end of the worker, once every outcome is settled) and wait
        for a renewal in flight: a daemon thread still inside the store's C code while the
        interpreter shuts down can crash the process (seen: SIGSEGV at a burst worker's exit)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.renew()
            except Exception:
                log_failure(log, "lease renewal failed; leases may expire if this goes on")

    def renew(self) -> None:
        with self._lock:
            attempts = list(self._held)
        if not attempts:
            return
        ids = tuple(dict.fromkeys(job_id for job_id, _ in attempts))
        answer = self._backend.job_heartbeat(
            HeartbeatParams(
                worker_id=self._worker_id, job_ids=ids, lease_seconds=self._lease_seconds
            )
        )
        for job_id, attempt in attempts:
            if job_id not in answer:
                self._on_lost(job_id, attempt)
            elif answer[job_id]:
                self._on_cancel(job_id, attempt)
