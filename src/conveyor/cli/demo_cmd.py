"""`conveyor demo`: enqueue a few hundred jobs of the demo shop and watch them run."""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import threading
import time
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..backends.base import QueueStats
from ..examples import demo_app
from ..model.states import FINISHED_STATES, JobState
from ..worker.runner import Worker

SHOWN_STATES = [
    JobState.SCHEDULED,
    JobState.QUEUED,
    JobState.ACTIVE,
    JobState.COMPLETED,
    JobState.FAILED,
]


@click.command()
@click.option(
    "--jobs",
    "per_task",
    default=75,
    show_default=True,
    help="Jobs to enqueue per task (four tasks).",
)
@click.option("-c", "--concurrency", default=16, show_default=True)
@click.pass_context
def demo(ctx: click.Context, per_task: int, concurrency: int) -> None:
    """Run the demo shop on an embedded SQLite file with a live view, then summarise."""
    root = ctx.find_root()
    explicit = root.get_parameter_source("url") not in (ParameterSource.DEFAULT, None)
    with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as tmp:
        url = root.params["url"] if explicit else f"sqlite:///{Path(tmp) / 'demo.db'}"
        _run(url, per_task, concurrency)


def _run(url: str, per_task: int, concurrency: int) -> None:
    console = Console()
    # Failures are part of the demo and the summary shows them: keep the log quiet.
    logging.getLogger("conveyor").setLevel(logging.ERROR)
    app = demo_app.app
    app.use_url(url)
    console.print(f"[bold]Conveyor demo[/] on [cyan]{url}[/]")
    jobs = []
    for i in range(per_task):
        jobs.append(demo_app.fetch_page.prepare(url=f"https://example.com/page/{i}"))
        jobs.append(demo_app.make_thumbnail.prepare(image_id=i, size=random.choice([64, 128])))
        jobs.append(
            demo_app.charge_card.prepare(order_id=1000 + i, cents=random.randint(100, 9999))
        )
        jobs.append(demo_app.sync_crm.prepare(account=f"acct-{i % 7}"))
    started = time.perf_counter()
    app.enqueue_many(jobs)
    console.print(f"enqueued {len(jobs)} jobs in one transaction")

    worker = Worker(app, concurrency=concurrency)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    total = len(jobs)
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            stats = app.queue_stats()
            live.update(_view(stats, total, time.perf_counter() - started))
            finished = sum(s.counts.get(st.value, 0) for s in stats for st in FINISHED_STATES)
            if finished >= total:
                break
            time.sleep(0.15)
    console.print()
    worker.stop()
    thread.join(timeout=10)
    elapsed = time.perf_counter() - started
    _summary(console, app.queue_stats(), elapsed)
    failed = app.admin.list_jobs(state=JobState.FAILED, limit=1)
    if failed:
        sample = failed[0]
        console.print(
            f"\nA job in the failed set: [bold]{sample.id}[/] ({sample.task}), "
            f"{len(sample.errors)} attempts, last error: [red]{sample.last_error}[/]"
        )
        console.print(
            f"See it with: conveyor --url {url} jobs show {sample.id}"
            if "conveyor-demo-" not in url
            else "(the demo's database is temporary and removed now)"
        )
    app.close()


def _view(stats: list[QueueStats], total: int, elapsed: float) -> Group:
    table = Table(title=f"{elapsed:5.1f} s", title_justify="left")
    table.add_column("queue")
    for state in SHOWN_STATES:
        table.add_column(state.value, justify="right")
    finished = 0
    for s in stats:
        table.add_row(s.name, *(str(s.counts.get(st.value, 0)) for st in SHOWN_STATES))
        finished += sum(s.counts.get(st.value, 0) for st in FINISHED_STATES)
    bar_width = 40
    filled = int(bar_width * finished / max(total, 1))
    bar = (
        f"[green]{'█' * filled}[/][dim]{'░' * (bar_width - filled)}[/] {finished}/{total} finished"
    )
    return Group(table, bar)


def _summary(console: Console, stats: list[QueueStats], elapsed: float) -> None:
    table = Table(title=f"Demo finished in {elapsed:.1f} s", title_justify="left")
    for column in ("queue", "completed", "failed", "avg wait", "avg run", "error rate"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in stats:
        table.add_row(
            s.name,
            str(s.counts.get("completed", 0)),
            str(s.counts.get("failed", 0)),
            _ms(s.avg_wait_seconds),
            _ms(s.avg_run_seconds),
            "-" if s.error_rate is None else f"{s.error_rate:.0%}",
        )
    console.print(table)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
