"""`conveyor worker APP`: run jobs until stopped (or, with --burst, until none is due)."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..worker.runner import Worker
from .common import error_line, get_state, redact, split_names

log = logging.getLogger("conveyor.cli")
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s"


def setup_logging() -> None:
    """INFO and above to stderr, one compact line each: time, level, message.

    Like `logging.basicConfig`, this leaves alone a logging setup the app made on import.
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, datefmt="%H:%M:%S"
    )


def _hard_exit(code: int) -> None:
    """A sync handler thread cannot be stopped, and would hold the interpreter's exit."""
    log.warning("a job's thread is still running (timed out or released); exiting hard")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--queues",
    "-q",
    "queue_args",
    multiple=True,
    metavar="A,B",
    help="Queues to work, comma-separated (default: the queues of the app's tasks).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs run at once.",
)
@click.option("--burst", is_flag=True, help="Exit once no job of the queues is due.")
@click.pass_context
def worker(
    ctx: click.Context, app_spec: str, queue_args: tuple[str, ...], concurrency: int, burst: bool
) -> None:
    """Run the jobs of APP (module:attribute naming your Conveyor app).

    SIGTERM or Ctrl-C stops gracefully: running jobs get the grace period to finish, the rest
    go back to their queue. A second signal skips the grace period.
    """
    app = get_state(ctx).load_app(app_spec)
    queues = split_names(queue_args)
    if queue_args and not queues:
        raise click.BadParameter("give at least one queue name", param_hint="'--queues'")
    setup_logging()
    app.backend  # noqa: B018 -- open the store now: a bad URL fails before the worker starts
    log.info(
        "store %s; tasks: %s", redact(app.url), ", ".join(sorted(app.tasks)) or "none registered"
    )
    if not app.tasks:
        log.warning("%s registers no tasks: every job it claims will fail", app_spec)
    runner = Worker(app, queues or None, concurrency, burst=burst)
    try:
        runner.run_until_stopped()
    except BaseException as exc:
        if runner.has_stuck_threads:
            click.echo(error_line(exc), err=True)
            _hard_exit(1)
        raise
    if runner.has_stuck_threads:
        _hard_exit(0)
