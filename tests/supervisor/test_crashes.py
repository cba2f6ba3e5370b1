"""Children that die: a crash (os._exit, SIGKILL) ends the child's attempts at once as
"worker lost" (no waiting for the 30 s lease) and the child is restarted; a supervisor
killed with SIGKILL leaves children that stop by themselves, and nothing stays active; a
child that cannot even start makes the supervisor give up."""

from __future__ import annotations

import os
import re
import signal
import time

from conveyor import JobState

from .helpers import gone, records, wait_for_exit, wait_gone, wait_state, wait_until

RECOVERY = 10.0
"""The app's lease is 30 s: only the supervisor's own handling can recover a job this fast."""


def _stop(rig) -> None:
    sup = rig.procs["supervisor"]
    assert sup.poll() is None, f"the supervisor must keep running:\n{rig.output()}"
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 10, rig) == 0, rig.output()


def _check_lost_then_completed(rig, app, job_id: str, since: float, death: str) -> None:
    done = wait_state(app, job_id, JobState.COMPLETED, RECOVERY, rig)
    assert time.monotonic() - since < RECOVERY
    assert done.attempt == 2, "the crash counts as an attempt"
    [error] = done.errors
    assert error.attempt == 1
    assert "worker lost" in error.error, error
    rig.wait_log(r"child 0 started", 1, count=2)
    first, second = rig.child_pids()[:2]
    assert rig.executions()[job_id] == [(1, first), (2, second)]
    assert done.result == second
    died = [ln for ln in rig.output().splitlines() if " died " in ln]
    assert len(died) == 1 and f"(pid {first}) died ({death})" in died[0], rig.output()
    assert "holding 1 jobs" in died[0], died
    assert gone(first)


def test_a_crashed_child_is_restarted_and_its_attempt_ends_at_once(store_rig, store_app):
    rig, app = store_rig, store_app
    rig.start("-p", "1")
    rig.wait_log(r"worker \S+ started", 15)
    since = time.monotonic()
    job = app.enqueue("crash_once")
    _check_lost_then_completed(rig, app, job.id, since, "exit code 3")
    _stop(rig)


def test_a_child_killed_by_sigkill_mid_job_is_recovered_at_once(rig, app):
    job = app.enqueue("slow_once", {"seconds": 60})
    rig.start("-p", "1")
    rig.wait_started(job.id)
    [(slot, pid)] = rig.children()
    assert slot == 0
    assert rig.executions()[job.id] == [(1, pid)]
    since = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _check_lost_then_completed(rig, app, job.id, since, "signal SIGKILL")
    _stop(rig)


def test_children_of_a_killed_supervisor_stop_by_themselves_and_nothing_is_lost(rig, app):
    rig.env.update(SV_LEASE="1.5", SV_RESCUE="0.3", SV_GRACE="1")
    ids = {
        job.id for job in app.enqueue_many([app.prepare("nap", {"seconds": 2}) for _ in range(8)])
    }
    sup = rig.start("-p", "2", "-c", "2")
    wait_until(lambda: len(rig.executions()) >= 4, 15, interval=0.05, what="both children busy")
    children = rig.child_pids()
    assert len(children) == 2
    sup.kill()
    sup.wait(10)
    wait_gone(children, 5)
    log = rig.output()
    gone_lines = re.findall(rf"recycling: supervisor {sup.pid} is gone", log)
    assert len(gone_lines) == 2, log

    # Whatever a child still held comes back once its lease expires; wait that out.
    held = [r.lease_expires_at for r in records(app).values() if r.state == JobState.ACTIVE]
    time.sleep(max([0.0, *(t - time.time() for t in held if t is not None)]) + 0.2)
    burst = rig.start("--burst", "-c", "8", name="burst")
    assert wait_for_exit(burst, 30) == 0, rig.output("burst")
    final = records(app)
    assert {i: final[i].state for i in ids} == dict.fromkeys(ids, JobState.COMPLETED)
    assert not [r for r in final.values() if r.state == JobState.ACTIVE]


BAD_CHILD = """
import sys

from sv_app import app

if "--report-fd" in sys.argv:  # only in a supervised child
    raise RuntimeError("this app cannot start in a child")
"""


def test_supervisor_gives_up_with_exit_code_1_when_children_cannot_start(rig):
    (rig.tmp_path / "bad_child.py").write_text(BAD_CHILD)
    sup = rig.start("-p", "1", app_spec="bad_child:app")
    code = wait_for_exit(sup, 30, rig)
    log = rig.output()
    assert "5 children in a row exited before starting; giving up" in log, log
    assert len(rig.child_pids()) == 5
    # docs/workers.md: "the supervisor gives up and exits 1"
    assert code == 1, f"exit code {code}:\n{log}"
