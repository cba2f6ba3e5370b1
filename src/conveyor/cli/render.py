"""Human-readable output: times, durations, the job and queue tables, detail views."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..backends.base import QueueStats, WorkerInfo
from ..model.job import JobRecord
from ..model.states import JobState

STATE_STYLES = {
    JobState.SCHEDULED: "cyan",
    JobState.QUEUED: "blue",
    JobState.ACTIVE: "yellow",
    JobState.COMPLETED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
    JobState.BLOCKED: "dim",
}
ERROR_WIDTH = 60
TRACEBACK_LINES = 12


def console() -> Console:
    """A console for stdout; when piped (no terminal, no COLUMNS) wide enough not to wrap."""
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=200)
    return out


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def duration(seconds: float | None) -> str:
    """0.25 -> "250 ms", 42 -> "42.0 s", 130 -> "2m 10s", 7300 -> "2h 1m", 200000 -> "2d 7h"."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def span(seconds: float) -> str:
    """A length of time in its largest whole unit: 5 -> "5s", 200 -> "3m", 7300 -> "2h"."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h"
    return f"{seconds // 86400:.0f}d"


def relative(ts: float | None, now: float) -> str:
    """How long ago ("3s ago") or ahead ("in 5m"); coarse, for reading at a glance."""
    if ts is None:
        return "-"
    delta = now - ts
    if abs(delta) < 1:
        return "now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def when(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{iso(ts)} ({relative(ts, now)})"


def truncate(text: str | None, width: int = ERROR_WIDTH) -> str:
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def compact_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def state_text(state: JobState) -> Text:
    return Text(state.value, style=STATE_STYLES.get(state, ""))


# jobs ---------------------------------------------------------------------------------------
def jobs_table(records: Sequence[JobRecord], now: float) -> Table:
    """One row per job; a SNOOZED column only when a listed job was ever snoozed."""
    snoozed = any(r.snoozes for r in records)
    rows = [
        (
            Text(r.id),
            Text(r.task),
            Text(r.queue),
            state_text(r.state),
            Text(f"{r.attempt}/{r.max_attempts}"),
            *((Text(str(r.snoozes)),) if snoozed else ()),
            Text(str(r.priority)),
            Text(relative(r.enqueued_at, now)),
            Text(truncate(r.last_error), style="red"),
        )
        for r in records
    ]
    headers = ("ID", "TASK", "QUEUE", "STATE", "ATTEMPT", *(("SNOOZED",) if snoozed else ()))
    headers += ("PRI", "ENQUEUED")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, header in enumerate(headers):
        # Every column but the last error keeps its width: a narrow terminal cuts the error.
        widest = max([len(header), *(len(row[i]) for row in rows)])
        right = header in ("ATTEMPT", "SNOOZED", "PRI")
        table.add_column(
            header, no_wrap=True, min_width=widest, justify="right" if right else "left"
        )
    table.add_column("LAST ERROR", overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def job_detail(record: JobRecord, now: float, *, full: bool) -> list[str]:
    """Every field of a job, one per line; tracebacks trimmed to their end unless `full`."""
    r = record
    state = r.state.value + (" (cancel requested)" if r.cancel_requested else "")
    ran = (
        duration(r.finished_at - r.started_at)
        if r.finished_at is not None and r.started_at is not None
        else None
    )
    fields: list[tuple[str, str]] = [
        ("id", r.id),
        ("task", r.task),
        ("queue", r.queue),
        ("state", state),
        ("attempt", f"{r.attempt} of {r.max_attempts}"),
        ("priority", str(r.priority)),
        ("key", r.key or "-"),
        ("timeout", "-" if r.timeout is None else duration(r.timeout)),
        ("enqueued", when(r.enqueued_at, now)),
        ("run at", when(r.run_at, now)),
        ("started", when(r.started_at, now)),
        ("finished", when(r.finished_at, now)),
        ("run time", ran or "-"),
        ("worker", r.worker_id or "-"),
    ]
    if r.snoozes:
        fields.insert(5, ("snoozes", f"{r.snoozes} (postponed without counting an attempt)"))
    if r.state == JobState.ACTIVE and r.lease_expires_at is not None:
        fields.append(("lease", f"until {when(r.lease_expires_at, now)}"))
    if r.backoff:
        fields.append(("backoff", compact_json(r.backoff)))
    lines = [f"{name:<10} {value}" for name, value in fields]
    for name, value in (("data", r.data), ("progress", r.progress), ("result", r.result)):
        lines.extend(_json_field(name, value))
    lines.append(f"errors     {len(r.errors) or 'none'}")
    for error in r.errors:
        lines.append(f"  attempt {error.attempt} at {iso(error.at)}: {error.error}")
        if error.traceback:
            trace = error.traceback.rstrip("\n").splitlines()
            if not full and len(trace) > TRACEBACK_LINES:
                hidden = len(trace) - TRACEBACK_LINES
                lines.append(f"    ... {hidden} earlier traceback lines (--full shows them)")
                trace = trace[-TRACEBACK_LINES:]
            lines.extend(f"    {line}" for line in trace)
    return lines


def _json_field(name: str, value: Any) -> list[str]:
    text = compact_json(value)
    if len(text) <= 80:
        return [f"{name:<10} {text}"]
    pretty = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode().splitlines()
    return [f"{name:<10} {pretty[0]}", *(f"{'':<10} {line}" for line in pretty[1:])]


def echo_lines(lines: Iterable[str]) -> None:
    click.echo("\n".join(lines))


# queues -------------------------------------------------------------------------------------
QUEUE_COLUMNS = ("scheduled", "queued", "active", "completed", "failed", "cancelled")


def queues_table(stats: Iterable[QueueStats]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("QUEUE", no_wrap=True)
    table.add_column("PAUSED", no_wrap=True)
    for column in QUEUE_COLUMNS:
        table.add_column(column.upper(), justify="right", no_wrap=True)
    for s in stats:
        paused = Text("paused", style="yellow") if s.paused else Text("no")
        table.add_row(Text(s.name), paused, *(str(s.counts.get(c, 0)) for c in QUEUE_COLUMNS))
    return table


def queue_dict(s: QueueStats, now: float) -> dict[str, Any]:
    return {
        "name": s.name,
        "paused": s.paused,
        "counts": dict(s.counts),
        "oldest_queued_at": s.oldest_queued_at,
        "oldest_waiting_seconds": _age(s.oldest_queued_at, now),
        "completed_last_minute": s.completed_last_minute,
        "failed_last_minute": s.failed_last_minute,
        "avg_wait_seconds": s.avg_wait_seconds,
        "avg_run_seconds": s.avg_run_seconds,
        "error_rate": s.error_rate,
    }


def _age(ts: float | None, now: float) -> float | None:
    return None if ts is None else max(0.0, now - ts)


def queue_detail(s: QueueStats, now: float) -> list[str]:
    rate = "-" if s.error_rate is None else f"{s.error_rate:.1%}"
    oldest = (
        "-"
        if s.oldest_queued_at is None
        else f"{duration(_age(s.oldest_queued_at, now))} (since {iso(s.oldest_queued_at)})"
    )
    fields: list[tuple[str, str]] = [
        ("queue", s.name),
        ("paused", "yes" if s.paused else "no"),
        *((state.value, str(s.counts.get(state.value, 0))) for state in JobState),
        ("oldest waiting", oldest),
        ("completed last minute", str(s.completed_last_minute)),
        ("failed last minute", str(s.failed_last_minute)),
        ("avg wait (1h)", duration(s.avg_wait_seconds)),
        ("avg run time (1h)", duration(s.avg_run_seconds)),
        ("error rate", rate),
    ]
    return [f"{name:<22} {value}" for name, value in fields]


# workers ------------------------------------------------------------------------------------
def worker_tree(workers: Sequence[WorkerInfo]) -> list[tuple[int, WorkerInfo]]:
    """(depth, worker) in display order: each supervisor followed by its live children.

    A child whose supervisor is not listed (gone, or its entry expired) stands on its own.
    """
    live = {w.id for w in workers}
    children: dict[str, list[WorkerInfo]] = {}
    for w in workers:
        if w.parent_id in live and w.parent_id != w.id:
            children.setdefault(w.parent_id, []).append(w)
    ordered: list[tuple[int, WorkerInfo]] = []
    seen: set[str] = set()

    def visit(w: WorkerInfo, depth: int) -> None:
        if w.id in seen:
            return
        seen.add(w.id)
        ordered.append((depth, w))
        for child in children.get(w.id, ()):
            visit(child, depth + 1)

    for w in workers:
        if w.parent_id not in live or w.parent_id == w.id:
            visit(w, 0)
    for w in workers:  # only entries in a cycle of parents are left
        visit(w, 0)
    return ordered


WORKER_HEADERS = (
    "ID",
    "KIND",
    "LEADER",
    "HOST",
    "PID",
    "QUEUES",
    "CONC",
    "DONE",
    "RUNNING",
    "RSS MB",
    "UP",
    "LAST BEAT",
)
_WORKER_NUMBERS = {"PID", "CONC", "DONE", "RUNNING", "RSS MB", "UP", "LAST BEAT"}


def workers_table(
    tree: Iterable[tuple[int, WorkerInfo]], now: float, leader: str | None = None
) -> Table:
    """`now` is the store's clock, which stamps the beats; `leader` the maintenance leader."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in WORKER_HEADERS:
        right = header in _WORKER_NUMBERS
        table.add_column(header, no_wrap=True, justify="right" if right else "left")
    for depth, w in tree:
        table.add_row(
            Text(("  " * (depth - 1) + "└ " if depth else "") + w.id),
            Text(w.kind, style="bold" if w.kind == "supervisor" else ""),
            Text("yes", style="bold green") if w.id == leader else Text("-"),
            Text(w.hostname),
            str(w.pid),
            Text(",".join(w.queues)),
            str(w.concurrency),
            str(w.jobs_done),
            str(len(w.current_jobs)),
            "-" if w.rss_mb is None else f"{w.rss_mb:.0f}",
            span(max(0.0, now - w.started_at)),
            f"{span(max(0.0, now - w.heartbeat_at))} ago",
        )
    return table
