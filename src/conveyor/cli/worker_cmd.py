"""`conveyor worker APP`: run jobs until stopped (or, with --burst, until none is due)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import click

from ..app import Conveyor
from ..backends import open_backend
from ..model.errors import StoreError, StoreUnavailable
from ..worker.children import EXIT_STORE_UNREACHABLE, ChildSpec
from ..worker.observer import ChildReporter
from ..worker.runner import Recycling, Worker
from ..worker.supervisor import Supervisor
from .common import describe, error_line, get_state, redact, split_names

log = logging.getLogger("conveyor.cli")
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s"
STORE_WAIT_LOG_INTERVAL = 5.0
"""While the store cannot be reached at start-up, a warning this often."""
MAX_STORE_RETRY = 2.0
"""The longest pause between two tries to reach the store: it is used soon after it is back."""


def setup_logging() -> None:
    """INFO and above to stderr, one compact line each: time, level, message.

    Like `logging.basicConfig`, this leaves alone a logging setup the app made on import.
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, datefmt="%H:%M:%S"
    )


def _stop_before_start(signum: int, _frame: object) -> None:
    """SIGTERM/SIGINT before the worker handles signals itself: nothing is claimed yet, so
    stopping now is a clean stop (exit 0), not a crash for a supervisor to restart."""
    log.info("%s before the worker started: stopping", signal.Signals(signum).name)
    logging.shutdown()
    os._exit(0)


