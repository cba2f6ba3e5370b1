"""`conveyor workers`: the worker registry read through the real command.

Entries are put in the store directly with `worker_beat`, relative to the real clock (the
command reads the registry at its own `time.time()`).
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from conveyor.backends import open_backend
from conveyor.backends.base import WorkerInfo

from .helpers import Cli, make_cli

TTL = 300.0


@pytest.fixture
def cli(tmp_path) -> Cli:
    return make_cli(tmp_path)


def beat(cli: Cli, *entries: WorkerInfo, ttl: float = TTL) -> None:
    store = open_backend(cli.url)
    store.open()
    try:
        for entry in entries:
            store.worker_beat(entry, ttl=ttl)
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
    beat(cli, *children, solo, supervisor, first)

    headers, rows = table(cli.ok("workers"))
    assert "|".join(headers) == "ID|KIND|HOST|PID|QUEUES|CONC|DONE|RUNNING|RSS MB|UP|LAST BEAT"
    assert [row[0] for row in rows] == ["early", "sup-1", "└ sup-1.1", "└ sup-1.2", "solo"]
    by_id = {row[0].removeprefix("└ "): dict(zip(headers, row, strict=True)) for row in rows}
    assert by_id["sup-1"] | {"LAST BEAT": ""} == {
        "ID": "sup-1",
        "KIND": "supervisor",
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
    assert (child["KIND"], child["PID"], child["DONE"]) == ("worker", "502", "2")
    assert (child["RUNNING"], child["RSS MB"], child["UP"]) == ("2", "82", "3m")
    assert re.fullmatch(r"\d+s ago", child["LAST BEAT"]), child  # beaten 2 s before the run
    assert re.fullmatch(r"\d+s", by_id["early"]["UP"]), by_id["early"]  # started 5 s before


def test_json_lists_every_field_of_every_live_worker(cli):
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
    beat(cli, child, supervisor)

    listed = cli.json("workers")
    assert [w["id"] for w in listed] == ["sup", "sup.1"]
    fields = [f.name for f in dataclasses.fields(WorkerInfo)]
    assert all(list(w) == fields for w in listed)
    again = [
        WorkerInfo(**(w | {"queues": tuple(w["queues"]), "current_jobs": tuple(w["current_jobs"])}))
        for w in listed
    ]
    assert again == [supervisor, child]


def test_expired_workers_are_not_shown(cli):
    now = time.time()
    live = entry("live")
    beat(cli, live, entry("gone", heartbeat_at=now - 100), ttl=30.0)
    assert [w["id"] for w in cli.json("workers")] == ["live"]
    _, rows = table(cli.ok("workers"))
    assert [row[0] for row in rows] == ["live"]


def test_without_live_workers_it_says_so(cli):
    assert cli.ok("workers") == "no live workers\n"
    assert cli.json("workers") == []
    beat(cli, entry("gone", heartbeat_at=time.time() - 100), ttl=30.0)
    assert cli.ok("workers") == "no live workers\n"
