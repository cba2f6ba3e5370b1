"""`conveyor bench`: measure the store and engine on this machine."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..bench.runner import BenchResult, run_bench

PHASES = {
    "enqueue": "enqueue one by one",
    "bulk": "bulk enqueue",
    "drain": "drain with workers",
    "latency": "latency at a steady rate",
}


@click.command()
@click.option("--n", "n", default=5000, show_default=True, help="Jobs per enqueue phase.")
@click.option("--seconds", default=10.0, show_default=True, help="Length of the latency phase.")
@click.option("--rate", default=200.0, show_default=True, help="Jobs/s in the latency phase.")
@click.option("-p", "--processes", default=2, show_default=True, help="Drain worker processes.")
@click.option("-c", "--concurrency", default=100, show_default=True, help="Per drain worker.")
@click.option(
    "--supervised",
    is_flag=True,
    help="Drain with one supervisor of -p children (conveyor worker -p N) instead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_context
def bench(
    ctx: click.Context,
    n: int,
    seconds: float,
    rate: float,
    processes: int,
    concurrency: int,
    supervised: bool,
    as_json: bool,
) -> None:
    """Enqueue, bulk-enqueue and drain no-op jobs, and measure enqueue->start latency.

    Without --url it runs on a temporary SQLite file; with --url it uses (and adds jobs to the
    `conveyor-bench` queue of) that store.
    """
    if n < 1 or seconds <= 0 or rate <= 0 or processes < 1 or concurrency < 1:
        raise click.UsageError("--n, --seconds, --rate, -p and -c must all be positive")
    root = ctx.find_root()
    explicit = root.get_parameter_source("url") not in (ParameterSource.DEFAULT, None)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        url = root.params["url"] if explicit else f"sqlite:///{Path(tmp) / 'bench.db'}"
        console = Console(stderr=as_json)
        with Progress(
            TextColumn("{task.description:<26}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=as_json,
        ) as bar:
            tasks = {key: bar.add_task(label, total=None) for key, label in PHASES.items()}

            def report(phase: str, done: int, total: int) -> None:
                bar.update(tasks[phase], completed=done, total=total)

            result = run_bench(url, n, seconds, rate, processes, concurrency, report, supervised)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        console.print(_table(result, url if explicit else "sqlite (temporary file)"))


def _table(r: BenchResult, where: str) -> Table:
    table = Table(
        title=f"conveyor bench · {where} · {r.cpus} CPUs · Python {r.python}", title_justify="left"
    )
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_row(f"enqueue, one by one ({r.n:,})", f"{r.enqueue_per_s:,.0f} jobs/s")
    table.add_row(f"bulk enqueue ({r.n:,})", f"{r.bulk_enqueue_per_s:,.0f} jobs/s")
    table.add_row(
        f"drain ({2 * r.n:,}; {r.drain_processes} {'supervised ' if r.drain_supervised else ''}"
        f"processes x {r.drain_concurrency})",
        f"{r.drain_per_s:,.0f} jobs/s",
    )
    table.add_row(
        f"enqueue->start p50 / p95 / p99 ({r.lat_rate_per_s:g}/s, {r.lat_seconds:g} s)",
        f"{r.lat_p50_ms:.2f} / {r.lat_p95_ms:.2f} / {r.lat_p99_ms:.2f} ms",
    )
    table.add_row("worker peak RSS", f"{r.worker_rss_mb:.1f} MB")
    return table
