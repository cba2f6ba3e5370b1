"""Pub/sub wake-ups: one subscriber connection per store, used by the waiting thread.

Every script that makes a job due (insert, retry, release, rescue, resume) publishes the
queue's name on the store's channel inside the script, so a message arrives only once its
job is there. If the connection drops, waiting raises (the worker backs off and polls), and
redis-py subscribes again on the next wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

log = logging.getLogger("conveyor.store")


class Waiter:
    def __init__(self, client: Any, channel: str) -> None:
        """`client`: a redis.Redis with decode_responses=True."""
        self._client = client
        self._channel = channel
        self._pubsub: Any = None
        self._lock = threading.Lock()
        self._closing = False

    def _subscribed(self) -> Any:
        if self._pubsub is None:
            pubsub = self._client.pubsub()
            pubsub.subscribe(self._channel)
            # Wait for the confirmation: from then on no publish can be missed.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message["type"] == "subscribe":
                    break
            self._pubsub = pubsub
        return self._pubsub

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a message names one of `queues` (True) or `timeout` passes."""
        wanted = set(queues)
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closing:  # the store was closed: behave like a poll that found nothing
                time.sleep(timeout)
                return False
            pubsub = self._subscribed()
            woken = False
            while True:
                remaining = deadline - time.monotonic()
                if woken:
                    remaining = 0.0  # drain what is already here: one claim serves them all
                try:
                    message = pubsub.get_message(timeout=max(remaining, 0.0))
                except Exception:
                    if self._closing:  # closed under us by close(): nothing to report
                        return False
                    # The subscription died (server restart, failover): start afresh on the
                    # next wait, and say the caller may have missed a wake-up.
                    self._drop()
                    raise
                if message is None:
                    if woken or remaining <= 0:
                        return woken
                    continue
                if message["type"] == "message" and message["data"] in wanted:
                    woken = True

    def close(self) -> None:
        """Close the subscription, also under a thread that is waiting on it (it returns)."""
        self._closing = True
        self._drop()

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                log.debug("closing the wake-up subscription failed", exc_info=True)
