"""`conveyor queues list|stats|pause|resume`."""

from __future__ import annotations

import click

from . import render
from .common import CliError, echo_json, get_state

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")


@click.group()
def queues() -> None:
    """Inspect, pause and resume queues."""


@queues.command("list")
@json_option
@click.pass_context
def list_queues(ctx: click.Context, as_json: bool) -> None:
    """Every queue with its paused flag and job counts per state."""
    admin = get_state(ctx).bare_app().admin
    stats = admin.queue_stats()
    if as_json:
        now = admin.store_time()
        echo_json([render.queue_dict(s, now) for s in stats])
        return
    if not stats:
        click.echo("no queues yet (a queue appears with its first job)")
        return
    render.console().print(render.queues_table(stats))


@queues.command("stats")
@click.argument("name")
@json_option
@click.pass_context
def queue_stats(ctx: click.Context, name: str, as_json: bool) -> None:
    """Counts, throughput, latency and error rate of one queue."""
    admin = get_state(ctx).bare_app().admin
    found = admin.queue_stats(name)
    if not found:
        known = ", ".join(s.name for s in admin.queue_stats()) or "none yet"
        raise CliError(f"no queue named {name!r} (known queues: {known})")
    now = admin.store_time()
    if as_json:
        echo_json(render.queue_dict(found[0], now))
        return
    render.echo_lines(render.queue_detail(found[0], now))


@queues.command("pause")
@click.argument("name")
@click.pass_context
def pause_queue(ctx: click.Context, name: str) -> None:
    """Stop workers from claiming this queue's jobs (running ones finish)."""
    get_state(ctx).bare_app().admin.pause_queue(name)
    click.echo(f"queue {name} paused")


@queues.command("resume")
@click.argument("name")
@click.pass_context
def resume_queue(ctx: click.Context, name: str) -> None:
    """Let workers claim this queue's jobs again."""
    get_state(ctx).bare_app().admin.resume_queue(name)
    click.echo(f"queue {name} resumed")
