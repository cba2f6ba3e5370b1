"""The worker registry: worker_beat, worker_list, worker_forget and worker_prune.

Times are explicit: an entry beaten at `heartbeat_at` with `ttl` is live while
`now < heartbeat_at + ttl`, and prunable from then on.
"""

from __future__ import annotations

from dataclasses import replace

from conveyor.backends.base import WorkerInfo

T0 = 1_700_000_000.0
TTL = 30.0


def info(worker_id: str = "w1", **fields) -> WorkerInfo:
    defaults = {
        "kind": "worker",
        "hostname": "host-a",
        "pid": 4242,
        "queues": ("default",),
        "concurrency": 10,
        "started_at": T0,
        "heartbeat_at": T0,
    }
    return WorkerInfo(id=worker_id, **(defaults | fields))


def ids(backend, now: float) -> list[str]:
    return [w.id for w in backend.worker_list(now)]


def test_a_beat_round_trips_every_field(backend):
    full = WorkerInfo(
        id="sup-1/child-2",
        kind="worker",
        hostname="box.example.com",
        pid=31337,
        queues=("email", "default", "reports"),
        concurrency=50,
        started_at=T0 - 3600.125,
        heartbeat_at=T0 + 0.123456,
        jobs_done=987654,
        current_jobs=("01HZX0000000000000000000A1", "01HZX0000000000000000000B2"),
        rss_mb=123.456,
        parent_id="sup-1",
        stats={"scale": {"up": 2, "down": 0}, "reason": "queue backlog", "load": [0.5, 1.25]},
    )
    backend.worker_beat(full, ttl=TTL)
    assert backend.worker_list(T0) == [full]

    bare = info("w-bare")  # the defaults of the optional fields come back as they were
    backend.worker_beat(bare, ttl=TTL)
    [got] = [w for w in backend.worker_list(T0) if w.id == "w-bare"]
    assert got == bare
    assert (got.jobs_done, got.current_jobs, got.rss_mb, got.parent_id, got.stats) == (
        0,
        (),
        None,
        None,
        {},
    )
    assert isinstance(got.queues, tuple) and isinstance(got.current_jobs, tuple)


def test_a_second_beat_replaces_the_first(backend):
    backend.worker_beat(info(jobs_done=1, current_jobs=("a", "b")), ttl=TTL)
    later = info(heartbeat_at=T0 + 10, jobs_done=7, current_jobs=(), rss_mb=80.0)
    backend.worker_beat(later, ttl=TTL)
    assert backend.worker_list(T0 + 10) == [later]
    # the new beat moved the expiry too: live past the first beat's expiry, gone after its own
    assert ids(backend, T0 + TTL + 5) == ["w1"]
    assert ids(backend, T0 + 10 + TTL) == []


def test_expired_entries_are_not_listed_and_prune_removes_only_them(backend):
    backend.worker_beat(info("dead-1", heartbeat_at=T0 - 100), ttl=TTL)
    backend.worker_beat(info("dead-2", heartbeat_at=T0 - 40), ttl=TTL)
    backend.worker_beat(info("at-edge", heartbeat_at=T0 - TTL), ttl=TTL)  # expires at T0
    backend.worker_beat(info("live", heartbeat_at=T0 - 5), ttl=TTL)
    backend.worker_beat(info("long-ttl", heartbeat_at=T0 - 100), ttl=1000.0)

    assert sorted(ids(backend, T0)) == ["live", "long-ttl"]
    # an expired entry is still listed for a `now` before its expiry: nothing is deleted yet
    assert "dead-2" in ids(backend, T0 - 15)

    assert backend.worker_prune(T0) == 3
    assert sorted(ids(backend, T0)) == ["live", "long-ttl"]
    assert sorted(ids(backend, 0.0)) == ["live", "long-ttl"]  # the others are really gone
    assert backend.worker_prune(T0) == 0

    assert backend.worker_prune(T0 + 1000) == 2
    assert ids(backend, 0.0) == []


def test_prune_of_an_empty_registry_deletes_nothing(backend):
    assert backend.worker_prune(T0) == 0
    assert backend.worker_list(T0) == []


def test_forget_removes_an_entry_and_an_unknown_id_is_a_no_op(backend):
    backend.worker_beat(info("w1"), ttl=TTL)
    backend.worker_beat(info("w2"), ttl=TTL)
    backend.worker_forget("w1")
    assert ids(backend, T0) == ["w2"]
    backend.worker_forget("w1")
    backend.worker_forget("never-seen")
    assert ids(backend, T0) == ["w2"]
    assert backend.worker_prune(T0 + 1000) == 1  # a forgotten entry is not pruned again


def test_list_is_sorted_by_hostname_then_started_at_then_id(backend):
    entries = [
        info("b", hostname="host-b", started_at=T0 - 50),
        info("z", hostname="host-a", started_at=T0 - 10),
        info("y", hostname="host-a", started_at=T0 - 20),
        info("x", hostname="host-a", started_at=T0 - 10),
        info("a", hostname="host-c", started_at=T0 - 90),
    ]
    for entry in entries:
        backend.worker_beat(entry, ttl=TTL)
    assert ids(backend, T0) == ["y", "x", "z", "b", "a"]


def test_several_workers_of_a_supervisor_on_several_hosts(backend):
    supervisor = info("sup", kind="supervisor", concurrency=0, queues=("default", "email"))
    children = [
        info(
            f"sup-{n}",
            parent_id="sup",
            pid=5000 + n,
            started_at=T0 + n,
            heartbeat_at=T0 + n,
            jobs_done=n * 10,
            current_jobs=tuple(f"job-{n}-{k}" for k in range(n)),
        )
        for n in range(1, 4)
    ]
    other = info("solo", hostname="host-b", pid=7, rss_mb=512.0)
    for entry in (*children, other, supervisor):
        backend.worker_beat(entry, ttl=TTL)

    listed = backend.worker_list(T0 + 5)
    assert listed == [supervisor, *children, other]
    assert [w.parent_id for w in listed] == [None, "sup", "sup", "sup", None]

    # each worker beats on its own: one child's new beat changes only its entry
    busier = replace(children[1], heartbeat_at=T0 + 20, jobs_done=99, current_jobs=())
    backend.worker_beat(busier, ttl=TTL)
    assert backend.worker_list(T0 + 5) == [supervisor, children[0], busier, children[2], other]
    # the supervisor and the other children stopped beating at T0 + 3 at the latest
    assert ids(backend, T0 + 34) == ["sup-2"]
    assert backend.worker_prune(T0 + 34) == 4
