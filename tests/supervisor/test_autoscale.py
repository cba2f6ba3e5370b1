"""Autoscaling: a supervisor with --min/--max-processes adds children while jobs wait and
removes them once the queues are idle, logging each decision with its reason; and the pure
decisions of `Autoscaler.decide` with injected times and queue figures."""

from __future__ import annotations

import re
import signal

import pytest

from conveyor import JobState
from conveyor.worker.autoscale import Autoscaler, ScalePolicy

from .helpers import gone, wait_all, wait_for_exit

SCALE_ENV = {
    "CONVEYOR_SCALE_INTERVAL": "0.2",
    "CONVEYOR_SCALE_UP_COOLDOWN": "0.5",
    "CONVEYOR_SCALE_DOWN_IDLE": "1",
    "CONVEYOR_SCALE_DOWN_COOLDOWN": "0.5",
}
SCALING = re.compile(r"scaling (\d+) -> (\d+) processes: (.*)")


def test_children_follow_the_queue_up_to_max_and_back_down_to_min(rig, app):
    ids = {
        j.id for j in app.enqueue_many([app.prepare("nap", {"seconds": 0.2}) for _ in range(60)])
    }
    sup = rig.start("--min-processes", "1", "--max-processes", "3", "-c", "2", env=SCALE_ENV)
    rig.wait_log(r"scaling 1 -> 2 processes: \d+ jobs waiting \(threshold 2\)", 15)
    rig.wait_log(r"scaling 2 -> 3 processes: \d+ jobs waiting \(threshold 2\)", 15)
    done = wait_all(app, ids, JobState.COMPLETED, 40, rig)
    rig.wait_log(r"scaling 3 -> 2 processes: idle for \d+ s", 15)
    rig.wait_log(r"scaling 2 -> 1 processes: idle for \d+ s", 15)
    rig.wait_log(r"stopped: scaled down: idle", 10, count=2)

    log = rig.output()
    steps = [(int(m[1]), int(m[2])) for m in SCALING.finditer(log)]
    assert steps == [(1, 2), (2, 3), (3, 2), (2, 1)], log
    assert "supervisor " in log and "1..3 processes of concurrency 2" in log
    children = rig.child_pids()
    assert len(children) == 3, log  # one per slot, none restarted
    assert {r.result for r in done.values()} <= set(children)
    assert len({r.result for r in done.values()}) >= 2, "the added children took jobs"
    assert " died " not in log and "killing" not in log, log
    assert sum(gone(pid) for pid in children) == 2, "the two extra children exited"

    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 10, rig) == 0, rig.output()
    assert all(gone(pid) for pid in children)


# pure decisions ---------------------------------------------------------------------------
POLICY = ScalePolicy(
    interval=1.0, up_waiting=None, up_age=5.0, up_cooldown=10.0, down_idle=30.0, down_cooldown=30.0
)


def figures(waiting: int, oldest_age: float | None = None):
    return lambda: (waiting, oldest_age)


def never_called():
    raise AssertionError("the queues must not be read")


def scaler(policy: ScalePolicy = POLICY, low: int = 1, high: int = 3) -> Autoscaler:
    return Autoscaler(policy, low, high, concurrency=4)


def test_adds_a_child_when_a_child_s_worth_of_jobs_waits():
    a = scaler()
    assert a.decide(100.0, 1, 4, figures(3, 1.0)) is None
    new, reason = a.decide(101.0, 1, 4, figures(4, 1.0))
    assert new == 2
    assert reason == "4 jobs waiting (threshold 4)"


def test_the_waiting_threshold_can_be_set():
    a = scaler(ScalePolicy(up_waiting=10, up_age=60.0))
    assert a.decide(100.0, 1, 4, figures(9, 1.0)) is None
    assert a.decide(200.0, 1, 4, figures(10, 1.0)) == (2, "10 jobs waiting (threshold 10)")


def test_adds_a_child_when_the_oldest_job_waited_too_long():
    a = scaler()
    assert a.decide(100.0, 1, 4, figures(1, 4.9)) is None
    new, reason = a.decide(101.0, 1, 4, figures(1, 6.0))
    assert new == 2
    assert reason == "the oldest waiting job has waited 6.0 s (threshold 5 s)"


def test_never_above_max():
    a = scaler(high=3)
    assert a.decide(100.0, 3, 12, figures(1000, 600.0)) is None
    assert a.decisions == type(a.decisions)()


def test_looks_at_the_queues_once_per_interval():
    a = scaler()
    assert a.decide(100.0, 1, 0, figures(0)) is None
    assert a.decide(100.5, 1, 0, never_called) is None
    assert a.decide(101.0, 1, 4, figures(50)) == (2, "50 jobs waiting (threshold 4)")


