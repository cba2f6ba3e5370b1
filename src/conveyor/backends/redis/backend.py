"""The Redis store: every state change of a job is one Lua script on one queue's keys.

Layout (see keys.py): per queue, a hash per job and sorted sets by state (`ready` ordered by
priority then due time, `scheduled` by due time, `active` by lease expiry, finished sets by
finish time, `all` by id for listing), a hash of held unique keys and the queue's flags. A
store-wide index maps job ids to queues, for the calls that name only a job id.

Operations that span queues (a claim over several queues, rescue, prune, stats, listing) run
one script per queue: each queue's change is atomic, which is all a job's state needs, and
what makes the store fit Redis Cluster. `docs/redis.md` says which calls those are.
"""

from __future__ import annotations

import heapq
import logging
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import redis

from ...model.codec import decode
from ...model.errors import InvalidTransition, StoreError
from ...model.job import JobRecord, NewJob
from ..base import (
    Capabilities,
    ClaimParams,
    HeartbeatParams,
    JobListParams,
    Outcome,
    PruneParams,
    QueueStats,
    ReleaseParams,
    RescueResult,
    WorkerInfo,
)
from ..rows import (
    error_json,
    queue_stats_from,
    record_from_row,
    refusal,
    worker_info_json,
    workers_from_json,
)
from .keys import QueueKeys, StoreKeys, split_url
from .waiter import Waiter

log = logging.getLogger("conveyor.store")

SCHEMA_VERSION = 1
"""The layout version kept in the store's meta hash; a newer one is refused."""
INSERT_CHUNK = 1000
"""Jobs per insert script call: long enough to amortise the call, short enough not to hold
the server for more than a few milliseconds."""
SWEEP_LIMIT = 1000
"""Rescue and prune handle at most this many jobs per script call, then call again."""
LIST_SCAN = 2000
"""Ids a listing script looks at per call while filtering."""
MAX_PRIORITY = 2**53
"""Priorities are sorted-set scores (doubles): beyond this, neighbours would compare equal."""
STATS_SAMPLE = 1000
"""Recent finished jobs per queue that the wait and run averages are taken over."""

_FLOATS = ("run_at", "enqueued_at", "timeout", "started_at", "finished_at", "lease_expires_at")
_INTS = ("priority", "attempt", "max_attempts")
_TEXTS = ("id", "task", "queue", "state", "key", "worker_id")
_JSON = ("data", "backoff", "progress", "result")


def _load_scripts(folder: str, prelude: str = "") -> dict[str, str]:
    root = resources.files(__package__ or "conveyor.backends.redis") / "scripts" / folder
    return {
        item.name.removesuffix(".lua"): prelude + item.read_text()
        for item in root.iterdir()
        if item.name.endswith(".lua") and not item.name.startswith("_")
    }


def _queue_sources() -> dict[str, str]:
    root = resources.files(__package__ or "conveyor.backends.redis") / "scripts" / "queue"
    return _load_scripts("queue", prelude=(root / "_lib.lua").read_text() + "\n")


_QUEUE_SCRIPTS = _queue_sources()
_STORE_SCRIPTS = _load_scripts("store")


def _record(flat: Sequence[str]) -> JobRecord:
    """A JobRecord from a job hash as a Lua script returns it (field, value, field, ...)."""
    return _record_from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _record_from_hash(fields: dict[str, str]) -> JobRecord:
    row: dict[str, Any] = {name: fields.get(name) for name in _TEXTS + _JSON}
    for name in _FLOATS:
        row[name] = None if fields.get(name) is None else float(fields[name])
    for name in _INTS:
        row[name] = int(fields[name])
    row["errors"] = fields.get("errors", "[]")
    row["cancel_requested"] = fields.get("cancel_requested") == "1"
    return record_from_row(row, decode)


def _opt(value: object) -> str:
    """An optional script argument: '' for none, else '=' and the value."""
    return "" if value is None else f"={value}"


def _num(value: float) -> str:
    return repr(float(value))


