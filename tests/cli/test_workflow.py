"""Commands that change the store: retry, cancel, pause/resume, enqueue options, worker runs."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from .helpers import Cli, assert_one_line_error, make_cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


def burst(cli: Cli, *args: str) -> None:
    proc = cli("worker", "myapp:app", "--burst", *args)
    assert proc.returncode == 0, proc.stderr


def test_retry_requeues_a_failed_job_and_the_worker_runs_it_again(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "boom", "--app", "myapp:app").strip()
    burst(cli)
    assert cli.ok("jobs", "retry", job_id).strip() == f"{job_id} queued"
    job = cli.json("jobs", "show", job_id)
    assert (job["state"], job["attempt"], job["max_attempts"]) == ("queued", 1, 2)
    burst(cli)
    job = cli.json("jobs", "show", job_id)
    assert (job["state"], job["attempt"]) == ("failed", 2)
    assert [e["attempt"] for e in job["errors"]] == [1, 2]


def test_cancel_a_queued_job_so_it_never_runs(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "add", "--data", '{"a": 1, "b": 1}').strip()
    assert cli.ok("jobs", "cancel", job_id).strip() == f"{job_id} cancelled"
    burst(cli)
    job = cli.json("jobs", "show", job_id)
    assert (job["state"], job["attempt"], job["result"]) == ("cancelled", 0, None)
    line = assert_one_line_error(cli("jobs", "cancel", job_id), code=1)
    assert "is cancelled" in line


def test_pause_keeps_jobs_queued_and_resume_lets_them_run(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "add", "--data", '{"a": 20, "b": 22}').strip()
    assert cli.ok("queues", "pause", "default").strip() == "queue default paused"
    burst(cli)
    assert cli.json("jobs", "show", job_id)["state"] == "queued"
    [queue] = cli.json("queues", "list")
    assert (queue["name"], queue["paused"], queue["counts"]["queued"]) == ("default", True, 1)
    assert cli.ok("queues", "resume", "default").strip() == "queue default resumed"
    burst(cli)
    job = cli.json("jobs", "show", job_id)
    assert (job["state"], job["result"]) == ("completed", 42)


def test_enqueue_options_and_data_from_a_file_or_stdin(cli: Cli) -> None:
    (cli.cwd / "args.json").write_text('{"a": 4, "b": 5}')
    options = ["--queue", "q2", "--priority", "1", "--max-attempts", "7", "--key", "k1"]
    job = cli.json("enqueue", "add", "--data", "@args.json", "--delay", "60", *options)
    assert job["data"] == {"a": 4, "b": 5}
    assert (job["queue"], job["priority"], job["max_attempts"], job["key"]) == ("q2", 1, 7, "k1")
    assert job["state"] == "scheduled"
    # Same key while the first is pending: the existing job is returned, not a new one.
    again = cli.ok("enqueue", "add", "--data", "-", "--queue", "q2", "--key", "k1", input="{}")
    assert again.strip() == job["id"]
    piped = cli.ok("enqueue", "add", "--data", "-", input='{"a": 1, "b": 2}').strip()
    assert cli.json("jobs", "show", piped)["data"] == {"a": 1, "b": 2}


def test_worker_uses_the_apps_own_url_unless_one_is_given(tmp_path: Path) -> None:
    source = (
        "from conveyor import Conveyor\n"
        "app = Conveyor('sqlite:///own.db')\n"
        "@app.task\n"
        "def echo(x: int) -> int:\n"
        "    return x\n"
    )
    (tmp_path / "ownapp.py").write_text(source)
    bare = Cli(tmp_path, None)
    job_id = bare.ok("enqueue", "echo", "--data", '{"x": 7}', "--app", "ownapp:app").strip()
    proc = bare("worker", "ownapp:app", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "conveyor.db").exists()
    on_own = Cli(tmp_path, "sqlite:///own.db")
    assert on_own.json("jobs", "show", job_id)["result"] == 7

    other = Cli(tmp_path, None)
    other_id = other.ok(
        "--url", "sqlite:///other.db", "enqueue", "echo", "--app", "ownapp:app", "-d", '{"x": 1}'
    ).strip()
    assert_one_line_error(on_own("jobs", "show", other_id), code=1)
    on_other = Cli(tmp_path, "sqlite:///other.db")  # CONVEYOR_URL overrides the app's URL too
    proc = on_other("worker", "ownapp:app", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert on_other.json("jobs", "show", other_id)["result"] == 1


def test_worker_exits_even_when_a_timed_out_sync_handler_never_returns(cli: Cli) -> None:
    source = (
        "import threading\n"
        "from conveyor import Conveyor\n"
        "app = Conveyor()\n"
        "@app.task(timeout=0.3, max_attempts=1)\n"
        "def hang() -> None:\n"
        "    threading.Event().wait()\n"
    )
    (cli.cwd / "hangapp.py").write_text(source)
    job_id = cli.ok("enqueue", "hang", "--app", "hangapp:app").strip()
    proc = cli("worker", "hangapp:app", "--burst", timeout=20)  # without os._exit: hangs
    assert proc.returncode == 0, proc.stderr
    assert "stopped after 1 jobs" in proc.stderr  # logs were flushed before the hard exit
    job = cli.json("jobs", "show", job_id)
    assert job["state"] == "failed"
    assert "timed out" in job["errors"][0]["error"]


def test_worker_stops_gracefully_on_sigint(cli: Cli) -> None:
    worker = cli.popen("worker", "myapp:app", "-q", "default,reports", "-c", "2")
    assert worker.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not any("started" in line for line in lines):
            assert worker.poll() is None, f"worker died: {lines}"
            assert time.monotonic() < deadline, f"worker did not start: {lines}"
            time.sleep(0.05)
        assert any("queues default,reports, concurrency 2" in line for line in lines), lines
        job_id = cli.ok("enqueue", "add", "--data", '{"a": 1, "b": 2}').strip()
        deadline = time.monotonic() + 10
        while cli.json("jobs", "show", job_id)["state"] != "completed":
            assert time.monotonic() < deadline, "the running worker did not pick up the job"
            time.sleep(0.05)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=15) == 0, lines
        reader.join(timeout=5)
        assert any("stopped after 1 jobs" in line for line in lines), lines
        assert not any("Traceback" in line for line in lines), lines
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