def test_up_cooldown_is_respected():
    a = scaler()
    assert a.decide(100.0, 1, 4, figures(50))[0] == 2
    assert a.decide(105.0, 2, 8, figures(50)) is None
    assert a.decide(109.0, 2, 8, figures(50)) is None
    assert a.decide(110.0, 2, 8, figures(50))[0] == 3


def test_removes_a_child_only_after_the_queues_were_idle_long_enough():
    a = scaler()
    assert a.decide(100.0, 2, 0, figures(0)) is None  # idle from now on
    assert a.decide(115.0, 2, 4, figures(0)) is None  # the busy jobs fit in one child fewer
    assert a.decide(129.0, 2, 0, figures(0)) is None
    new, reason = a.decide(130.0, 2, 0, figures(0))
    assert new == 1
    assert reason == "idle for 30 s"


def test_waiting_or_busy_jobs_reset_the_idle_clock():
    a = scaler()
    assert a.decide(100.0, 2, 0, figures(0)) is None
    assert a.decide(110.0, 2, 0, figures(1, 1.0)) is None  # one waiting: not idle
    assert a.decide(111.0, 2, 0, figures(0)) is None  # idle again from 111
    assert a.decide(135.0, 2, 5, figures(0)) is None  # 5 busy > 4 that one child fewer holds
    assert a.decide(136.0, 2, 0, figures(0)) is None  # idle again from 136
    assert a.decide(165.0, 2, 0, figures(0)) is None
    assert a.decide(166.0, 2, 0, figures(0)) == (1, "idle for 30 s")


def test_never_below_min():
    a = scaler(low=2)
    for t in range(100, 200, 5):
        assert a.decide(float(t), 2, 0, figures(0)) is None


def test_down_cooldown_counts_from_the_last_change():
    a = scaler(ScalePolicy(interval=1.0, up_cooldown=10.0, down_idle=5.0, down_cooldown=30.0))
    assert a.decide(100.0, 1, 4, figures(50))[0] == 2
    assert a.decide(101.0, 2, 0, figures(0)) is None  # idle from 101
    assert a.decide(110.0, 2, 0, figures(0)) is None  # idle 9 s, but changed 10 s ago
    assert a.decide(129.0, 2, 0, figures(0)) is None
    assert a.decide(130.0, 2, 0, figures(0)) == (1, "idle for 29 s")


def test_decisions_are_recorded_with_their_reasons():
    a = scaler(ScalePolicy(interval=1.0, up_cooldown=0.0, down_idle=2.0, down_cooldown=0.0))
    a.decide(100.0, 1, 4, figures(50))
    a.decide(101.0, 2, 8, figures(0, None))  # not idle: 8 busy > 4
    a.decide(102.0, 2, 0, figures(0))
    a.decide(104.0, 2, 0, figures(0))
    assert list(a.decisions) == [
        {"at": 100.0, "from": 1, "to": 2, "reason": "50 jobs waiting (threshold 4)"},
        {"at": 104.0, "from": 2, "to": 1, "reason": "idle for 2 s"},
    ]
    for t in range(200, 230):  # only the last 20 are kept
        assert a.decide(float(t), 1, 4, figures(50)) is not None
    assert len(a.decisions) == 20
    assert [d["at"] for d in a.decisions] == [float(t) for t in range(210, 230)]


def test_fixed_size_never_scales_nor_reads_the_queues():
    a = scaler(low=2, high=2)
    assert a.decide(100.0, 2, 8, never_called) is None
    assert a.decide(1000.0, 2, 0, never_called) is None


def test_an_unreadable_queue_keeps_the_current_size(caplog):
    def broken():
        raise ConnectionError("store down")

    a = scaler()
    assert a.decide(100.0, 2, 0, broken) is None
    assert "could not read the queues" in caplog.text


def test_policy_from_the_environment(monkeypatch):
    for name, value in SCALE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_SCALE_UP_WAITING", "7")
    monkeypatch.setenv("CONVEYOR_SCALE_UP_AGE", "2.5")
    assert ScalePolicy.from_env() == ScalePolicy(
        interval=0.2, up_waiting=7, up_age=2.5, up_cooldown=0.5, down_idle=1.0, down_cooldown=0.5
    )
    monkeypatch.setenv("CONVEYOR_SCALE_UP_WAITING", "many")
    with pytest.raises(ValueError, match="CONVEYOR_SCALE_UP_WAITING='many' is not a number"):
        ScalePolicy.from_env()
