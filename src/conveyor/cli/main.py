"""The `conveyor` command group, and `main()`: every error becomes one `error: ...` line."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import NoReturn

import click
from click.core import ParameterSource

from ..backends import DEFAULT_URL
from ..model.errors import ConveyorError
from .common import CliError, CliState, error_line
from .enqueue_cmd import enqueue
from .jobs_cmd import jobs
from .migrate_cmd import migrate
from .queues_cmd import queues
from .worker_cmd import worker
from .workers_cmd import workers

EXPLICIT = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The store (env CONVEYOR_URL). Given, it overrides the URL of a loaded app.",
)
@click.version_option(package_name="conveyor", prog_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, url: str) -> None:
    """Conveyor: background jobs for Python."""
    state = CliState(url=url, url_explicit=ctx.get_parameter_source("url") in EXPLICIT)
    ctx.obj = state
    ctx.call_on_close(state.close)


cli.add_command(worker)
cli.add_command(enqueue)
cli.add_command(jobs)
cli.add_command(queues)
cli.add_command(workers)
cli.add_command(migrate)

from .bench_cmd import bench  # noqa: E402 -- written separately; registered like the others
from .demo_cmd import demo  # noqa: E402

cli.add_command(demo)
cli.add_command(bench)

EXPECTED_ERRORS = (ConveyorError, CliError, ValueError, TypeError, OSError, sqlite3.Error)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code. Errors are reported on stderr, one line."""
    try:
        result = cli.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return _fail(error_line(exc) + hint, exc.exit_code)
    except click.ClickException as exc:
        return _fail(error_line(exc), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        return _fail("error: interrupted", 130)
    except CliError as exc:
        return _fail(error_line(exc), exc.exit_code)
    except EXPECTED_ERRORS as exc:
        return _fail(error_line(exc), 1)
    except Exception as exc:
        if os.environ.get("CONVEYOR_DEBUG"):
            raise
        return _fail(error_line(exc) + " (unexpected; CONVEYOR_DEBUG=1 shows the traceback)", 1)
    return result if isinstance(result, int) else 0


def _fail(line: str, code: int) -> int:
    click.echo(line, err=True)
    return code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))
