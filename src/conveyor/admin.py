"""`Admin`: what operators read and change, for the CLI, the HTTP service and `Job` handles.

The one layer above the store for admin work: surfaces never call `app.backend` themselves.
State-changing calls (cancel, retry) publish the change the store applied through
`app.changes`, like the engine does, so events and statistics see admin actions too.
Times are the store's: listings are read at the store's clock, not this host's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .backends.base import MAINTENANCE_LEADER, JobChange, JobListParams, QueueStats, WorkerInfo
from .model.errors import JobNotFound, StoreError
from .model.job import JobRecord
from .model.states import JobState

if TYPE_CHECKING:
    from .app import Conveyor


@dataclass(frozen=True, slots=True)
class WorkersView:
    """The live workers and who leads, as of the store's `now`."""

    workers: list[WorkerInfo]
    """Sorted by (hostname, started_at, id)."""
    leader: str | None
    """The id of the worker holding the maintenance lease (it runs rescue, pruning and the
    other periodic services), or None while nobody does."""
    now: float
    """The store's clock when this was read: ages ("last beat 2 s ago") are relative to it."""

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every `WorkerInfo` field of each worker, plus `leader: bool`."""
        return [asdict(w) | {"leader": w.id == self.leader} for w in self.workers]


class Admin:
    """Reads and admin actions on one app's store (`app.admin`)."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    # jobs ---------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> JobRecord | None:
        return self.app.backend.job_get(job_id)

    def require_job(self, job_id: str) -> JobRecord:
        """The job, or JobNotFound naming the id."""
        record = self.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no job with id {job_id}")
        return record

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        task: str | None = None,
        limit: int = 50,
        before_id: str | None = None,
    ) -> list[JobRecord]:
        """Newest first; `before_id` pages on from the last id of the previous page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, not {limit!r}")
        params = JobListParams(
            queue=queue, state=state, task=task, limit=limit, before_id=before_id
        )
        return self.app.backend.job_list(params)

    def cancel_job(self, job_id: str) -> JobRecord:
        """A pending job is cancelled at once; a running one gets a cancel request that its
        worker acts on. Raises JobNotFound, or InvalidTransition for a finished job."""
        return self._applied(self.app.backend.job_cancel(job_id))

    def retry_job(self, job_id: str) -> JobRecord:
        """Queue a failed or cancelled job again, with one more attempt allowed."""
        return self._applied(self.app.backend.job_retry(job_id))

    def _applied(self, change: JobChange) -> JobRecord:
        self.app.changes.publish([change])
        if change.record is None:  # the protocol promises it for single-job admin calls
            raise StoreError(
                f"the store at {self.app.url} returned no job record for {change.id}; "
                "this is a bug in the store"
            )
        return change.record

    # queues -------------------------------------------------------------------------------
    def queue_stats(self, name: str | None = None) -> list[QueueStats]:
        """Every known queue (or the one named; [] when unknown), sorted by name."""
        return self.app.backend.queue_stats(name=name)

    def pause_queue(self, name: str) -> None:
        self.app.backend.queue_pause(_queue_name(name))

    def resume_queue(self, name: str) -> None:
        self.app.backend.queue_resume(_queue_name(name))

    # workers and the store ----------------------------------------------------------------
    def workers(self) -> WorkersView:
        backend = self.app.backend
        now = backend.store_time()
        return WorkersView(backend.worker_list(), backend.leader_get(MAINTENANCE_LEADER), now)

    def leader(self) -> str | None:
        """The id of the worker running the maintenance services, or None."""
        return self.app.backend.leader_get(MAINTENANCE_LEADER)

    def store_time(self) -> float:
        """The store's clock (Unix seconds), which every lease and due time is judged by."""
        return self.app.backend.store_time()


def _queue_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the queue name must not be empty")
    return name
