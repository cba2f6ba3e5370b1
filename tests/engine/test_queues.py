"""Pause/resume, unique keys, priority order and delayed jobs."""

from __future__ import annotations

import threading
import time

from conveyor import JobState, Settings

from .helpers import run_burst, running_worker, wait_until

# A long fallback poll: anything that runs within ~1 s was woken, not polled.
SLOW_POLL = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=5.0, grace_period=2.0)


def _states(app, jobs):
    return [app.get_job(j.id).state for j in jobs]


def test_paused_queue_waits_while_others_run_and_resume_wakes_the_worker(make_app):
    app = make_app(SLOW_POLL)
    ran: list[str] = []

    @app.task(queue="a")
    def in_a(n: int) -> None:
        ran.append(f"a{n}")

    @app.task(queue="b")
    def in_b(n: int) -> None:
        ran.append(f"b{n}")

    app.pause_queue("a")
    a_jobs = [in_a.enqueue(n=i) for i in range(3)]  # enqueued first, still held back
    b_jobs = [in_b.enqueue(n=i) for i in range(3)]
    assert next(s for s in app.queue_stats("a")).paused

    with running_worker(app, queues=["a", "b"]):
        wait_until(lambda: set(_states(app, b_jobs)) == {JobState.COMPLETED}, 5, what="b done")
        time.sleep(0.3)  # give a wrongly-claimed paused job a chance to show up
        assert set(_states(app, a_jobs)) == {JobState.QUEUED}
        assert not [r for r in ran if r.startswith("a")]

        app.resume_queue("a")
        wait_until(
            lambda: set(_states(app, a_jobs)) == {JobState.COMPLETED},
            1.0,
            what="paused jobs ran within 1 s of resume (worker woken, not polled)",
        )
    assert sorted(r for r in ran if r.startswith("a")) == ["a0", "a1", "a2"]
    assert not next(s for s in app.queue_stats("a")).paused


def test_enqueue_wakes_an_idle_worker(make_app):
    app = make_app(SLOW_POLL)

    @app.task
    def ping() -> str:
        return "pong"

    with running_worker(app):
        time.sleep(0.2)  # let the worker go idle (waiting up to 5 s)
        job = ping.enqueue()
        assert job.result(timeout=1.0) == "pong"


def test_unique_key_dedupes_while_pending_then_allows_a_new_job(make_app):
    app = make_app()

    @app.task
    def welcome(user: int) -> int:
        return user

    first = welcome.options(key="welcome:42").enqueue(user=42)
    second = welcome.options(key="welcome:42").enqueue(user=42)
    assert second.id == first.id
    other = welcome.options(key="welcome:43").enqueue(user=43)
    assert other.id != first.id

    run_burst(app)
    assert app.get_job(first.id).state == JobState.COMPLETED

    third = welcome.options(key="welcome:42").enqueue(user=42)
    assert third.id != first.id
    assert third.state == JobState.QUEUED
    run_burst(app)
    assert app.get_job(third.id).state == JobState.COMPLETED
    assert app.get_job(first.id).state == JobState.COMPLETED


def test_unique_key_dedupes_while_active(make_app):
    app = make_app()
    started, release = threading.Event(), threading.Event()

    @app.task
    def hold() -> None:
        started.set()
        release.wait(5)

    with running_worker(app):
        first = hold.options(key="k").enqueue()
        assert started.wait(5)
        assert hold.options(key="k").enqueue().id == first.id
        release.set()
        first.result(timeout=5)


def test_priority_then_fifo_order(make_app):
    app = make_app()
    order: list[str] = []

    @app.task(queue="prio")
    def record(label: str) -> None:
        order.append(label)

    app.pause_queue("prio")
    plan = [("p5-a", 5), ("p1-a", 1), ("p10-a", 10), ("p5-b", 5), ("p1-b", 1), ("p3-a", 3)]
    plan += [("p5-c", 5), ("p1-c", 1)]
    jobs = [record.options(priority=p).enqueue(label=label) for label, p in plan]

    with running_worker(app, concurrency=1):
        app.resume_queue("prio")
        wait_until(lambda: len(order) == len(plan), 5, what="all ran")
        wait_until(lambda: set(_states(app, jobs)) == {JobState.COMPLETED}, 5)
    expected = [label for _, _, label in sorted((p, i, label) for i, (label, p) in enumerate(plan))]
    assert order == ["p1-a", "p1-b", "p1-c", "p3-a", "p5-a", "p5-b", "p5-c", "p10-a"]
    assert order == expected


def test_priority_holds_across_the_queues_of_one_worker(make_app):
    app = make_app()
    order: list[str] = []

    @app.task(queue="bulk", priority=10)
    def bulk(n: int) -> None:
        order.append(f"bulk{n}")

    @app.task(queue="urgent", priority=1)
    def urgent() -> None:
        order.append("urgent")

    for i in range(5):
        bulk.enqueue(n=i)
    urgent.enqueue()
    run_burst(app, concurrency=1)
    assert len(order) == 6
    assert order[0] == "urgent", order


def test_delayed_job_starts_at_its_time_not_before(make_app):
    app = make_app()

    @app.task
    def later() -> str:
        return "now"

    with running_worker(app):
        time.sleep(0.1)  # the worker is idle when the delayed job arrives
        job = later.options(delay=0.5).enqueue()
        assert job.state == JobState.SCHEDULED
        assert job.record.run_at >= job.record.enqueued_at + 0.5
        assert job.result(timeout=5) == "now"
    record = app.get_job(job.id).record
    assert record.started_at >= record.run_at
    assert record.started_at - record.run_at < 1.0


def test_delayed_job_enqueued_while_idle_starts_on_time_with_a_long_poll(make_app):
    app = make_app(SLOW_POLL)

    @app.task
    def later() -> str:
        return "now"

    with running_worker(app):
        time.sleep(0.2)  # the worker is idle, waiting up to 5 s for a wake-up
        job = later.options(delay=0.5).enqueue()
        assert job.result(timeout=7) == "now"
    record = app.get_job(job.id).record
    assert record.started_at >= record.run_at
    assert record.started_at - record.run_at < 1.0


def test_delayed_job_enqueued_before_the_worker_starts_on_time_with_a_long_poll(make_app):
    app = make_app(SLOW_POLL)

    @app.task
    def later() -> str:
        return "now"

    job = later.options(delay=0.5).enqueue()
    with running_worker(app):  # reads the next due time, sleeps until then
        assert job.result(timeout=5) == "now"
    record = app.get_job(job.id).record
    assert record.started_at >= record.run_at
    assert record.started_at - record.run_at < 1.0


def test_retry_with_short_backoff_starts_on_time_with_a_long_poll(make_app):
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=2.5, grace_period=2.0)
    )

    @app.task(max_attempts=2, backoff=0.2)
    def flaky() -> str:
        from conveyor import current_job

        if current_job().attempt == 1:
            time.sleep(0.2)  # the worker has gone idle by the time this attempt fails
            raise ValueError("first attempt fails")
        return "ok"

    with running_worker(app):
        job = flaky.enqueue()
        assert job.result(timeout=7) == "ok"
    record = app.get_job(job.id).record
    assert record.started_at >= record.run_at
    assert record.started_at - record.run_at < 1.0
