"""Every bad input ends with a non-zero exit and one `error: <reason>` line, no traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import POSTGRES_URL, require_store

from .helpers import Cli, assert_one_line_error, make_cli


@dataclass
class Case:
    args: tuple[str, ...]
    reason: str
    """A piece of the error line that tells the user what was wrong."""
    code: int = 1
    setup: Callable[[Cli], None] = field(default=lambda cli: None)


def _big_file(cli: Cli) -> None:
    (cli.cwd / "big.json").write_text('{"blob": "' + "x" * (1024 * 1024 + 10) + '"}')


def _broken_app(cli: Cli) -> None:
    (cli.cwd / "brokenapp.py").write_text("import json\n\nx = 1 / 0\n")


CASES = {
    "bad JSON": Case(("enqueue", "add", "--data", '{"a": 1,'), "--data is not valid JSON"),
    "data not an object": Case(("enqueue", "add", "--data", "[1, 2]"), "not a JSON array"),
    "data not matching the handler": Case(
        ("enqueue", "add", "--app", "myapp:app", "--data", '{"a": 1}'), "task 'add'"
    ),
    "payload over 1 MiB": Case(
        ("enqueue", "add", "--data", "@big.json"), "over the 1,048,576-byte limit", 1, _big_file
    ),
    "missing data file": Case(("enqueue", "add", "--data", "@nope.json"), "nope.json"),
    "bad priority": Case(("enqueue", "add", "--priority", "high"), "--priority", 2),
    "priority out of range": Case(
        ("enqueue", "add", "--priority", str(2**31)),
        "priority must be an integer from -2147483648 to 2147483647",
    ),
    "NUL in data": Case(
        ("enqueue", "add", "--data", '{"a": "\\u0000"}'), "data of task 'add'['a'] contains a NUL"
    ),
    "unknown state": Case(
        ("jobs", "list", "--state", "done"), "use one of: scheduled, queued, active", 2
    ),
    "unknown job id": Case(("jobs", "show", "NOSUCHJOB"), "error: no job with id NOSUCHJOB"),
    "retry of an unknown job": Case(("jobs", "retry", "NOSUCHJOB"), "no job with id NOSUCHJOB"),
    "cancel of an unknown job": Case(("jobs", "cancel", "NOSUCHJOB"), "no job with id NOSUCHJOB"),
    "unknown queue": Case(("queues", "stats", "nope"), "no queue named 'nope'"),
    "bad URL scheme": Case(("--url", "nosuch://x", "jobs", "list"), "unsupported store URL"),
    "bad SQLite URL": Case(("--url", "sqlite://", "queues", "list"), "bad SQLite URL"),
    "missing app module": Case(("worker", "nosuchmodule:app"), "no module named 'nosuchmodule'"),
    "missing app attribute": Case(("worker", "myapp:nope"), "has no attribute 'nope'"),
    "app not a Conveyor": Case(("worker", "myapp:add"), "not a Conveyor app"),
    "app failing on import": Case(("worker", "brokenapp:app"), "ZeroDivisionError", 1, _broken_app),
    "APP without attribute": Case(("worker", "myapp"), "module:attribute", 2),
    "missing APP": Case(("worker",), "Missing argument 'APP'", 2),
    "zero concurrency": Case(("worker", "myapp:app", "-c", "0"), "--concurrency", 2),
    "unknown command": Case(("nosuch",), "No such command", 2),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_error_line(tmp_path: Path, case: Case) -> None:
    cli = make_cli(tmp_path)
    case.setup(cli)
    line = assert_one_line_error(cli(*case.args), code=case.code)
    assert case.reason in line


def test_retry_of_a_queued_job_is_refused(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    job_id = cli.ok("enqueue", "add", "--data", '{"a": 1, "b": 2}').strip()
    line = assert_one_line_error(cli("jobs", "retry", job_id), code=1)
    assert "is queued; only failed or cancelled jobs can be retried" in line
    assert cli.json("jobs", "show", job_id)["state"] == "queued"


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    conn.commit()
    conn.close()


def _text_file(path: Path) -> None:
    path.write_text("not a database\n" * 10)


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (_foreign_sqlite, "is a SQLite database but not a Conveyor store"),
        (_text_file, "is not a SQLite database"),
    ],
    ids=["foreign SQLite file", "non-SQLite file"],
)
def test_a_file_that_is_not_a_conveyor_store_is_refused_untouched(
    tmp_path: Path, make_file: Callable[[Path], None], reason: str
) -> None:
    target = tmp_path / "other.db"
    make_file(target)
    before = target.read_bytes()
    cli = make_cli(tmp_path)
    cli.url = f"sqlite:///{target}"
    for args in (("jobs", "list"), ("enqueue", "add"), ("worker", "myapp:app", "--burst")):
        line = assert_one_line_error(cli(*args), code=1)
        assert reason in line
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("*.db*")) == ["other.db"]  # no -wal, -journal


def test_a_worker_refused_by_its_store_fails_at_once_instead_of_waiting(tmp_path: Path) -> None:
    # An unreachable store is waited for; a server that answers "no" (unknown database,
    # wrong password) is a broken configuration: one error line, at once.
    require_store("postgres")
    base = POSTGRES_URL.rsplit("/", 1)[0]
    url = f"{base}/conveyor_no_such_database"
    line = assert_one_line_error(make_cli(tmp_path)("--url", url, "worker", "myapp:app"), code=1)
    assert 'database "conveyor_no_such_database" does not exist' in line
