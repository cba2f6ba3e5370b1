"""Running jobs: async and sync handlers, the job context, progress, enqueue forms, payloads."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from conveyor import JobState, PayloadError, current_job
from conveyor.backends.base import JobListParams

from .helpers import running_worker, wait_until


def _stored_jobs(app):
    return app.backend.job_list(JobListParams(limit=1000))


def test_async_and_sync_handlers_return_their_results(make_app):
    app = make_app()

    @app.task
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    @app.task
    def shout(word: str) -> dict:
        return {"word": word.upper(), "thread": threading.current_thread().name}

    with running_worker(app):
        async_job = add.enqueue(a=2, b=3)
        sync_job = shout.enqueue(word="hi")
        assert async_job.result(timeout=5) == 5
        result = sync_job.result(timeout=5)
    assert result["word"] == "HI"
    assert result["thread"] != threading.current_thread().name
    record = app.get_job(async_job.id).record
    assert record.state == JobState.COMPLETED
    assert record.attempt == 1
    assert record.errors == ()
    assert record.started_at is not None and record.finished_at >= record.started_at


def test_current_job_gives_id_attempt_and_data(make_app):
    app = make_app()

    @app.task(queue="ctx")
    def whoami(x: int, tags: list) -> dict:
        ctx = current_job()
        return {
            "id": ctx.id,
            "attempt": ctx.attempt,
            "data": ctx.data,
            "task": ctx.task,
            "queue": ctx.queue,
        }

    with running_worker(app):
        job = whoami.enqueue(x=7, tags=["a", "b"])
        result = job.result(timeout=5)
    assert result == {
        "id": job.id,
        "attempt": 1,
        "data": {"x": 7, "tags": ["a", "b"]},
        "task": "whoami",
        "queue": "ctx",
    }


def test_current_job_outside_a_handler_raises():
    with pytest.raises(RuntimeError, match="only available inside"):
        current_job()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_progress_is_visible_while_the_job_runs(make_app, kind):
    app = make_app()
    release = threading.Event()

    if kind == "sync":

        @app.task(name="slow")
        def slow_sync() -> str:
            current_job().progress(50)
            assert release.wait(5)
            return "done"

    else:

        @app.task(name="slow")
        async def slow_async() -> str:
            current_job().progress(50)
            for _ in range(500):
                if release.is_set():
                    break
                await asyncio.sleep(0.01)
            return "done"

    with running_worker(app):
        job = app.enqueue("slow")
        wait_until(lambda: app.get_job(job.id).progress == 50, 5, what="progress 50 stored")
        assert app.get_job(job.id).state == JobState.ACTIVE
        release.set()
        assert job.result(timeout=5) == "done"


def test_enqueue_async_inside_asyncio_run(make_app):
    app = make_app()

    @app.task
    async def double(n: int) -> int:
        return n * 2

    async def main():
        job = await double.enqueue_async(n=21)
        return job, await job.result_async(timeout=5)

    with running_worker(app):
        job, result = asyncio.run(main())
    assert result == 42
    assert app.get_job(job.id).state == JobState.COMPLETED


def test_enqueue_by_name(make_app):
    app = make_app()

    @app.task(queue="mail", priority=2)
    def send(to: str, subject: str) -> str:
        return f"{to}:{subject}"

    with running_worker(app):
        job = app.enqueue("send", {"to": "a@b.c", "subject": "hi"})
        assert job.record.queue == "mail"
        assert job.record.priority == 2
        assert job.result(timeout=5) == "a@b.c:hi"


def test_enqueue_by_name_of_unknown_task_fails_naming_it(make_app):
    app = make_app()

    @app.task
    def known() -> None:
        return None

    with running_worker(app):
        job = app.enqueue("ghost_task", {"x": 1}, max_attempts=2, backoff=0.01)
        wait_until(lambda: app.get_job(job.id).state == JobState.FAILED, 5, what="job failed")
    record = app.get_job(job.id).record
    assert record.attempt == 2
    assert [e.attempt for e in record.errors] == [1, 2]
    for error in record.errors:
        assert "no handler" in error.error
        assert "ghost_task" in error.error


def test_enqueue_many_inserts_all_in_one_call(make_app):
    app = make_app()

    @app.task
    def square(n: int) -> int:
        return n * n

    jobs = app.enqueue_many([square.prepare(n=i) for i in range(10)])
    assert len({j.id for j in jobs}) == 10
    stored = {r.id: r for r in _stored_jobs(app)}
    assert set(stored) == {j.id for j in jobs}
    assert all(r.state == JobState.QUEUED for r in stored.values())
    with running_worker(app):
        assert [j.result(timeout=5) for j in jobs] == [i * i for i in range(10)]


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "datetime"), ({1, 2}, "set")],
)
def test_non_json_payload_is_refused_naming_the_field(make_app, value, type_name):
    app = make_app()

    @app.task
    def handler(when: object) -> None:
        return None

    with pytest.raises(PayloadError) as info:
        handler.enqueue(when=value)
    message = str(info.value)
    assert "when" in message
    assert type_name in message
    with pytest.raises(PayloadError, match="when"):
        app.enqueue("handler", {"when": value})
    assert _stored_jobs(app) == []


def test_payload_over_the_limit_is_refused(make_app):
    app = make_app(payload_limit=1000)

    @app.task
    def handler(text: str) -> None:
        return None

    handler.enqueue(text="x" * 100)  # under the limit: fine
    with pytest.raises(PayloadError) as info:
        handler.enqueue(text="x" * 2000)
    assert "1,000-byte limit" in str(info.value)
    assert len(_stored_jobs(app)) == 1


def test_wrong_keyword_arguments_are_refused_at_enqueue(make_app):
    app = make_app()

    @app.task
    def greet(name: str, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    with pytest.raises(TypeError, match="greet"):
        greet.enqueue(nmae="typo")
    with pytest.raises(TypeError, match="greet"):
        greet.enqueue()  # missing a required argument
    with pytest.raises(TypeError, match="greet"):
        app.enqueue("greet", {"name": "x", "extra": 1})
    with pytest.raises(TypeError):
        greet.enqueue("positional")
    assert _stored_jobs(app) == []
