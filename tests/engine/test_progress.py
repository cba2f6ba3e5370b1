"""Progress a handler reports before it returns is stored, for quick async and sync jobs."""

from __future__ import annotations

from conveyor import JobState, current_job

from .helpers import running_worker, wait_until


def test_progress_reported_before_returning_is_stored(make_app):
    app = make_app()

    @app.task
    async def quick_async(n: int) -> int:
        current_job().progress({"done": n})
        return n

    @app.task
    def quick_sync(n: int) -> int:
        current_job().progress({"done": n})
        current_job().progress({"done": n, "final": True})  # the newest one wins
        return n

    with running_worker(app, concurrency=20):
        jobs = [quick_async.enqueue(n=n) for n in range(40)]
        jobs += [quick_sync.enqueue(n=n) for n in range(40)]

        def all_done() -> bool:
            return all(app.get_job(j.id).state == JobState.COMPLETED for j in jobs)

        wait_until(all_done, 15, what="every job completed")
    for job in jobs:
        record = app.get_job(job.id).record
        n = record.data["n"]
        expected = {"done": n} if record.task == "quick_async" else {"done": n, "final": True}
        assert record.progress == expected, f"{record.task} {n}: progress {record.progress!r}"
