"""One store, filled through the CLI and worked by `conveyor worker --burst`, then read back.

The store is built once per module (every subprocess costs ~0.3 s); these tests only read it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from .helpers import Cli, make_cli


@dataclass
class Worked:
    cli: Cli
    add_id: str
    boom_id: str
    report: dict[str, Any]
    worker_stderr: str


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> Worked:
    cli = make_cli(tmp_path_factory.mktemp("cli"))
    add_id = cli.ok("enqueue", "add", "--data", '{"a": 2, "b": 3}').strip()
    boom_id = cli.ok("enqueue", "boom", "--app", "myapp:app").strip()
    report = cli.json(
        "enqueue", "report", "--app", "myapp:app", "--data", '{"name": "q1"}', "--delay", "3600"
    )
    proc = cli("worker", "myapp:app", "--burst")
    assert proc.returncode == 0, proc.stderr
    return Worked(cli, add_id, boom_id, report, proc.stderr)


def test_enqueue_prints_the_id_and_app_task_defaults_apply(worked: Worked) -> None:
    assert re.fullmatch(r"[0-9A-Z]{26}", worked.add_id)
    report = worked.report
    assert (report["task"], report["data"]) == ("report", {"name": "q1"})
    assert (report["queue"], report["priority"], report["max_attempts"]) == ("reports", 2, 4)
    assert report["state"] == "scheduled"
    assert report["run_at"] >= report["enqueued_at"] + 3599


def test_worker_logs_compact_lines_to_stderr(worked: Worked) -> None:
    lines = worked.worker_stderr.splitlines()
    assert lines, "the worker logged nothing"
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} [A-Z]+ ", line) for line in lines), lines
    assert any("started" in line and "default" in line for line in lines)
    assert "Traceback" not in worked.worker_stderr


def test_show_completed_job_displays_its_result(worked: Worked) -> None:
    cli = worked.cli
    job = cli.json("jobs", "show", worked.add_id)
    assert (job["state"], job["result"], job["attempt"]) == ("completed", 5, 1)
    assert job["data"] == {"a": 2, "b": 3}
    assert job["finished_at"] >= job["started_at"] >= job["enqueued_at"]
    text = cli.ok("jobs", "show", worked.add_id)
    fields = dict(line.split(None, 1) for line in text.splitlines() if line and line[0] != " ")
    assert fields["id"] == worked.add_id
    assert fields["state"] == "completed"
    assert fields["result"] == "5"
    assert json.loads(fields["data"]) == {"a": 2, "b": 3}


def test_show_failed_job_displays_error_and_traceback_tail(worked: Worked) -> None:
    cli = worked.cli
    job = cli.json("jobs", "show", worked.boom_id)
    assert job["state"] == "failed"
    [error] = job["errors"]
    assert error["error"] == "RuntimeError: kaboom"
    assert "_deep" in error["traceback"]

    short = cli.ok("jobs", "show", worked.boom_id)
    full = cli.ok("jobs", "show", worked.boom_id, "--full")
    assert "attempt 1 at " in short and "RuntimeError: kaboom" in short
    assert "raise RuntimeError" in short  # the end of the traceback is shown
    assert "earlier traceback lines" in short
    assert "Traceback (most recent call last)" not in short
    assert "Traceback (most recent call last)" in full
    assert len(full.splitlines()) > len(short.splitlines())


def test_jobs_list_shows_a_table_and_filters(worked: Worked) -> None:
    cli = worked.cli
    table = cli.ok("jobs", "list")
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["ID", "TASK", "QUEUE", "STATE"]
    by_id = {row.split()[0]: row for row in rows}
    assert by_id[worked.add_id].split()[1:4] == ["add", "default", "completed"]
    assert "RuntimeError: kaboom" in by_id[worked.boom_id]
    assert "failed" in by_id[worked.boom_id].split()
    assert by_id[worked.report["id"]].split()[1:4] == ["report", "reports", "scheduled"]

    def ids(*args: str) -> list[str]:
        return [job["id"] for job in cli.json("jobs", "list", *args)]

    assert ids("--state", "FAILED") == [worked.boom_id]
    assert ids("--task", "add") == [worked.add_id]
    assert ids("--queue", "reports") == [worked.report["id"]]
    assert ids("--limit", "2") == [worked.report["id"], worked.boom_id]  # newest first
    assert ids("--state", "active") == []


def test_queues_list_and_stats(worked: Worked) -> None:
    cli = worked.cli
    queues = {q["name"]: q for q in cli.json("queues", "list")}
    assert set(queues) == {"default", "reports"}
    assert queues["default"]["counts"]["completed"] == 1
    assert queues["default"]["counts"]["failed"] == 1
    assert queues["reports"]["counts"]["scheduled"] == 1
    assert queues["reports"]["paused"] is False

    table = cli.ok("queues", "list").splitlines()
    assert table[0].split() == [
        "QUEUE",
        "PAUSED",
        "SCHEDULED",
        "QUEUED",
        "ACTIVE",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert table[1].split() == ["default", "no", "0", "0", "0", "1", "1", "0"]

    stats = cli.json("queues", "stats", "default")
    assert (stats["completed_last_minute"], stats["failed_last_minute"]) == (1, 1)
    assert stats["error_rate"] == 0.5
    assert stats["avg_run_seconds"] is not None and stats["avg_run_seconds"] >= 0
    assert stats["oldest_waiting_seconds"] is None
    text = cli.ok("queues", "stats", "default")
    assert re.search(r"^error rate\s+50\.0%$", text, re.M), text
    assert re.search(r"^completed\s+1$", text, re.M), text
