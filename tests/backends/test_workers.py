"""The worker registry: worker_beat, worker_list, worker_forget and worker_prune.

A beat is stamped with the store's clock (the `heartbeat_at` a worker sends is ignored): an
entry beaten at store time `h` with `ttl` is live while `now < h + ttl`, and prunable from
then on. Each test reads `h` back from `worker_list` and lists or prunes at explicit times
around `h + ttl` (the test-only `now`).
"""

from __future__ import annotations

from dataclasses import replace

from conveyor.backends.base import WorkerInfo

from .factory import skewed_worker_clock, store_window

T0 = 1_700_000_000.0
"""A worker's own clock reading (started_at, and the heartbeat_at the store ignores)."""
TTL = 30.0
EDGE = 0.01
"""How far from an entry's expiry `now` is taken to be clearly before or after it."""


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


def beat(backend, entry: WorkerInfo, ttl: float = TTL) -> float:
    """Beat `entry` and return its heartbeat_at as listed: the store's time of the beat."""
    _, window = store_window(backend, lambda: backend.worker_beat(entry, ttl=ttl))
    (listed,) = [w for w in backend.worker_list(0.0) if w.id == entry.id]
    assert window.holds(listed.heartbeat_at), (
        f"heartbeat_at {listed.heartbeat_at} is not the store's time of the beat "
        f"[{window.start}, {window.end}]"
    )
    return listed.heartbeat_at


def ids(backend, now: float | None = None) -> list[str]:
    return [w.id for w in backend.worker_list(now)]


def test_a_beat_round_trips_every_field_and_is_stamped_with_the_stores_time(backend):
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
    stamped = beat(backend, full)
    assert backend.worker_list() == [replace(full, heartbeat_at=stamped)]

    bare = info("w-bare")  # the defaults of the optional fields come back as they were
    stamped = beat(backend, bare)
    [got] = [w for w in backend.worker_list() if w.id == "w-bare"]
    assert got == replace(bare, heartbeat_at=stamped)
    assert (got.jobs_done, got.current_jobs, got.rss_mb, got.parent_id, got.stats) == (
        0,
        (),
        None,
        None,
        {},
    )
    assert isinstance(got.queues, tuple) and isinstance(got.current_jobs, tuple)


def test_a_beat_from_a_host_with_a_wrong_clock_is_stamped_with_the_stores(backend, monkeypatch):
    with skewed_worker_clock(backend, monkeypatch, offset=3600.0):
        _, window = store_window(backend, lambda: backend.worker_beat(info(), ttl=TTL))
        (listed,) = backend.worker_list()
    assert window.holds(listed.heartbeat_at)
    assert ids(backend, listed.heartbeat_at + TTL - EDGE) == ["w1"]
    assert ids(backend, listed.heartbeat_at + TTL + EDGE) == []


def test_a_second_beat_replaces_the_first(backend):
    first = beat(backend, info(jobs_done=1, current_jobs=("a", "b")), ttl=TTL)
    later = info(jobs_done=7, current_jobs=(), rss_mb=80.0)
    second = beat(backend, later, ttl=2 * TTL)
    assert second >= first
    assert backend.worker_list() == [replace(later, heartbeat_at=second)]
    # the new beat moved the expiry too: live past the first beat's expiry, gone after its own
    assert ids(backend, first + TTL + 5) == ["w1"]
    assert ids(backend, second + 2 * TTL - EDGE) == ["w1"]
    assert ids(backend, second + 2 * TTL + EDGE) == []


def test_expired_entries_are_not_listed_and_prune_removes_only_them(backend):
    beat(backend, info("dead-1"), ttl=TTL - 20)
    dead_2 = beat(backend, info("dead-2"), ttl=TTL - 10)
    just_expired = beat(backend, info("just-expired"), ttl=TTL)
    beat(backend, info("live"), ttl=TTL + 25)
    beat(backend, info("long-ttl"), ttl=1000.0)
    now = just_expired + TTL + EDGE

    assert sorted(ids(backend, now)) == ["live", "long-ttl"]
    # an expired entry is still listed for a `now` before its expiry: nothing is deleted yet
    assert "dead-2" in ids(backend, dead_2 + TTL - 10 - EDGE)
    assert "just-expired" in ids(backend, just_expired + TTL - EDGE)

    assert backend.worker_prune(now) == 3
    assert sorted(ids(backend, now)) == ["live", "long-ttl"]
    assert sorted(ids(backend, 0.0)) == ["live", "long-ttl"]  # the others are really gone
    assert backend.worker_prune(now) == 0

    assert backend.worker_prune(now + 1000) == 2
    assert ids(backend, 0.0) == []


def test_list_and_prune_without_now_judge_expiry_by_the_stores_clock(backend):
    beat(backend, info("live"), ttl=TTL)
    assert ids(backend) == ["live"]
    assert backend.worker_prune() == 0
    assert ids(backend) == ["live"]


def test_prune_of_an_empty_registry_deletes_nothing(backend):
    assert backend.worker_prune() == 0
    assert backend.worker_list() == []


def test_forget_removes_an_entry_and_an_unknown_id_is_a_no_op(backend):
    stamped = beat(backend, info("w1"))
    beat(backend, info("w2"))
    backend.worker_forget("w1")
    assert ids(backend) == ["w2"]
    backend.worker_forget("w1")
    backend.worker_forget("never-seen")
    assert ids(backend) == ["w2"]
    assert backend.worker_prune(stamped + 1000) == 1  # a forgotten entry is not pruned again


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
    assert ids(backend) == ["y", "x", "z", "b", "a"]


def test_several_workers_of_a_supervisor_on_several_hosts(backend):
    supervisor = info("sup", kind="supervisor", concurrency=0, queues=("default", "email"))
    children = [
        info(
            f"sup-{n}",
            parent_id="sup",
            pid=5000 + n,
            started_at=T0 + n,
            jobs_done=n * 10,
            current_jobs=tuple(f"job-{n}-{k}" for k in range(n)),
        )
        for n in range(1, 4)
    ]
    other = info("solo", hostname="host-b", pid=7, rss_mb=512.0)
    stamped = {entry.id: beat(backend, entry) for entry in (*children, other, supervisor)}

    def as_listed(*entries: WorkerInfo) -> list[WorkerInfo]:
        return [replace(entry, heartbeat_at=stamped[entry.id]) for entry in entries]

    listed = backend.worker_list()
    assert listed == as_listed(supervisor, *children, other)
    assert [w.parent_id for w in listed] == [None, "sup", "sup", "sup", None]

    # each worker beats on its own: one child's new beat changes only its entry
    busier = replace(children[1], jobs_done=99, current_jobs=())
    stamped[busier.id] = beat(backend, busier, ttl=TTL + 30)
    assert backend.worker_list() == as_listed(supervisor, children[0], busier, children[2], other)
    # the supervisor and the other children beat last with the shorter ttl
    later = max(stamped.values()) + TTL + EDGE
    assert ids(backend, later) == ["sup-2"]
    assert backend.worker_prune(later) == 4
