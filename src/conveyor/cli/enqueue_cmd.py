"""`conveyor enqueue TASK --data JSON`: add one job from the shell."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from .common import CliError, echo_json, get_state


def read_data(source: str) -> dict[str, Any]:
    """`--data`: a JSON object, `@path` to read one from a file, or `-` for stdin."""
    where = "--data"
    if source == "-":
        where = "--data from stdin"
        text: str | bytes = sys.stdin.buffer.read()
    elif source.startswith("@"):
        path = source[1:]
        where = f"--data file {path}"
        try:
            with open(path, "rb") as fh:
                text = fh.read()
        except OSError as exc:
            raise CliError(f"cannot read {where}: {exc.strerror or exc}") from None
    else:
        text = source
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(
            f"{where} must be a JSON object of the task's named arguments "
            f'(like {{"to": "a@b.c"}}), not a JSON {_json_kind(data)}'
        )
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


@click.command()
@click.argument("task")
@click.option(
    "--data",
    "-d",
    "source",
    default="{}",
    show_default=True,
    help="The job's named arguments: a JSON object, @file to read it from a file, - for stdin.",
)
@click.option("--queue", "-q", help="Queue (default: the task's, else 'default').")
@click.option("--priority", "-p", type=int, help="Lower runs first (1 critical ... 10 background).")
@click.option("--delay", type=click.FloatRange(min=0), metavar="SECONDS", help="Run later.")
@click.option("--key", help="Uniqueness key: no new job while one with this key is pending.")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts before failing.")
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:ATTR",
    help="Your Conveyor app: its task defaults apply and data is checked against the handler.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON.")
@click.pass_context
def enqueue(
    ctx: click.Context,
    task: str,
    source: str,
    queue: str | None,
    priority: int | None,
    delay: float | None,
    key: str | None,
    max_attempts: int | None,
    app_spec: str | None,
    as_json: bool,
) -> None:
    """Add a job for TASK and print its id."""
    data = read_data(source)
    given = {"queue": queue, "priority": priority, "delay": delay, "key": key}
    given["max_attempts"] = max_attempts
    options = {name: value for name, value in given.items() if value is not None}
    state = get_state(ctx)
    app = state.load_app(app_spec) if app_spec else state.bare_app()
    job = app.enqueue(task, data, **options)
    if as_json:
        echo_json(job.record.to_dict())
    else:
        click.echo(job.id)
