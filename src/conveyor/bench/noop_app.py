"""The app `conveyor bench` runs in its worker processes: one task that does nothing."""

from __future__ import annotations

from conveyor import Conveyor

BENCH_QUEUE = "conveyor-bench"

app = Conveyor()


@app.task(queue=BENCH_QUEUE, max_attempts=1)
async def noop() -> None:
    """No work at all, so the figures measure Conveyor and its store, not the job."""
