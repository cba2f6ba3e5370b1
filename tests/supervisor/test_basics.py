"""`conveyor worker -p N`: jobs of every kind run in N child processes; SIGTERM stops the
supervisor gracefully (running jobs finish within the grace period, the rest are released
unrun, a second signal skips the grace); bad option combinations are one error line."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conveyor import Conveyor, JobState, Settings
from conveyor.worker.children import ChildSpec
from conveyor.worker.supervisor import Supervisor

from .helpers import gone, records, wait_all, wait_for_exit, wait_gone, wait_state

KINDS = {"where": {"seconds": 0.3}, "awhere": {"seconds": 0.3}, "crunch": {"n": 500_000}}


def test_children_run_sync_async_and_cpu_bound_jobs_then_stop_on_sigterm(store_rig, store_app):
    rig, app = store_rig, store_app
    grace = 5.0
    batch = [app.prepare(task, data) for task, data in KINDS.items() for _ in range(6)]
    jobs = app.enqueue_many(batch)
    ids = {job.id for job in jobs}
    sup = rig.start("-p", "2", "-c", "2", env={"SV_GRACE": str(grace)})

    done = wait_all(app, ids, JobState.COMPLETED, 45, rig)
    children = rig.child_pids()
    assert len(children) == 2, rig.output()  # no child died or was replaced
    assert len(set(children)) == 2
    ran_in = {job.id: done[job.id].result for job in jobs}
    assert set(ran_in.values()) == set(children), "both children, and only they, ran jobs"
    assert sup.pid not in ran_in.values()
    for task in KINDS:
        assert {ran_in[j.id] for j in jobs if j.task == task} <= set(children), task
    assert all(r.attempt == 1 and r.errors == () for r in done.values())
    runs = rig.executions()
    assert {i: len(r) for i, r in runs.items()} == dict.fromkeys(ids, 1), "each job ran once"

    log = rig.output()
    assert "supervisor " in log and "2..2 processes of concurrency 2" in log, log
    assert "child 0 started (pid" in log and "child 1 started (pid" in log, log
    assert log.count(" started: queues default, concurrency 2") == 2, log  # both children

    sent = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, grace + 5, rig) == 0, rig.output()
    assert time.monotonic() - sent < grace, rig.output()
    wait_gone(children, 2)
    assert "every child has exited" in rig.output()


def test_sigterm_lets_a_running_job_finish(rig, app):
    grace = 5.0
    job = app.enqueue("block", {"seconds": 1.0})
    sup = rig.start("-p", "1", env={"SV_GRACE": str(grace)})
    rig.wait_started(job.id)
    sent = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, grace + 5, rig) == 0, rig.output()
    assert time.monotonic() - sent < grace, rig.output()
    rec = app.get_job(job.id).record
    assert rec.state == JobState.COMPLETED, rig.output()
    assert rec.attempt == 1
    assert rec.errors == ()
    assert [pid for _, pid in rig.executions()[job.id]] == rig.child_pids()
    wait_gone(rig.child_pids(), 2)


def test_sigterm_to_the_whole_process_group_is_a_clean_stop(rig, app):
    """systemd (KillMode=control-group) and `timeout` signal every process at once: the
    children stop by themselves, which is no crash; nothing restarts, nothing is lost."""
    grace = 5.0
    job = app.enqueue("block", {"seconds": 1.0})
    sup = rig.start("-p", "2", env={"SV_GRACE": str(grace)})
    rig.wait_started(job.id)
    for pid in [*rig.child_pids(), sup.pid]:
        os.kill(pid, signal.SIGTERM)
    assert wait_for_exit(sup, grace + 5, rig) == 0, rig.output()
    log = rig.output()
    assert " died " not in log and "restarts in" not in log, log
    assert len(rig.child_pids()) == 2, log  # no child was started again
    rec = app.get_job(job.id).record
    assert rec.state == JobState.COMPLETED and rec.attempt == 1 and rec.errors == (), log
    wait_gone(rig.child_pids(), 2)


def test_sigterm_past_the_grace_period_ends_the_started_attempt(rig, app):
    job = app.enqueue("nap", {"seconds": 30})
    sup = rig.start("-p", "1", env={"SV_GRACE": "1"})
    rig.wait_started(job.id)
    assert app.get_job(job.id).record.attempt == 1
    sent = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 10, rig) == 0, rig.output()
    assert time.monotonic() - sent < 4.0, rig.output()
    rec = app.get_job(job.id).record
    assert rec.state == JobState.QUEUED, rig.output()
    # Its handler had started: the attempt counts (issue 8: max_attempts bounds every run).
    assert rec.attempt == 1
    [error] = rec.errors
    assert error.attempt == 1 and "released at shutdown after" in error.error, error
    assert rec.worker_id is None
    wait_gone(rig.child_pids(), 2)


def test_second_sigterm_skips_the_grace_period_and_still_ends_the_attempt(rig, app):
    job = app.enqueue("nap", {"seconds": 30})
    sup = rig.start("-p", "1", env={"SV_GRACE": "30"})
    rig.wait_started(job.id)
    sup.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert sup.poll() is None, "the first signal waits for the running job"
    assert app.get_job(job.id).record.state == JobState.ACTIVE
    sent = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 10, rig) == 0, rig.output()
    assert time.monotonic() - sent < 3.0, rig.output()
    rec = wait_state(app, job.id, JobState.QUEUED, 1, rig)
    assert rec.attempt == 1, "a started attempt counts, however it ends"
    [error] = rec.errors
    assert "released at shutdown after" in error.error, error
    assert not [r for r in records(app).values() if r.state == JobState.ACTIVE]
    assert "skip the rest of their grace period" in rig.output()
    wait_gone(rig.child_pids(), 2)


BAD_OPTIONS = {
    "processes with burst": (("-p", "2", "--burst"), "--burst"),
    "min over max": (("--min-processes", "3", "--max-processes", "2"), "--min-processes 3"),
    "hard memory limit without a supervisor": (("--hard-rss-mb", "100"), "--hard-rss-mb"),
    "processes outside min..max": (("-p", "2", "--min-processes", "3"), "-p 2 is outside"),
}


@pytest.mark.parametrize("args, reason", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_combinations_are_one_error_line(rig, args, reason):
    done = rig.run(*args, timeout=20)
    assert done.returncode != 0, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{done.stderr}"
    assert lines[0].startswith("error: ") and reason in lines[0], lines
    assert "Traceback" not in done.stderr + done.stdout
    assert "child 0 started" not in done.stderr + done.stdout


class _StartedDuringShutdown(Exception):
    pass


def test_a_sigterm_arriving_mid_loop_never_starts_a_new_child(rig, monkeypatch):
    """The supervisor in this process, its child a real process. SIGTERM is delivered while
    the loop enforces memory limits, i.e. after this turn's check for signals and before it
    refills the slots: the retired child's slot must not be refilled."""
    monkeypatch.chdir(rig.tmp_path)  # the child imports sv_app from its working directory
    monkeypatch.setenv("SV_LOG", str(rig.log_path))
    app = Conveyor(rig.url, settings=Settings(grace_period=1.0, poll_interval=0.2))
    sup = Supervisor(app, ChildSpec("sv_app:app", rig.url, None, 1), 1, 1)
    spawned: list[int] = []
    signalled: list[float] = []

    enforce_memory, spawn, bound = sup._enforce_memory, sup._spawn, sup._bound_shutdown

    def enforce_memory_then_signal(now: float) -> None:
        enforce_memory(now)
        child = sup.children.get(0)
        if not signalled and child is not None and child.started:
            signalled.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs right here

    def checked_spawn(slot: int) -> None:
        if sup._signals:
            raise _StartedDuringShutdown(f"slot {slot} refilled after SIGTERM")
        spawn(slot)
        spawned.append(sup.children[slot].proc.pid)

    def bounded() -> None:
        assert time.monotonic() - signalled[0] < 15, "the supervisor did not stop in 15 s"
        bound()

    monkeypatch.setattr(sup, "_enforce_memory", enforce_memory_then_signal)
    monkeypatch.setattr(sup, "_spawn", checked_spawn)
    monkeypatch.setattr(sup, "_bound_shutdown", bounded)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            code = sup.run()
        except _StartedDuringShutdown as exc:
            pytest.fail(f"a new child was started during shutdown: {exc}")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for pid in spawned:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        app.close()
    assert code == 0
    assert signalled and len(spawned) == 1
    wait_gone(spawned, 2)