def _wait_for_store(app: Conveyor, parent_pid: int | None) -> None:
    """Open the store; while a server store cannot be reached, wait for it (a warning every
    few seconds) instead of exiting: an unreachable store is not a broken app. A bad URL,
    password or schema, or an unusable SQLite file, still fails at once."""
    if open_backend(app.url).capabilities.local_file:
        app.backend  # noqa: B018 -- open it now: a bad file fails before the worker starts
        return
    since = time.monotonic()
    last_log: float | None = None
    pause = 0.1
    while True:
        try:
            app.backend  # noqa: B018 -- opens it
        except StoreUnavailable as exc:  # anything else (password, schema) fails at once
            now = time.monotonic()
            if last_log is None or now - last_log >= STORE_WAIT_LOG_INTERVAL:
                last_log = now
                log.warning(
                    "the store %s cannot be reached (%s); waiting for it (%.0f s so far)",
                    redact(app.url),
                    describe(exc),
                    now - since,
                )
        else:
            if last_log is not None:
                log.warning("the store answers after %.1f s", time.monotonic() - since)
            return
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("supervisor %d is gone while waiting for the store: exiting", parent_pid)
            sys.exit(0)
        time.sleep(pause)
        pause = min(MAX_STORE_RETRY, pause * 2)


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
    help="Jobs run at once (per process).",
)
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker child processes under a supervisor; 0 runs one process, no supervisor.",
)
@click.option(
    "--min-processes",
    type=click.IntRange(min=1),
    help="Autoscaling: the fewest children (default: --processes).",
)
@click.option(
    "--max-processes",
    type=click.IntRange(min=1),
    help="Autoscaling: the most children (default: --processes).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    envvar="CONVEYOR_WORKER_MAX_JOBS",
    help="Recycle a worker process after this many jobs.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEYOR_WORKER_MAX_AGE",
    metavar="SECONDS",
    help="Recycle a worker process after this long.",
)
@click.option(
    "--max-rss-mb",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEYOR_WORKER_MAX_RSS_MB",
    help="Soft memory limit: finish the current jobs, then recycle.",
)
@click.option(
    "--hard-rss-mb",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEYOR_WORKER_HARD_RSS_MB",
    help="Hard memory limit (supervisor only): kill the child now, release its jobs.",
)
@click.option("--burst", is_flag=True, help="Exit once no job of the queues is due.")
@click.option("--worker-id", hidden=True)
@click.option("--report-fd", type=int, hidden=True)
@click.option("--parent-pid", type=int, hidden=True)
@click.option("--supervisor-id", hidden=True)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queue_args: tuple[str, ...],
    concurrency: int,
    processes: int,
    min_processes: int | None,
    max_processes: int | None,
    max_jobs: int | None,
    max_age: float | None,
    max_rss_mb: float | None,
    hard_rss_mb: float | None,
    burst: bool,
    worker_id: str | None,
    report_fd: int | None,
    parent_pid: int | None,
    supervisor_id: str | None,
) -> None:
    """Run the jobs of APP (module:attribute naming your Conveyor app).

    SIGTERM or Ctrl-C stops gracefully: running jobs get the grace period to finish, the rest
    go back to their queue. A second signal skips the grace period.

    With -p N a supervisor runs N child processes, restarts them when they crash, enforces
    hard timeouts and memory limits, and (with --min/--max-processes) scales with the queues.
    """
    # Until the worker (or supervisor) handles signals itself, a stop signal is a clean stop.
    signal.signal(signal.SIGTERM, _stop_before_start)
    # A supervised child ignores Ctrl-C: it reaches the whole group, the supervisor passes it on.
    signal.signal(signal.SIGINT, _stop_before_start if report_fd is None else signal.SIG_IGN)
    state = get_state(ctx)
    app = state.load_app(app_spec)
    queues = split_names(queue_args)
    if queue_args and not queues:
        raise click.BadParameter("give at least one queue name", param_hint="'--queues'")
    supervised = processes > 0 or min_processes is not None or max_processes is not None
    if supervised and burst:
        raise click.UsageError("--burst runs one process: leave out -p/--min/--max-processes")
    if hard_rss_mb is not None and not supervised and report_fd is None:
        raise click.UsageError("--hard-rss-mb needs a supervisor: add -p N")
    low = min_processes or max(processes, 1)
    high = max_processes or max(processes, low)
    if low > high:
        raise click.UsageError(f"--min-processes {low} is more than --max-processes {high}")
    if processes and not low <= processes <= high:
        raise click.UsageError(
            f"-p {processes} is outside --min-processes {low} .. --max-processes {high}; "
            "give -p alone, or only --min/--max-processes"
        )
    setup_logging()
    _wait_for_store(app, parent_pid)
    log.info(
        "store %s; tasks: %s", redact(app.url), ", ".join(sorted(app.tasks)) or "none registered"
    )
    if not app.tasks:
        log.warning("%s registers no tasks: every job it claims will fail", app_spec)
    if supervised:
        spec = ChildSpec(
            app_spec=app_spec,
            url=state.url if state.url_explicit else None,
            queues=tuple(queues) or None,
            concurrency=concurrency,
            max_jobs=max_jobs,
            max_age=max_age,
            soft_rss_mb=max_rss_mb,
            hard_rss_mb=hard_rss_mb,
        )
        ctx.exit(Supervisor(app, spec, low, high).run())
    reporter = ChildReporter(report_fd) if report_fd is not None else None
    runner = Worker(
        app,
        queues or None,
        concurrency,
        burst=burst,
        worker_id=worker_id,
        observer=reporter,
        recycling=Recycling(max_jobs, max_age, max_rss_mb, parent_pid),
        supervisor_id=supervisor_id,
    )
    try:
        runner.run_until_stopped(supervised=reporter is not None)
    except BaseException as exc:
        if reporter is not None:
            reporter.flush()
            if isinstance(exc, StoreError) and not reporter.said_hello:
                click.echo(error_line(exc), err=True)
                sys.exit(EXIT_STORE_UNREACHABLE)  # retried by the supervisor, not counted
        if runner.has_stuck_threads:
            click.echo(error_line(exc), err=True)
            _hard_exit(1)
        raise
    if reporter is not None:
        reporter.flush()  # the supervisor learns what ended before we exit
    if runner.has_stuck_threads:
        _hard_exit(0)
