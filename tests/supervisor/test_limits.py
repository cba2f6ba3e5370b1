"""Limits the supervisor enforces on its children: hard timeouts (the child is killed, the
overrunning attempt fails with a timeout, the attempts its other running jobs had started
count too), memory (a soft limit recycles the child gracefully, a hard one kills it, every
started attempt of it counting), graceful recycling after N jobs or N seconds, and no two
attempts of one job ever running at once."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator

import pytest

from conveyor import JobState

from .helpers import (
    Rig,
    gone,
    measure_child_rss_mb,
    sqlite_url,
    wait_all,
    wait_for_exit,
    wait_state,
)


def _stop(rig: Rig) -> None:
    sup = rig.procs["supervisor"]
    assert sup.poll() is None, f"the supervisor must keep running:\n{rig.output()}"
    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 10, rig) == 0, rig.output()


# hard timeouts ----------------------------------------------------------------------------
def test_hard_timeout_kills_the_child_and_ends_every_started_attempt(rig, app):
    # Attempt 1 sleeps in C for 60 s (no cancellation check can reach it); attempt 2 checks
    # for cancellation and so is stopped by the child itself, without a kill.
    stuck = app.enqueue("stuck", {"first": 60}, max_attempts=2, timeout=1, backoff=3)
    other = app.enqueue("nap", {"seconds": 5})  # well-behaved, same child, same claim
    rig.start("-p", "1", "-c", "4")

    rig.wait_log(r"killing child 0 \(pid \d+\): job .* overran its timeout", 15)
    rig.wait_log(r"child 0 started", 10, count=2)
    first, second = rig.child_pids()[:2]
    assert gone(first)

    failed = wait_state(app, stuck.id, JobState.FAILED, 15, rig)
    assert failed.attempt == 2
    assert [e.attempt for e in failed.errors] == [1, 2], failed.errors
    assert all("timed out" in e.error for e in failed.errors), failed.errors
    done = wait_state(app, other.id, JobState.COMPLETED, 15, rig)
    # Its handler had started when the child was killed: that run counts (max_attempts
    # bounds every run), retried at once.
    assert done.attempt == 2
    [error] = done.errors
    assert error.attempt == 1, error
    assert "worker killed (job" in error.error and "overran its timeout" in error.error, error
    assert "after this attempt ran" in error.error, error
    assert done.result == second

    runs = rig.executions()
    assert runs[stuck.id] == [(1, first), (2, second)]
    assert runs[other.id] == [(1, first), (2, second)]
    log = rig.output()
    assert log.count("killing child") == 1, log  # attempt 2 stopped at its own check
    assert len(rig.child_pids()) == 2, log
    _stop(rig)


def test_a_handler_blocking_the_event_loop_fails_with_the_hard_timeout_error(rig, app):
    frozen = app.enqueue("freeze", {"seconds": 60}, max_attempts=1, timeout=1)
    other = app.enqueue("nap", {"seconds": 1})
    rig.start("-p", "1", "-c", "4")

    rig.wait_log(r"killing child 0 .* overran its timeout", 15)
    failed = wait_state(app, frozen.id, JobState.FAILED, 10, rig)
    [error] = failed.errors
    assert error.attempt == 1
    assert "timed out after 1 s" in error.error and "hard timeout" in error.error, error
    done = wait_state(app, other.id, JobState.COMPLETED, 15, rig)
    first, second = rig.child_pids()[:2]
    # The frozen loop never began the other job's handler (the child reported no "run"):
    # it was innocent, so it is released uncounted and runs as attempt 1 in the new child.
    assert done.attempt == 1 and done.errors == (), done.errors
    assert done.result == second
    assert rig.executions()[frozen.id] == [(1, first)]
    assert rig.executions()[other.id] == [(1, second)]
    _stop(rig)


# memory -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline_mb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[float]:
    """An idle child's resident memory on this machine."""
    path = tmp_path_factory.mktemp("baseline")
    setup = Rig(path, sqlite_url(path))
    try:
        yield measure_child_rss_mb(setup)
    finally:
        setup.cleanup()


def test_soft_memory_limit_recycles_the_child_gracefully(rig, app, baseline_mb):
    soft, hard = baseline_mb + 100, baseline_mb + 1000
    jobs = app.enqueue_many([app.prepare("leak", {"mb": 20}) for _ in range(12)])
    ids = {job.id for job in jobs}
    rig.start("-p", "1", "-c", "1", "--max-rss-mb", f"{soft:.0f}", "--hard-rss-mb", f"{hard:.0f}")

    done = wait_all(app, ids, JobState.COMPLETED, 40, rig)
    assert all(r.attempt == 1 and r.errors == () for r in done.values())
    runs = rig.executions()
    assert {i: len(r) for i, r in runs.items()} == dict.fromkeys(ids, 1), "each job ran once"
    pids = {pid for r in runs.values() for _, pid in r}
    assert len(pids) >= 2, "a fresh child took over after the recycling"
    assert pids <= set(rig.child_pids())
    log = rig.output()
    assert any("recycling" in ln and "memory" in ln for ln in log.splitlines()), log
    assert any("recycles: memory" in ln for ln in log.splitlines()), log
    assert "killing child" not in log, log
    assert " died " not in log, log
    _stop(rig)


