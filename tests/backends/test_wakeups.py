"""jobs_wait: idle workers of another instance (process) are woken by new work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conveyor.backends import open_backend

from .factory import claim_one, insert_one, new_job, outcome

WAIT = 2.0
"""Upper bound of every wait here: a wake-up that works arrives long before."""


@pytest.fixture
def waiter(backend) -> Iterator:
    """A second instance on the same store, listening as an idle worker does."""
    other = open_backend(backend.url)
    other.open()
    other.jobs_wait(["default"], 0.0)  # start listening, as the worker does before claiming
    yield other
    other.close()


def in_thread_after(delay: float, action: Callable[[], None]) -> tuple[threading.Thread, list]:
    """Run `action` from a thread after `delay`; the list gets the time it started."""
    started: list[float] = []

    def run() -> None:
        time.sleep(delay)
        started.append(time.monotonic())
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started


def drain(waiter) -> None:
    """Consume wake-ups of the set-up steps (delivered or not), so only the action counts."""
    waiter.jobs_wait(["default"], 0.05)


def assert_woken_by(waiter, queues, action) -> None:
    thread, started = in_thread_after(0.2, action)
    try:
        woken = waiter.jobs_wait(queues, WAIT)
        returned = time.monotonic()
    finally:
        thread.join(timeout=10)
    assert woken is True
    assert started and returned >= started[0], "woke before the action happened"


def test_insert_from_another_instance_wakes_the_waiter(backend, waiter):
    assert_woken_by(waiter, ["default"], lambda: backend.job_insert_many([new_job()]))


def test_insert_into_one_of_several_watched_queues_wakes(backend, waiter):
    assert_woken_by(
        waiter,
        ["mail", "default", "reports"],
        lambda: backend.job_insert_many([new_job(queue="reports")]),
    )


def test_resume_wakes_the_waiter(backend, waiter):
    backend.queue_pause("default")
    insert_one(backend)
    drain(waiter)
    assert_woken_by(waiter, ["default"], lambda: backend.queue_resume("default"))


def test_retry_due_now_wakes_the_waiter(backend, waiter):
    insert_one(backend)
    running = claim_one(backend)
    drain(waiter)
    assert_woken_by(
        waiter, ["default"], lambda: backend.job_complete_many([outcome(running, "retry")])
    )


def test_wait_times_out_when_nothing_happens(backend, waiter):
    started = time.monotonic()
    assert waiter.jobs_wait(["default"], 0.3) is False
    assert time.monotonic() - started >= 0.25
