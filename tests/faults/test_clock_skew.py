"""A worker whose clock runs 20 s ahead never rescues another worker's live job: leases are
judged by the store's clock (PostgreSQL `clock_timestamp()`, Redis `TIME`), never a worker's.
Nor does a producer's clock decide when its jobs are due: they are due their delay after the
store's clock as it inserts them.

(SQLite is left out: its store clock is the host's, and a store file has only one host.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import MAINTENANCE_LEADER
from engine.helpers import wait_until

from .helpers import kill_all

SKEW = 20.0
APP_MODULE = """
import os
import time

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(lease_seconds=2.0, rescue_interval=0.3, poll_interval=0.2, leader_ttl=2.0),
)


@app.task(queue="long")
def long_job(seconds: float) -> str:
    ctx = current_job()
    with open(os.environ["SKEW_LOG"], "a") as log:
        log.write(f"{{ctx.id}} {{ctx.attempt}}\\n")
    time.sleep(seconds)
    return "done"


@app.task(queue="quick")
def quick_job() -> str:
    return "done"
"""
PRODUCER = """
import time

_real_time = time.time
time.time = lambda: _real_time() + {skew}  # this host's clock is off

from skew_app import app

now = app.enqueue("quick_job")
later = app.enqueue("quick_job", delay={delay})
print(now.id, later.id)
app.close()
"""
DELAY = 2.0
SLACK = 3.0
"""How late after its due time a job may start: a poll, a wake-up, a busy test machine."""
SKEWED_MAIN = f"""
import sys
import time

_real_time = time.time
time.time = lambda: _real_time() + {SKEW}  # this host's clock runs ahead

from conveyor.cli.main import main

main(sys.argv[1:])
"""


def _start(tmp_path: Path, args: list[str], name: str, *, skewed: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SKEW_LOG": str(tmp_path / "runs.log")}
    env.pop("CONVEYOR_URL", None)
    head = [sys.executable, "-c", SKEWED_MAIN] if skewed else [sys.executable, "-m", "conveyor"]
    out = open(tmp_path / f"{name}.out", "wb")  # noqa: SIM115 -- lives with the process
    try:
        return subprocess.Popen(
            [*head, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        out.close()


def test_a_skewed_worker_never_rescues_a_live_job(store_url, tmp_path):
    if store_url.startswith("sqlite"):
        pytest.skip("a SQLite store has one host, whose clock is the store's")
    (tmp_path / "skew_app.py").write_text(APP_MODULE.format(url=store_url))
    app = Conveyor(store_url)
    skewed = normal = None
    try:
        # The skewed worker leads (so it runs rescue) and works another queue, so it can
        # never take the long job itself.
        skewed = _start(
            tmp_path,
            ["worker", "skew_app:app", "-q", "other", "--worker-id", "skewed"],
            "skewed",
            skewed=True,
        )
        wait_until(
            lambda: app.backend.leader_get(MAINTENANCE_LEADER) == "skewed",
            20,
            what="the skewed worker leads",
        )
        normal = _start(tmp_path, ["worker", "skew_app:app", "-q", "long"], "normal", skewed=False)
        job = app.enqueue("long_job", {"seconds": 6.0}, queue="long")  # three leases long
        wait_until(lambda: app.get_job(job.id).state == JobState.COMPLETED, 30, what="done")
        record = app.get_job(job.id).record
        assert record.attempt == 1, record
        assert record.errors == (), record.errors
        runs = (tmp_path / "runs.log").read_text().split()
        assert runs == [job.id, "1"]
        assert "rescued" not in (tmp_path / "skewed.out").read_text()
    finally:
        kill_all(skewed, normal)
        app.close()


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_a_skewed_producers_jobs_are_due_by_the_stores_clock(store_url, tmp_path, skew):
    if store_url.startswith("sqlite"):
        pytest.skip("a SQLite store has one host, whose clock is the store's")
    (tmp_path / "skew_app.py").write_text(APP_MODULE.format(url=store_url))
    app = Conveyor(store_url)
    worker = None
    try:
        worker = _start(tmp_path, ["worker", "skew_app:app", "-q", "quick"], "worker", skewed=False)
        wait_until(app.backend.worker_list, 20, what="the worker is up")
        produced = subprocess.run(
            [sys.executable, "-c", PRODUCER.format(skew=skew, delay=DELAY)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path), "SKEW_LOG": str(tmp_path / "log")},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        now_id, later_id = produced.stdout.split()
        for job_id in (now_id, later_id):
            wait_until(
                lambda job_id=job_id: app.get_job(job_id).state == JobState.COMPLETED,
                DELAY + SLACK + 5,
                what=f"job {job_id} done",
            )
        now, later = app.get_job(now_id).record, app.get_job(later_id).record
        # Every time below is the store's: the producer's clock shows nowhere.
        assert now.run_at == now.enqueued_at, now
        assert now.started_at is not None and now.started_at - now.enqueued_at < SLACK, now
        assert later.run_at == pytest.approx(later.enqueued_at + DELAY, abs=1e-3), later
        assert later.started_at is not None, later
        assert DELAY <= later.started_at - later.enqueued_at < DELAY + SLACK, later
    finally:
        kill_all(worker)
        app.close()