def test_hard_memory_limit_kills_the_child_and_counts_its_started_attempts(rig, app, baseline_mb):
    hard = baseline_mb + 150
    hog = app.enqueue("hog", {"mb": 300, "seconds": 10, "marker": str(rig.tmp_path / "hogged")})
    other = app.enqueue("nap", {"seconds": 3})
    rig.start("-p", "1", "-c", "4", "--hard-rss-mb", f"{hard:.0f}")

    rig.wait_log(r"killing child 0 \(pid \d+\): memory [\d.]+ MB over the hard limit", 15)
    rig.wait_log(r"child 0 started", 10, count=2)
    first, second = rig.child_pids()[:2]
    done = wait_all(app, {hog.id, other.id}, JobState.COMPLETED, 20, rig)
    assert gone(first)
    for rec in done.values():
        assert rec.attempt == 2, "a run that started counts, however it ends"
        [error] = rec.errors
        assert "worker killed (memory" in error.error and "over the hard limit" in error.error
        assert rec.result == second
    runs = rig.executions()
    assert runs[hog.id] == [(1, first), (2, second)]
    assert runs[other.id] == [(1, first), (2, second)]
    _stop(rig)


def test_a_job_that_always_outgrows_the_hard_limit_fails_instead_of_looping(rig, app, baseline_mb):
    hard = baseline_mb + 150
    job = app.enqueue("always_hog", {"mb": 300})
    rig.start("-p", "1", "-c", "1", "--hard-rss-mb", f"{hard:.0f}")

    [record] = wait_all(app, {job.id}, JobState.FAILED, 40, rig).values()
    # every kill ends an attempt, until its attempts ran out; then it stopped
    assert record.attempt == record.max_attempts
    assert len(record.errors) == record.attempt
    assert all("over the hard limit" in e.error for e in record.errors), record.errors
    assert len(rig.executions()[job.id]) == record.attempt
    _stop(rig)


# recycling --------------------------------------------------------------------------------
def _check_recycled_after_jobs(rig: Rig, app, total: int, env: dict[str, str] | None) -> None:
    ids = {job.id for job in app.enqueue_many([app.prepare("where") for _ in range(total)])}
    args = ("-p", "1", "-c", "1") + (("--max-jobs", "5") if env is None else ())
    rig.start(*args, env=env)
    done = wait_all(app, ids, JobState.COMPLETED, 40, rig)
    assert all(r.attempt == 1 and r.errors == () for r in done.values())
    runs = rig.executions()
    assert {i: len(r) for i, r in runs.items()} == dict.fromkeys(ids, 1), "each job ran once"
    per_child = Counter(pid for r in runs.values() for _, pid in r)
    assert len(per_child) >= min(3, total // 5), per_child
    assert max(per_child.values()) <= 5, per_child
    assert set(per_child) <= set(rig.child_pids())
    log = rig.output()
    assert "recycles: max jobs 5 reached" in log, log
    assert " died " not in log and "killing" not in log, log
    _stop(rig)


def test_max_jobs_recycles_the_child(rig, app):
    _check_recycled_after_jobs(rig, app, 20, None)


def test_max_jobs_from_the_environment(rig, app):
    _check_recycled_after_jobs(rig, app, 10, {"CONVEYOR_WORKER_MAX_JOBS": "5"})


def test_max_age_recycles_the_child(rig, app):
    rig.start("-p", "1", "--max-age", "2")
    rig.wait_log(r"child 0 recycles: max age 2 s reached", 10)
    rig.wait_log(r"child 0 started", 5, count=2)
    rig.wait_log(r"child 0 \(pid \d+\) stopped: max age 2 s reached", 10)
    first = rig.child_pids()[0]
    assert gone(first)
    job = app.enqueue("where")
    ran_in = wait_state(app, job.id, JobState.COMPLETED, 10, rig).result
    assert ran_in in rig.child_pids()[1:], "a fresh child took over"
    assert " died " not in rig.output()
    _stop(rig)


def test_a_timed_out_attempt_still_running_blocks_the_next_until_the_kill_ends_it(rig, app):
    # Attempt 1 times out in the child at +1 s but its thread sleeps on (10 s, no check can
    # reach it). The child keeps the job leased while that thread runs, so attempt 2 cannot
    # be claimed beside it, although the child has a free slot (-c 2). At +3 s the
    # supervisor's hard timeout kills the child: that ends attempt 1 (a timeout, retried at
    # once: backoff 0), and only then does attempt 2 run, in the replacement child. Attempt
    # 2 never returns either: killed again, it fails for good.
    job = app.enqueue("sticky", {"seconds": 10}, max_attempts=2, timeout=1, backoff=0)
    rig.start("-p", "1", "-c", "2")
    failed = wait_state(app, job.id, JobState.FAILED, 20, rig)
    rig.wait_log(r"killing child 0 \(pid \d+\): job .* overran its timeout", 5, count=2)
    first, second = rig.child_pids()[:2]
    assert rig.executions()[job.id] == [(1, first), (2, second)], rig.output()
    assert [e.attempt for e in failed.errors] == [1, 2]
    assert all("hard timeout" in e.error for e in failed.errors), failed.errors
    assert gone(first)
    _stop(rig)
