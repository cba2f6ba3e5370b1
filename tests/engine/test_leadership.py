"""Leadership: the workers of one store elect one maintenance leader, which hands over at
once on a clean exit and is replaced within one lease TTL when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conveyor import Settings, Worker
from conveyor.backends.base import MAINTENANCE_LEADER

from .helpers import WorkerThread, wait_until

TTL = 3.0
LEADING = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, leader_ttl=TTL)

APP_MODULE = """
from conveyor import Conveyor, Settings

app = Conveyor({url!r}, settings=Settings(lease_seconds=1.0, leader_ttl={ttl}))


@app.task
def noop() -> None:
    pass
"""


def _leader(app) -> str | None:
    return app.backend.leader_get(MAINTENANCE_LEADER)


def test_exactly_one_of_two_workers_leads_and_a_clean_exit_hands_over_at_once(make_app):
    first, second = make_app(LEADING), make_app(LEADING)
    a = WorkerThread(Worker(first, worker_id="worker-a")).start()
    b = WorkerThread(Worker(second, worker_id="worker-b")).start()
    try:
        leader = wait_until(lambda: _leader(first), 5, what="a leader elected")
        assert leader in ("worker-a", "worker-b")
        for _ in range(10):  # it stays one and the same while both run
            time.sleep(TTL / 10)
            assert _leader(first) == leader
        (going, staying) = (a, b) if leader == "worker-a" else (b, a)
        going.stop_and_join(5)
        stopped_at = time.monotonic()
        assert _leader(first) in (None, staying.worker.worker_id)  # resigned, not expiring
        wait_until(lambda: _leader(first) == staying.worker.worker_id, TTL, what="handover")
        # the follower's next election try, a third of the TTL, not the TTL itself
        assert time.monotonic() - stopped_at < TTL / 3 + 0.7
    finally:
        a.stop_and_join(10)
        b.stop_and_join(10)


def test_a_killed_leader_is_replaced_within_one_ttl(make_app, tmp_path):
    app = make_app(LEADING)
    (tmp_path / "leader_app.py").write_text(APP_MODULE.format(url=app.url, ttl=TTL))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("CONVEYOR_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "leader_app:app", "--worker-id", "doomed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    survivor = None
    try:
        wait_until(lambda: _leader(app) == "doomed", 20, what="the subprocess leads")
        survivor = WorkerThread(Worker(app, worker_id="survivor")).start()
        time.sleep(0.5)
        assert _leader(app) == "doomed"  # a live leader keeps the lead
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        killed_at = time.monotonic()
        wait_until(lambda: _leader(app) == "survivor", TTL * 2, what="a new leader")
        # the lease runs out within one TTL; the survivor tries every third of it
        assert time.monotonic() - killed_at < TTL + TTL / 3 + 0.7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if survivor is not None:
            survivor.stop_and_join(10)
