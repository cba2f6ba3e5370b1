"""The Redis store: every state change of a job is one Lua script on one queue's keys.

Layout (see keys.py): per queue, a hash per job and sorted sets by state (`ready` ordered by
priority then due time, `scheduled` by due time, `active` by lease expiry, finished sets by
finish time, `all` by id for listing), a hash of held unique keys and the queue's flags. A
store-wide index maps job ids to queues, for the calls that name only a job id.

Operations that span queues (a claim over several queues, rescue, prune, stats, listing) run
one script per queue: each queue's change is atomic, which is all a job's state needs. The
bulk insert is one script over every queue of the batch, atomic on one node.
`docs/redis.md` says which calls those are and what holds on a cluster.

The parts: jobs.py (the job lifecycle), admin.py (reads, operators' changes, queues),
registry.py (workers, leader leases, the clock), core.py (client and scripts), this file
(opening, the layout version, closing, fork safety).
"""

from __future__ import annotations

import logging

import redis

from ...model.errors import StoreError
from ..base import Capabilities
from ..fork import forget_connections_in_children
from .admin import AdminStore
from .jobs import JobStore
from .registry import RegistryStore

log = logging.getLogger("conveyor.store")

SCHEMA_VERSION = 1
"""The layout version kept in the store's meta hash; a newer one is refused. (Fields added
since, like `snoozes` and the leader keys, read as absent = 0 / none: no upgrade needed.)"""


class RedisBackend(JobStore, AdminStore, RegistryStore):
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=False, local_file=False
    )

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        super().__init__(url, connect_timeout=connect_timeout)
        forget_connections_in_children(self)

    def open(self, migrate: bool = True) -> None:
        self._opened = True
        try:
            self._redis().ping()
            self._check_schema(migrate)
            self._check_server()
        except BaseException:
            self.close()
            raise

    def _check_schema(self, migrate: bool) -> None:
        current = self.schema_version()
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
        self._opened = False
        waiter, client = self._waiter_object, self._client
        self._waiter_object = self._client = None
        if waiter is not None:
            waiter.close()
        if client is not None:
            client.close()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's client, pool, subscriber (and its lock,
        perhaps held by a parent thread that does not exist here) and claimed jobs, without
        closing them (that would shut the parent's sockets). The next call connects anew."""
        self._reset_connections()
