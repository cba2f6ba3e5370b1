"""Pub/sub wake-ups: one subscriber connection per store, used by the waiting thread.

Every script that makes a job due (insert, retry, release, rescue, resume) publishes the
queue's name on the store's channel inside the script, so a message arrives only once its
job is there. When the subscription is lost (a restart, a reset, health-check PINGs left
unanswered), a wait logs it once at WARNING, behaves like a poll that found nothing, and the
next wait subscribes again (logged once when it is back): the worker polls meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("conveyor.store")

UNANSWERED_PINGS = 2
"""Health-check PINGs without a reply after which the subscription counts as dead."""


class Waiter:
    def __init__(self, connect: Callable[[], Any], channel: str, where: str) -> None:
        """`connect()`: a new redis.Redis (decode_responses=True) for the subscription."""
        self._connect = connect
        self._channel = channel
        self._where = where
        self._client: Any = None
        self._pubsub: Any = None
        self._lock = threading.Lock()
        self._closing = False
        self._lost = False

    def _subscribed(self, deadline: float) -> Any:
        if self._pubsub is None:
            if self._client is None:
                self._client = self._connect()
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self._channel)
                # Wait for the confirmation: from then on no publish can be missed.
                while True:
                    message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
                    if message is not None and message["type"] == "subscribe":
                        break
                    if time.monotonic() >= deadline:
                        raise TimeoutError("no subscribe confirmation in time")
            except BaseException:
                _quietly_close(pubsub)
                raise
            self._pubsub = pubsub
            if self._lost:
                self._lost = False
                log.warning("wake-up subscription to Redis at %s restored", self._where)
        return self._pubsub

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a message names one of `queues` (True) or `timeout` passes."""
        wanted = set(queues)
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closing:  # the store was closed: behave like a poll that found nothing
                time.sleep(timeout)
                return False
            try:
                return self._receive(wanted, deadline)
            except Exception as exc:
                if self._closing:  # closed under us by close(): nothing to report
                    return False
                self._drop()
                if not self._lost:
                    self._lost = True
                    log.warning(
                        "lost the wake-up subscription to Redis at %s (%s); polling until "
                        "it is back",
                        self._where,
                        exc,
                    )
                time.sleep(max(deadline - time.monotonic(), 0.0))
                return False

    def _receive(self, wanted: set[str], deadline: float) -> bool:
        pubsub = self._subscribed(max(deadline, time.monotonic() + 1.0))
        woken = False
        while True:
            remaining = 0.0 if woken else deadline - time.monotonic()
            # (woken: drain what is already here, one claim serves them all)
            message = pubsub.get_message(timeout=max(remaining, 0.0))
            if getattr(pubsub, "health_check_response_counter", 0) > UNANSWERED_PINGS:
                raise ConnectionError("health-check PINGs went unanswered")
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
        client, self._client = self._client, None
        if client is not None:
            _quietly_close(client)

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            _quietly_close(pubsub)


def _quietly_close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        log.debug("closing a Redis connection failed", exc_info=True)
