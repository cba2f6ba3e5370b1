"""The worker registry, leader leases and the store's clock on Redis.

The registry is two store-wide keys (one slot): a hash of entries (WorkerInfo as JSON) and a
sorted set of their expiry times, changed together by scripts that read the server's clock.
A leader lease is one key `{prefix}:leader:<name>` holding its holder, with a TTL that Redis
itself expires by its own clock: taken with SET NX PX, renewed (PEXPIRE) only by its holder.
"""

from __future__ import annotations

import orjson

from ..base import WorkerInfo
from ..rows import worker_info_json, workers_from_json
from .core import RedisCore
from .scripts import num, when


def _entry_without_beat(info: WorkerInfo) -> str:
    """The entry as JSON without `heartbeat_at`, which the script adds from the store's clock."""
    fields = orjson.loads(worker_info_json(info))
    del fields["heartbeat_at"]
    return orjson.dumps(fields).decode()


class RegistryStore(RedisCore):
    def store_time(self) -> float:
        seconds, micros = self._redis().time()
        return float(seconds + micros / 1_000_000)

    # workers ------------------------------------------------------------------------------
    def _registry(self) -> list[str]:
        return [self.keys.workers, self.keys.workers_expiry]

    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        entry = _entry_without_beat(info)
        self._run_store("worker_beat", self._registry(), info.id, entry, num(ttl))

    def worker_list(self, now: float | None = None) -> list[WorkerInfo]:
        return workers_from_json(self._run_store("worker_list", self._registry(), when(now)))

    def worker_forget(self, worker_id: str) -> None:
        pipe = self._redis().pipeline(transaction=True)
        pipe.hdel(self.keys.workers, worker_id)
        pipe.zrem(self.keys.workers_expiry, worker_id)
        pipe.execute()

    def worker_prune(self, now: float | None = None) -> int:
        pruned: int = self._run_store("worker_prune", self._registry(), when(now))
        return pruned

    # leadership ---------------------------------------------------------------------------
    def leader_elect(self, name: str, holder: str, ttl: float) -> bool:
        ms = max(1, round(ttl * 1000))
        return bool(self._run_store("leader_elect", [self.keys.leader(name)], holder, ms))

    def leader_resign(self, name: str, holder: str) -> None:
        self._run_store("leader_resign", [self.keys.leader(name)], holder)

    def leader_get(self, name: str) -> str | None:
        holder: str | None = self._redis().get(self.keys.leader(name))
        return holder
