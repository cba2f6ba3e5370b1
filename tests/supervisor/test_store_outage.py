"""A store that cannot be reached is not a broken app (issue 8, point 13).

`conveyor worker -p 2` started while its store is down waits for it (a warning every few
seconds) instead of exiting; once the store is up the jobs run. When the store goes away for
longer than five failed child starts would take and a child is SIGKILLed meanwhile, the
supervisor neither gives up nor stops its healthy children: the dead child's attempt is
ended once the store is back, and every job completes.

Runs on a redis-server of its own (never the shared one), on a free localhost port, with an
append-only file in tmp_path fsynced on every write: stopping it (SIGTERM: SHUTDOWN writes
the file) loses nothing, so the jobs that were running during the outage are still there.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SELECTED_STORES
from conveyor import Conveyor, JobState
from engine.helpers import wait_until
from faults.private_redis import PrivateRedis, require_redis_server

from .conftest import TEST_SIDE
from .helpers import Rig, wait_all, wait_for_exit

pytestmark = pytest.mark.skipif(
    "redis" not in SELECTED_STORES, reason="CONVEYOR_TEST_STORES does not include redis"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """Not started: the test starts it once the supervisor is waiting for it."""
    private = PrivateRedis(require_redis_server(), tmp_path)
    try:
        yield private
    finally:
        private.kill()


def test_the_supervisor_waits_for_the_store_and_outlives_an_outage(
    tmp_path: Path, server: PrivateRedis
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0?prefix=t_{uuid.uuid4().hex}"
    rig = Rig(tmp_path, url)
    try:
        # 1. Started while the store is down: it waits and says so, it does not exit.
        sup = rig.start("-p", "2", "-c", "2")
        rig.wait_log(r"WARNING .*cannot be reached .*waiting for it", 20)
        rig.wait_log(r"WARNING .*cannot be reached .*waiting for it", 20, count=2)
        assert sup.poll() is None, rig.output()

        # 2. The store comes up: both children start and jobs run.
        server.start()
        rig.wait_log(r"worker \S+ started: queues", 30, count=2)
        app = Conveyor(url, settings=TEST_SIDE)
        try:
            quick = {j.id for j in app.enqueue_many([app.prepare("where") for _ in range(8)])}
            wait_all(app, quick, JobState.COMPLETED, 30, rig)

            # 3. Jobs running, then the store goes away for longer than five failed child
            # starts would take (0.5 + 1 + 2 + 4 s of backoff), and a child dies meanwhile.
            slow = [app.prepare("nap", {"seconds": 2}) for _ in range(4)]
            naps = {j.id for j in app.enqueue_many(slow)}
            wait_until(
                lambda: len(naps & set(rig.executions())) >= 2,
                15,
                interval=0.05,
                what="two naps running",
            )
            server.stop()
            victim = rig.child_pids()[0]
            held = {j for j, runs in rig.executions().items() if j in naps and victim in runs[-1]}
            subprocess.run(["kill", "-KILL", str(victim)], check=True)
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                assert sup.poll() is None, f"the supervisor exited:\n{rig.output()}"
                time.sleep(0.2)
            log = rig.output()
            assert "giving up" not in log, log
            assert "the store is unreachable" in log, log

            # 4. The store is back: every job completes, the dead child's attempt ended.
            server.start()
            done = wait_all(app, quick | naps, JobState.COMPLETED, 60, rig)
            for job_id in held:  # each ran again, its first run counted
                assert done[job_id].attempt >= 2, done[job_id]
        finally:
            app.close()
        log = rig.output()
        assert "5 children in a row" not in log, log
        sup.send_signal(signal.SIGTERM)
        assert wait_for_exit(sup, 30, rig) == 0, rig.output()
    finally:
        rig.cleanup()
