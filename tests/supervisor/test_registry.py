"""The worker registry from real processes: `conveyor workers` lists a running supervisor
with its children (pids, queues, concurrency, jobs done), and none once they stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from engine.helpers import wait_until

from .helpers import wait_for_exit


def _workers(rig) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", rig.url, "workers", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_running_supervisor_and_its_children_are_listed_then_forgotten(rig, app):
    rig.env.update(SV_LEASE="3")  # workers beat into the registry every lease / 3
    jobs = app.enqueue_many([app.prepare("where", {"seconds": 0.05}) for _ in range(6)])
    sup = rig.start("-p", "2", "-c", "3", "-q", "default")
    wait_until(lambda: len(rig.child_pids()) == 2, 15, what="two children started")

    def listed() -> list[dict] | None:
        entries = _workers(rig)
        done = sum(e["jobs_done"] for e in entries if e["kind"] == "worker")
        return entries if len(entries) == 3 and done == len(jobs) else None

    entries = wait_until(listed, 20, what="the supervisor, two children and 6 jobs done")
    supervisor, *children = entries
    assert supervisor["kind"] == "supervisor" and supervisor["pid"] == sup.pid
    assert supervisor["stats"]["processes"] == 2
    assert {c["pid"] for c in children} == set(rig.child_pids())
    for child in children:
        assert child["kind"] == "worker"
        assert child["parent_id"] == supervisor["id"]
        assert child["queues"] == ["default"] and child["concurrency"] == 3
        assert child["rss_mb"] > 0

    sup.send_signal(signal.SIGTERM)
    assert wait_for_exit(sup, 20, rig) == 0
    assert _workers(rig) == []  # they forgot themselves on the way out
