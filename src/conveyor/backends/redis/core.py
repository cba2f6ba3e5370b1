"""What every part of the Redis store shares: its keys, its client and how scripts run.

The client is made on first use (and again in a child process after `fork()`, see
backend.py), so that a forked child never talks over its parent's sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ...model.errors import StoreError
from .connection import make_client, make_subscriber_client, public_url
from .held import HeldJobs
from .keys import QueueKeys, StoreKeys, split_url
from .scripts import SCRIPTS
from .waiter import Waiter


class RedisCore:
    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.url = url
        self.client_url, prefix = split_url(url)
        self.keys = StoreKeys(prefix)
        self.connect_timeout = connect_timeout
        self._queue_keys: dict[str, QueueKeys] = {}
        self._opened = False
        self._reset_connections()

    def _reset_connections(self) -> None:
        """Start without a client, a subscriber or claimed jobs (a new store, or a forked
        child: the parent's objects are forgotten, never closed, as they are the parent's)."""
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._waiter_object: Waiter | None = None
        self._held = HeldJobs()

    def _where(self) -> str:
        return public_url(self.url)

    def _redis(self) -> Any:
        """The client. Typed Any: redis-py types replies as bytes | str, and with
        decode_responses=True they are always str."""
        client = self._client
        if client is None:
            if not self._opened:
                raise StoreError(f"the Redis store at {self._where()} is not open")
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.client_url, self.url, self.connect_timeout)
                client = self._client
        return client

    def _waiter(self) -> Waiter:
        waiter = self._waiter_object
        if waiter is None:
            if not self._opened:
                raise StoreError(f"the Redis store at {self._where()} is not open")
            with self._client_lock:
                if self._waiter_object is None:
                    self._waiter_object = Waiter(
                        lambda: make_subscriber_client(self.client_url, self.connect_timeout),
                        self.keys.wake_channel,
                        self._where(),
                    )
                waiter = self._waiter_object
        return waiter

    def _queue(self, name: str) -> QueueKeys:
        keys = self._queue_keys.get(name)
        if keys is None:
            keys = self._queue_keys[name] = self.keys.queue(name)
        return keys

    def _run(self, script: str, queue: str, *args: Any, client: Any = None) -> Any:
        """Run a queue script."""
        keys = self._queue(queue)
        return SCRIPTS[script](
            keys=keys.keys, args=[*keys.args, *args], client=client or self._redis()
        )

    def _run_store(self, script: str, keys: list[str], *args: Any) -> Any:
        """Run a store-wide script."""
        return SCRIPTS[script](keys=keys, args=list(args), client=self._redis())

    def _queues_of(self, job_ids: Iterable[str]) -> dict[str, list[str]]:
        """Group job ids by queue: this process's claims first, then the index."""
        groups, unknown = self._held.split(job_ids)
        if unknown:
            owners = self._redis().hmget(self.keys.index, unknown)
            for job_id, queue in zip(unknown, owners, strict=True):
                if queue is not None:
                    groups.setdefault(queue, []).append(job_id)
        return groups

    def _known_queues(self) -> list[str]:
        return sorted(self._redis().smembers(self.keys.queues))
