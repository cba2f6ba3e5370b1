"""Fork safety: a child made by `fork()` (gunicorn --preload, multiprocessing) uses the store
object it inherited without touching its parent's connections, and the parent goes on.

The parent first uses the store (so it holds live connections, and a listener where the
store has one); then children enqueue while the parent does, through the same object.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

from conveyor.backends.base import Backend, JobListParams
from conveyor.model.states import JobState

from .factory import claim_one, complete, new_job, outcome

CHILDREN = [f"child-{n}" for n in range(3)]
PER_PROCESS = 50
TIMEOUT = 60.0
"""Upper bound for every process and the parent's own enqueues; a working store needs far
less, a broken one hangs (the failure this guards against)."""


def enqueue(backend: Backend, source: str) -> None:
    """Enqueue PER_PROCESS jobs one call each, as a web process does per request."""
    for n in range(PER_PROCESS):
        backend.job_insert_many([new_job(queue="forked", data={"source": source, "n": n})])


def use_the_store(backend: Backend) -> None:
    """Open every kind of connection the parent may hold at fork time."""
    backend.store_time()
    backend.job_get("none")
    backend.job_list(JobListParams(limit=1))
    backend.jobs_wait(["forked"], 0.0)  # starts listening where the store has a listener
    backend.queue_stats()


def test_forked_children_enqueue_beside_their_parent(backend):
    use_the_store(backend)
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=enqueue, args=(backend, name), daemon=True) for name in CHILDREN
    ]
    for child in children:
        child.start()
    parent_errors: list[BaseException] = []

    def parent_enqueue() -> None:
        try:
            enqueue(backend, "parent")
        except BaseException as exc:  # reported below
            parent_errors.append(exc)

    parent = threading.Thread(target=parent_enqueue, daemon=True)
    parent.start()
    parent.join(timeout=TIMEOUT)
    for child in children:
        child.join(timeout=TIMEOUT)
    hung = [child.pid for child in children if child.is_alive()]
    for child in children:
        if child.is_alive():
            child.kill()
            child.join(timeout=5)

    assert not parent.is_alive(), "the parent's enqueues hung after the fork"
    assert parent_errors == []
    assert hung == [], f"children {hung} did not finish within {TIMEOUT} s"
    assert [child.exitcode for child in children] == [0] * len(CHILDREN)

    jobs = backend.job_list(JobListParams(queue="forked", limit=1000))
    per_source = Counter(job.data["source"] for job in jobs)
    assert per_source == {source: PER_PROCESS for source in ["parent", *CHILDREN]}
    assert len({(job.data["source"], job.data["n"]) for job in jobs}) == len(jobs)

    # the parent's store still works, for writes and for claims
    job = claim_one(backend, queues=("forked",))
    changes = complete(backend, outcome(job, "completed"))
    assert changes[job.id].to_state is JobState.COMPLETED
