"""`conveyor jobs list|show|retry|cancel`."""

from __future__ import annotations

import click

from ..model.job import JobRecord
from ..model.states import JobState
from . import render
from .common import echo_json, get_state

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")


def _parse_state(ctx: click.Context, param: click.Parameter, value: str | None) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.group()
def jobs() -> None:
    """Inspect and manage jobs."""


@jobs.command("list")
@click.option("--queue", "-q", help="Only jobs of this queue.")
@click.option(
    "--state",
    "-s",
    callback=_parse_state,
    help="Only jobs in this state (scheduled, queued, active, completed, failed, cancelled, "
    "blocked).",
)
@click.option("--task", "-t", help="Only jobs of this task.")
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="At most."
)
@click.option("--before", metavar="ID", help="Only jobs older than this id (paging).")
@json_option
@click.pass_context
def list_jobs(
    ctx: click.Context,
    queue: str | None,
    state: JobState | None,
    task: str | None,
    limit: int,
    before: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    admin = get_state(ctx).bare_app().admin
    records = admin.list_jobs(queue=queue, state=state, task=task, limit=limit, before_id=before)
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    if not records:
        click.echo("no jobs match")
        return
    out = render.console()
    out.print(render.jobs_table(records, admin.store_time()))
    if len(records) == limit:
        out.print(
            f"(first {limit}; more with --limit or --before {records[-1].id})",
            style="dim",
            markup=False,
        )


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--full", is_flag=True, help="Show whole tracebacks, not only their last lines.")
@json_option
@click.pass_context
def show_job(ctx: click.Context, job_id: str, full: bool, as_json: bool) -> None:
    """Show every field of one job: data, result, progress, errors with tracebacks."""
    admin = get_state(ctx).bare_app().admin
    record = admin.require_job(job_id)
    if as_json:
        extra = {"backoff": record.backoff, "lease_expires_at": record.lease_expires_at}
        echo_json({**record.to_dict(), **extra})
        return
    render.echo_lines(render.job_detail(record, admin.store_time(), full=full))


def _report(record: JobRecord, as_json: bool) -> None:
    if as_json:
        echo_json(record.to_dict())
    elif record.state == JobState.ACTIVE and record.cancel_requested:
        click.echo(f"{record.id} active: cancel requested (the handler stops at its next check)")
    else:
        click.echo(f"{record.id} {record.state.value}")


@jobs.command("retry")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def retry_job(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Run a failed or cancelled job again (one more attempt allowed)."""
    _report(get_state(ctx).bare_app().admin.retry_job(job_id), as_json)


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def cancel_job(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a job: a pending one at once, a running one cooperatively."""
    _report(get_state(ctx).bare_app().admin.cancel_job(job_id), as_json)
