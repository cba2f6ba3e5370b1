"""`conveyor workers`: the worker registry read through the real command.

Entries are put in the store directly with `worker_beat` (the store stamps each beat with its
own clock; on SQLite that is this host's), and the maintenance leader with `leader_elect`; one
test runs a real worker and finds it leading.
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from conveyor.backends import open_backend
from conveyor.backends.base import MAINTENANCE_LEADER, WorkerInfo
from engine.helpers import wait_until

from .helpers import Cli, make_cli

TTL = 300.0


@pytest.fixture
def cli(tmp_path) -> Cli:
    return make_cli(tmp_path)


def beat(cli: Cli, *entries: WorkerInfo, ttl: float = TTL, leader: str | None = None) -> None:
    """Register `entries`; with `leader`, that id takes the maintenance lease."""
    store = open_backend(cli.url)
    store.open()
    try:
        for entry in entries:
            store.worker_beat(entry, ttl=ttl)
        if leader is not None:
            assert store.leader_elect(MAINTENANCE_LEADER, leader, ttl)
    finally:
        store.close()


def entry(worker_id: str, **fields) -> WorkerInfo:
    now = time.time()
    defaults = {
        "kind": "worker",
        "hostname": "host-a",
        "pid": 100,
        "queues": ("default",),
        "concurrency": 10,
        "started_at": now - 60,
        "heartbeat_at": now - 2,
    }
    return WorkerInfo(id=worker_id, **(defaults | fields))


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the table; columns are at least two spaces apart."""
    header, *lines = text.strip("\n").splitlines()
    return re.split(r"\s{2,}", header.strip()), [re.split(r"\s{2,}", x.strip()) for x in lines]


def test_the_table_shows_each_supervisor_followed_by_its_children(cli):
    now = time.time()
    supervisor = entry(
        "sup-1",
        kind="supervisor",
        hostname="host-b",
        pid=500,
        concurrency=0,
        queues=("default", "email"),
        started_at=now - 7300,
        jobs_done=40,
    )
    children = [
        entry(
            f"sup-1.{n}",
            hostname="host-b",
            pid=500 + n,
            queues=("default", "email"),
            parent_id="sup-1",
            started_at=now - 200 + n,
            jobs_done=n,
            current_jobs=tuple(f"job{n}{k}" for k in range(n)),
            rss_mb=80.4 + n,
        )
        for n in (1, 2)
    ]
    # sorts between the supervisor and its children by (hostname, started_at), yet is shown
    # after them: children follow their supervisor
    solo = entry("solo", hostname="host-b", started_at=now - 1000, pid=9, concurrency=4)
    first = entry("early", hostname="host-a", started_at=now - 5)
    beat(cli, *children, solo, supervisor, first, leader="sup-1.2")

    headers, rows = table(cli.ok("workers"))
    assert "|".join(headers) == (
        "ID|KIND|LEADER|HOST|PID|QUEUES|CONC|DONE|RUNNING|RSS MB|UP|LAST BEAT"
    )
    assert [row[0] for row in rows] == ["early", "sup-1", "└ sup-1.1", "└ sup-1.2", "solo"]
    by_id = {row[0].removeprefix("└ "): dict(zip(headers, row, strict=True)) for row in rows}
    assert by_id["sup-1"] | {"LAST BEAT": ""} == {
        "ID": "sup-1",
        "KIND": "supervisor",
        "LEADER": "-",
        "HOST": "host-b",
        "PID": "500",
        "QUEUES": "default,email",
        "CONC": "0",
        "DONE": "40",
        "RUNNING": "0",
        "RSS MB": "-",
        "UP": "2h",
        "LAST BEAT": "",
    }
    child = by_id["sup-1.2"]
    assert (child["KIND"], child["LEADER"], child["PID"]) == ("worker", "yes", "502")
    assert [row["ID"] for row in by_id.values() if row["LEADER"] == "yes"] == ["└ sup-1.2"]
    assert child["DONE"] == "2"
    assert (child["RUNNING"], child["RSS MB"], child["UP"]) == ("2", "82", "3m")
    assert re.fullmatch(r"\d+s ago", child["LAST BEAT"]), child
    assert re.fullmatch(r"\d+s", by_id["early"]["UP"]), by_id["early"]  # started 5 s before


def test_json_lists_every_field_of_every_live_worker_and_who_leads(cli):
    supervisor = entry("sup", kind="supervisor", stats={"scaled": [{"to": 3, "why": "backlog"}]})
    child = entry(
        "sup.1",
        parent_id="sup",
        current_jobs=("a", "b"),
        rss_mb=12.5,
        jobs_done=7,
        queues=("default", "email"),
        started_at=supervisor.started_at + 1,
    )
    before = time.time()
    beat(cli, child, supervisor, leader="sup.1")

    listed = cli.json("workers")
    assert [w["id"] for w in listed] == ["sup", "sup.1"]
    assert [w.pop("leader") for w in listed] == [False, True]
    fields = [f.name for f in dataclasses.fields(WorkerInfo)]
    assert all(list(w) == fields for w in listed)
    assert all(before - 1 <= w["heartbeat_at"] <= time.time() + 1 for w in listed)  # store time
    again = [
        WorkerInfo(**(w | {"queues": tuple(w["queues"]), "current_jobs": tuple(w["current_jobs"])}))
        for w in listed
    ]
    stamped = [
        dataclasses.replace(w, heartbeat_at=a.heartbeat_at)
        for w, a in zip([supervisor, child], again, strict=True)
    ]
    assert again == stamped


def test_expired_workers_are_not_shown(cli):
    beat(cli, entry("gone"), ttl=0.2)
    beat(cli, entry("live"))
    wait_until(lambda: [w["id"] for w in cli.json("workers")] == ["live"], timeout=10)
    _, rows = table(cli.ok("workers"))
    assert [row[0] for row in rows] == ["live"]


def test_without_live_workers_it_says_so(cli):
    assert cli.ok("workers") == "no live workers\n"
    assert cli.json("workers") == []
    beat(cli, entry("gone"), ttl=0.2)
    wait_until(lambda: cli.ok("workers") == "no live workers\n", timeout=10)


def test_a_running_worker_is_listed_as_the_leader(cli):
    """The real thing: a worker elects itself maintenance leader and the command says so."""
    worker = cli.popen("worker", "myapp:app")
    try:
        listed = wait_until(
            lambda: [w for w in cli.json("workers") if w["leader"]],
            timeout=20,
            interval=0.2,
            what="a live worker marked leader",
        )
        [leader] = listed
        assert (leader["kind"], leader["pid"]) == ("worker", worker.pid)
        headers, rows = table(cli.ok("workers"))
        [row] = rows
        assert dict(zip(headers, row, strict=True))["LEADER"] == "yes"
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    assert worker.returncode == 0
