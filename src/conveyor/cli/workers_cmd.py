"""`conveyor workers`: the live worker processes, from the store's worker registry."""

from __future__ import annotations

import time

import click

from . import render
from .common import echo_json, get_state


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers: host, pid, queues, jobs done and running, memory, uptime, last beat.

    A supervisor's child processes are listed right after it.
    """
    now = time.time()
    found = get_state(ctx).bare_app().backend.worker_list(now)
    tree = render.worker_tree(found)
    if as_json:
        echo_json([w for _, w in tree])  # every WorkerInfo field, as the stores keep it
        return
    if not tree:
        click.echo("no live workers")
        return
    render.console().print(render.workers_table(tree, now))