class RedisBackend:
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=False, local_file=False
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_url, prefix = split_url(url)
        self.keys = StoreKeys(prefix)
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._waiter: Waiter | None = None
        self._queue_keys: dict[str, QueueKeys] = {}
        # job id -> queue of the jobs this process claimed, so heartbeats, progress and
        # releases need not ask the index.
        self._held: dict[str, str] = {}
        self._held_lock = threading.Lock()

    # set-up -------------------------------------------------------------------------------
    def open(self, migrate: bool = True) -> None:
        client = redis.Redis.from_url(
            self.client_url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise StoreError(f"cannot connect to Redis at {self._where()}: {exc}") from None
        self._client = client
        self._scripts = {
            name: client.register_script(source)
            for name, source in (_QUEUE_SCRIPTS | _STORE_SCRIPTS).items()
        }
        self._waiter = Waiter(client, self.keys.wake_channel)
        try:
            self._check_schema(migrate)
            self._check_server()
        except BaseException:
            self.close()
            raise

    def _where(self) -> str:
        parsed = urllib.parse.urlsplit(self.client_url)
        return f"{parsed.hostname}:{parsed.port or 6379}{parsed.path or '/0'}"

    def _redis(self) -> Any:
        """The client. Typed Any: redis-py types replies as bytes | str, and with
        decode_responses=True they are always str."""
        if self._client is None:
            raise StoreError("the Redis store is not open")
        return self._client

    def _check_schema(self, migrate: bool) -> None:
        current = int(self._redis().hget(self.keys.meta, "schema_version") or 0)
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the Redis store with prefix {self.keys.prefix!r} has layout version {current}, "
                f"newer than this Conveyor understands ({SCHEMA_VERSION}); upgrade conveyor"
            )
        if current < SCHEMA_VERSION:
            if not migrate:
                raise StoreError(
                    f"the Redis store with prefix {self.keys.prefix!r} is not set up "
                    f"(layout version {current}); run `conveyor migrate` first"
                )
            self._redis().hset(self.keys.meta, "schema_version", SCHEMA_VERSION)

    def _check_server(self) -> None:
        """Warn about server settings under which Redis may drop jobs."""
        try:
            config = self._redis().config_get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG is disabled on some managed services
            return
        policy = config.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy %s: under memory pressure it evicts keys, "
                "and with them jobs. Set maxmemory-policy noeviction (see docs/redis.md)",
                self._where(),
                policy,
            )

    def schema_version(self) -> int:
        return int(self._redis().hget(self.keys.meta, "schema_version") or 0)

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
        if self._client is not None:
            self._client.close()
        self._client = None

    # helpers ------------------------------------------------------------------------------
    def _queue(self, name: str) -> QueueKeys:
        keys = self._queue_keys.get(name)
        if keys is None:
            keys = self._queue_keys[name] = self.keys.queue(name)
        return keys

    def _run(self, script: str, queue: str, *args: object, client: Any = None) -> Any:
        """Run a queue script (reloaded by redis-py if the server lost it)."""
        keys = self._queue(queue)
        return self._scripts[script](
            keys=keys.keys, args=[*keys.args, *args], client=client or self._redis()
        )

    def _queues_of(self, job_ids: Iterable[str]) -> dict[str, list[str]]:
        """Group job ids by queue: this process's claims first, then the index."""
        groups: dict[str, list[str]] = {}
        unknown = []
        with self._held_lock:
            for job_id in job_ids:
                queue = self._held.get(job_id)
                if queue is None:
                    unknown.append(job_id)
                else:
                    groups.setdefault(queue, []).append(job_id)
        if unknown:
            owners = self._redis().hmget(self.keys.index, unknown)
            for job_id, queue in zip(unknown, owners, strict=True):
                if queue is not None:
                    groups.setdefault(queue, []).append(job_id)
        return groups

    def _forget_held(self, job_ids: Iterable[str]) -> None:
        with self._held_lock:
            for job_id in job_ids:
                self._held.pop(job_id, None)

    def _known_queues(self) -> list[str]:
        return sorted(self._redis().smembers(self.keys.queues))

    # jobs ---------------------------------------------------------------------------------
    def job_insert_many(self, jobs: Sequence[NewJob], connection: Any = None) -> list[JobRecord]:
        if connection is not None:
            raise StoreError("the Redis store cannot join another connection's transaction")
        by_queue: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(index)
        records: list[JobRecord | None] = [None] * len(jobs)
        for queue, indexes in by_queue.items():
            for start in range(0, len(indexes), INSERT_CHUNK):
                chunk = indexes[start : start + INSERT_CHUNK]
                self._insert_chunk(queue, [jobs[i] for i in chunk], chunk, records)
        return [r for r in records if r is not None]

    def _insert_chunk(
        self,
        queue: str,
        jobs: list[NewJob],
        positions: list[int],
        records: list[JobRecord | None],
    ) -> None:
        taken = self._scripts["index_add"](
            keys=[self.keys.index, self.keys.queues],
            args=[queue, *(job.id for job in jobs)],
            client=self._redis(),
        )
        elsewhere = self._jobs_elsewhere(queue, dict(zip(taken[::2], taken[1::2], strict=True)))
        for job in jobs:
            if abs(job.priority) > MAX_PRIORITY:
                raise StoreError(
                    f"priority {job.priority} is out of range for the Redis store "
                    f"(-{MAX_PRIORITY} to {MAX_PRIORITY}): sorted-set scores are doubles"
                )
        stored = [
            (job, at) for job, at in zip(jobs, positions, strict=True) if job.id not in elsewhere
        ]
        args: list[object] = []
        for job, _ in stored:
            args += [
                job.id,
                job.task,
                job.state.value,
                job.data.decode(),
                job.priority,
                _num(job.run_at),
                job.max_attempts,
                _num(job.enqueued_at),
                _opt(job.key),
                _opt(None if job.timeout is None else _num(job.timeout)),
                _opt(None if job.backoff is None else job.backoff.decode()),
            ]
        answer = self._run("insert", queue, *args) if args else []
        standing_in = dict(zip(answer[::2], answer[1::2], strict=True))  # 1-based position
        orphans = []
        for number, (job, at) in enumerate(stored, start=1):
            existing = standing_in.get(number)
            if existing is None:
                records[at] = JobRecord.from_new(job)
                continue
            if existing != job.id:
                orphans.append(job.id)  # its unique key is held: this id was never stored
            records[at] = self._get_in(queue, existing)
        for job, at in zip(jobs, positions, strict=True):
            if job.id in elsewhere:
                records[at] = elsewhere[job.id]
        if orphans:
            self._scripts["index_forget"](
                keys=[self.keys.index], args=[queue, *orphans], client=self._redis()
            )

    def _jobs_elsewhere(self, queue: str, owners: dict[str, str]) -> dict[str, JobRecord]:
        """Ids already used in another queue: the existing job if it is still there, else
        the id is taken over for `queue` (its old job was pruned)."""
        found: dict[str, JobRecord] = {}
        for job_id, owner in owners.items():
            record = self._get_in(owner, job_id)
            if record is not None:
                found[job_id] = record
            else:
                self._redis().hset(self.keys.index, job_id, queue)
        return found

    def _get_in(self, queue: str, job_id: str) -> JobRecord | None:
        fields = self._redis().hgetall(self._queue(queue).job(job_id))
        return _record_from_hash(fields) if fields else None

    def job_get(self, job_id: str) -> JobRecord | None:
        queue = self._redis().hget(self.keys.index, job_id)
        return None if queue is None else self._get_in(queue, job_id)

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        queues = [params.queue] if params.queue is not None else self._known_queues()
        found: list[JobRecord] = []
        for queue in queues:
            found.extend(self._list_queue(queue, params))
        found.sort(key=lambda r: r.id, reverse=True)
        return found[: params.limit]

    def _list_queue(self, queue: str, params: JobListParams) -> list[JobRecord]:
        start = "+" if params.before_id is None else "(" + params.before_id
        state = "" if params.state is None else params.state.value
        rows: list[JobRecord] = []
        while len(rows) < params.limit:
            last, looked, flats = self._run(
                "list", queue, start, params.limit - len(rows), state, params.task or "", LIST_SCAN
            )
            rows.extend(_record(flat) for flat in flats)
            if looked < LIST_SCAN:
                break
            start = "(" + last
        return rows

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        if params.limit < 1:
            return []
        lease = _num(params.now + params.lease_seconds)
        if len(params.queues) == 1:
            shares = {params.queues[0]: params.limit}
        else:
            shares = self._shares(params)
        records: list[JobRecord] = []
        for queue, count in shares.items():
            flats = self._run("claim", queue, count, params.worker_id, _num(params.now), lease)
            records.extend(_record(flat) for flat in flats)
        with self._held_lock:
            for record in records:
                self._held[record.id] = record.queue
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def _shares(self, params: ClaimParams) -> dict[str, int]:
        """How many jobs to claim from each queue so that priority holds across them: each
        queue offers its best `limit`, the best `limit` offers win."""
        pipe = self._redis().pipeline(transaction=False)
        for queue in params.queues:
            self._run("peek", queue, params.limit, _num(params.now), client=pipe)
        offers = []
        for queue, answer in zip(params.queues, pipe.execute(), strict=True):
            offers += [
                (float(score), member, queue)
                for member, score in zip(answer[::2], answer[1::2], strict=True)
            ]
        shares: dict[str, int] = {}
        for _, _, queue in heapq.nsmallest(params.limit, offers):
            shares[queue] = shares.get(queue, 0) + 1
        return shares

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> None:
        by_queue: dict[str, list[object]] = {}
        for o in outcomes:
            by_queue.setdefault(o.queue, []).extend(
                [
                    o.job_id,
                    o.attempt,
                    o.worker_id,
                    o.kind,
                    _num(o.finished_at),
                    _opt(None if o.result is None else o.result.decode()),
                    _opt(error_json(o.error)),
                    _opt(None if o.run_at is None else _num(o.run_at)),
                ]
            )
        for queue, args in by_queue.items():
            self._run("complete", queue, *args)
        self._forget_held(o.job_id for o in outcomes)

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        held: dict[str, bool] = {}
        lease = _num(params.now + params.lease_seconds)
        for queue, ids in self._queues_of(params.job_ids).items():
            answer = self._run("heartbeat", queue, params.worker_id, lease, *ids)
            held.update(
                (job_id, bool(cancel))
                for job_id, cancel in zip(answer[::2], answer[1::2], strict=True)
            )
        self._forget_held(job_id for job_id in params.job_ids if job_id not in held)
        return held

    def job_release_many(self, params: ReleaseParams) -> None:
        for queue, ids in self._queues_of(params.job_ids).items():
            self._run("release", queue, params.worker_id, _num(params.now), *ids)
        self._forget_held(params.job_ids)

    def job_rescue_expired(self, now: float) -> RescueResult:
        totals = [0, 0, 0]
        for queue in self._known_queues():
            while True:
                requeued, failed, cancelled, seen = self._run(
                    "rescue", queue, _num(now), SWEEP_LIMIT
                )
                totals = [totals[0] + requeued, totals[1] + failed, totals[2] + cancelled]
                if seen < SWEEP_LIMIT:
                    break
        return RescueResult(requeued=totals[0], failed=totals[1], cancelled=totals[2])

    def _admin(self, script: str, job_id: str, now: float, rule: str) -> JobRecord:
        queue = self._redis().hget(self.keys.index, job_id)
        answer = ["missing"] if queue is None else self._run(script, queue, job_id, _num(now))
        status = answer[0]
        if status == "ok":
            return _record(answer[1])
        if status == "key_held":
            raise InvalidTransition(
                f"job {job_id} cannot be retried: job {answer[1]} holds its key"
            )
        raise refusal(job_id, None if status == "missing" else answer[1], rule)

    def job_cancel(self, job_id: str, now: float) -> JobRecord:
        return self._admin("cancel", job_id, now, "only pending or active jobs can be cancelled")

    def job_retry(self, job_id: str, now: float) -> JobRecord:
        return self._admin("retry", job_id, now, "only failed or cancelled jobs can be retried")

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        queues = list(self._queues_of([job_id]))
        if not queues:
            return False
        return bool(self._run("progress", queues[0], job_id, attempt, progress.decode()))

    def job_prune(self, params: PruneParams) -> int:
        total = 0
        for queue in self._known_queues():
            while True:
                deleted = self._run(
                    "prune",
                    queue,
                    _num(params.completed_before),
                    _num(params.failed_before),
                    SWEEP_LIMIT,
                )
                if deleted:
                    self._scripts["index_forget"](
                        keys=[self.keys.index], args=[queue, *deleted], client=self._redis()
                    )
                total += len(deleted)
                if len(deleted) < SWEEP_LIMIT:
                    break
        return total

    def store_compact(self) -> None:
        """Nothing to do: Redis frees a job's memory when it is deleted."""

    def job_next_due_at(self, queues: Sequence[str]) -> float | None:
        pipe = self._redis().pipeline(transaction=False)
        for queue in queues:
            keys = self._queue(queue)
            pipe.hget(keys.keys[8], "paused")
            pipe.zrange(keys.keys[1], 0, 0, withscores=True)
        answers = pipe.execute()
        due = [
            first[0][1]
            for paused, first in zip(answers[::2], answers[1::2], strict=True)
            if paused != "1" and first
        ]
        return min(due, default=None)

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        if self._waiter is None:
            raise StoreError("the Redis store is not open")
        return self._waiter.wait(queues, timeout)

    # queues -------------------------------------------------------------------------------
    def _set_paused(self, name: str, paused: bool) -> None:
        keys = self._queue(name)
        pipe = self._redis().pipeline(transaction=False)
        pipe.sadd(self.keys.queues, name)
        pipe.hset(keys.keys[8], "paused", "1" if paused else "0")
        if not paused:
            pipe.publish(self.keys.wake_channel, name)
        pipe.execute()

    def queue_pause(self, name: str) -> None:
        self._set_paused(name, True)

    def queue_resume(self, name: str) -> None:
        self._set_paused(name, False)

    def queue_stats(self, now: float, name: str | None = None) -> list[QueueStats]:
        queues = [name] if name is not None else self._known_queues()
        if name is not None and not self._redis().sismember(self.keys.queues, name):
            queues = []
        paused: dict[str, bool] = {}
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float | None] = {}
        recent: dict[str, dict[str, Any]] = {}
        for queue in queues:
            figures = self._run(
                "stats", queue, _num(now), _num(now - 60), _num(now - 3600), STATS_SAMPLE
            )
            paused[queue] = figures[0] == "1"
            states = ("scheduled", "queued", "active", "completed", "failed", "cancelled")
            counts[queue] = {
                state: int(n) for state, n in zip(states, figures[1:7], strict=True) if int(n)
            }
            oldest[queue] = float(figures[7]) if figures[7] else None
            recent[queue] = {
                "completed_last_minute": int(figures[8]),
                "failed_last_minute": int(figures[9]),
                "avg_wait": float(figures[10]) if figures[10] else None,
                "avg_run": float(figures[11]) if figures[11] else None,
            }
        return queue_stats_from(paused, counts, oldest, recent)

    # workers ------------------------------------------------------------------------------
    # The registry is two store-wide keys (one slot): a hash of entries and a sorted set of
    # their expiry times. Changes to both are MULTI transactions; no script is needed.
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        pipe = self._redis().pipeline(transaction=True)
        pipe.hset(self.keys.workers, info.id, worker_info_json(info))
        pipe.zadd(self.keys.workers_expiry, {info.id: info.heartbeat_at + ttl})
        pipe.execute()

    def worker_list(self, now: float) -> list[WorkerInfo]:
        ids = self._redis().zrangebyscore(self.keys.workers_expiry, "(" + _num(now), "+inf")
        if not ids:
            return []
        return workers_from_json(self._redis().hmget(self.keys.workers, ids))

    def worker_forget(self, worker_id: str) -> None:
        pipe = self._redis().pipeline(transaction=True)
        pipe.hdel(self.keys.workers, worker_id)
        pipe.zrem(self.keys.workers_expiry, worker_id)
        pipe.execute()

    def worker_prune(self, now: float) -> int:
        """Watches the expiry set, so that a worker beating meanwhile is not deleted."""

        def prune(pipe: Any) -> int:
            ids = pipe.zrangebyscore(self.keys.workers_expiry, "-inf", _num(now))
            pipe.multi()
            if ids:
                pipe.hdel(self.keys.workers, *ids)
                pipe.zrem(self.keys.workers_expiry, *ids)
            return len(ids)

        pruned: int = self._redis().transaction(
            prune, self.keys.workers_expiry, value_from_callable=True
        )
        return pruned
