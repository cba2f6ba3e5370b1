"""`conveyor workers`: the live worker processes, from the store's worker registry."""

from __future__ import annotations

import click

from . import render
from .common import echo_json, get_state


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers: host, pid, queues, jobs done and running, memory, uptime, last beat.

    A supervisor's child processes are listed right after it. The worker marked LEADER runs
    the maintenance services (rescue of lost jobs, pruning, compaction).
    """
    view = get_state(ctx).bare_app().admin.workers()
    tree = render.worker_tree(view.workers)
    if as_json:  # every WorkerInfo field, as the stores keep it, plus "leader"
        by_id = {w["id"]: w for w in view.to_dicts()}
        echo_json([by_id[w.id] for _, w in tree])
        return
    if not tree:
        click.echo("no live workers")
        return
    render.console().print(render.workers_table(tree, view.now, view.leader))
