"""Which attempts a crashed child costs: those whose handler had started count ("worker
lost"), those only claimed go back to their queue uncounted; with one handler running only
its job pays, with several each counts (which one crashed cannot be told).

A real child never leaves a claimed job unstarted for long (its handlers start at once), so
the child here is a small process that speaks the report protocol (children.py) for jobs the
test claimed in its name, then exits 3: the supervisor and the store are the real ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

from conveyor import Conveyor, JobState, Settings
from conveyor.backends.base import ClaimParams
from conveyor.worker import supervisor as supervisor_module
from conveyor.worker.children import Child, ChildSpec
from conveyor.worker.supervisor import Supervisor
from engine.helpers import wait_until

from .helpers import Rig, gone, record, wait_gone

CHILD = """
import os, signal, sys, time
os.write(int(sys.argv[1]), sys.argv[2].encode())
if sys.argv[3] == "crash":
    os._exit(3)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("running", [1, 2], ids=["one running", "two running"])
def test_a_crash_costs_only_the_attempts_whose_handler_started(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, running: int
) -> None:
    app = Conveyor(rig.url, settings=Settings(grace_period=1.0, poll_interval=0.2))
    jobs = [app.enqueue("where") for _ in range(3)]
    ran, claimed_only = jobs[:running], jobs[running:]
    children: list[subprocess.Popen[bytes]] = []

    def scripted_spawn(spec: ChildSpec, slot: int, worker_id: str, supervisor_id: str) -> Child:
        first = not children
        events: list[dict[str, object]] = [{"ev": "hello", "worker": worker_id, "pid": 0}]
        if first:  # claim the three jobs in this child's name, start some handlers, crash
            claim = ClaimParams(("default",), 3, worker_id, 30.0)
            claimed = app.backend.job_claim(claim)
            assert len(claimed) == 3
            events += [
                {"ev": "start", "job": j.id, "attempt": 1, "deadline": None} for j in claimed
            ]
            events += [{"ev": "run", "job": j.id, "attempt": 1} for j in ran]
        lines = b"".join(orjson.dumps(e) + b"\n" for e in events).decode()
        reader, writer = os.pipe()
        script = [sys.executable, "-c", CHILD, str(writer), lines]
        proc = subprocess.Popen([*script, "crash" if first else "idle"], pass_fds=(writer,))
        os.close(writer)
        os.set_blocking(reader, False)
        children.append(proc)
        return Child(slot, worker_id, proc, reader, time.time())

    def settled() -> bool:  # claimed (active) by the first child, then back to queued
        return bool(children) and all(record(app, j.id).state is JobState.QUEUED for j in jobs)

    def stop_when_settled() -> None:
        wait_until(settled, 15, interval=0.05, what="the crashed child's jobs settled")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(supervisor_module, "spawn", scripted_spawn)
    sup = Supervisor(app, ChildSpec("sv_app:app", rig.url, None, 3), 1, 1)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stopper = threading.Thread(target=stop_when_settled, daemon=True)
    stopper.start()
    try:
        code = sup.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for proc in children:
            if not gone(proc.pid):
                proc.kill()
    stopper.join(5)
    try:
        assert code == 0
        for job in ran:  # its handler started: the crash counts
            rec = record(app, job.id)
            assert rec.attempt == 1, rec
            [error] = rec.errors
            assert "worker lost" in error.error and "after this attempt ran" in error.error
        for job in claimed_only:  # never started: released, uncounted
            rec = record(app, job.id)
            assert rec.attempt == 0 and rec.errors == (), rec
        wait_gone([proc.pid for proc in children], 5)
    finally:
        app.close()
