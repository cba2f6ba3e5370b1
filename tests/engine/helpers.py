"""Shared helpers for engine tests: an in-process worker in a thread, and a deadline poller."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from conveyor import Conveyor, Worker

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        time.sleep(interval)


class WorkerThread:
    """A `Worker` running `asyncio.run(worker.run())` in a daemon thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._target, name="test-worker", daemon=True)

    def _target(self) -> None:
        try:
            asyncio.run(self.worker.run())
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for run() to return on its own; fail if it does not within `timeout`."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker still running after {timeout} s"
        if self.error is not None:
            raise self.error

    def stop_and_join(self, timeout: float = 10.0, *, force: bool = False) -> None:
        """Ask the worker to stop (repeating until its loop exists), bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.worker.stop(force=force)
            self.thread.join(0.05)
        self.join(0)


@contextlib.contextmanager
def running_worker(
    app: Conveyor,
    queues: Iterable[str] | None = None,
    concurrency: int = 10,
    *,
    join_timeout: float = 10.0,
    **kwargs: Any,
) -> Iterator[Worker]:
    """Run a worker for the duration of the block; stop and join it (bounded) on exit."""
    runner = WorkerThread(Worker(app, queues, concurrency, **kwargs)).start()
    try:
        yield runner.worker
    finally:
        runner.stop_and_join(join_timeout)


def run_burst(
    app: Conveyor,
    queues: Iterable[str] | None = None,
    concurrency: int = 10,
    *,
    timeout: float = 10.0,
    **kwargs: Any,
) -> Worker:
    """Run a burst worker to completion (it must return on its own within `timeout`)."""
    runner = WorkerThread(Worker(app, queues, concurrency, burst=True, **kwargs)).start()
    try:
        runner.join(timeout)
    finally:
        if runner.alive:
            runner.worker.stop(force=True)
            runner.thread.join(5)
    return runner.worker


def state_of(app: Conveyor, job_id: str) -> str:
    job = app.get_job(job_id)
    assert job is not None, f"job {job_id} not found"
    return job.state.value
