"""How the Redis store connects: timeouts, retries and the error a caller finally sees.

A call whose connection breaks (a server restart, a reset, a failover) is retried on a new
connection with capped backoff (50 ms doubling to 0.5 s), so the store is usable again within
about half a second of the server coming back. A call that still has no working connection
`connect_timeout` seconds after it started raises StoreUnavailable (a StoreError) naming the
store (password hidden) and that timeout, instead of hanging or leaking redis-py's errors.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ...model.errors import StoreUnavailable

T = TypeVar("T")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
"""Retry delays after a broken connection: 50 ms doubling, at most 0.5 s (recovery within
about that once the server is back)."""
MIN_REPLY_TIMEOUT = 10.0
"""A reply may take longer than a connect (a bulk insert of many jobs is one script): the
socket read timeout is connect_timeout, but at least this."""
WAITER_CONNECT_TIMEOUT = 1.0
"""At most this long for the wake-up subscriber to connect: it must not hold up a wait."""
HEALTH_CHECK_INTERVAL = 5
"""Seconds between PINGs on the idle wake-up subscription (a dead one is noticed)."""


def public_url(url: str) -> str:
    """The store URL as it may be shown: any password replaced by ***."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    user = parsed.username or ""
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


class DeadlineRetry(Retry):
    """redis-py's retry of broken connections, bounded by time instead of by count."""

    def __init__(self, timeout: float, url: str) -> None:
        super().__init__(
            ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
            retries=1_000_000,  # the deadline ends the retries (redis-py compares counts too)
            supported_errors=(redis.ConnectionError, redis.TimeoutError, socket.timeout),
        )
        self.timeout = timeout
        self.url = url

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.timeout
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                pause = self._backoff.compute(failures)
                if time.monotonic() + pause >= deadline:
                    raise StoreUnavailable(
                        f"cannot reach the Redis store at {public_url(self.url)} within "
                        f"{self.timeout:g} s (connect_timeout): {error}"
                    ) from error
                time.sleep(pause)


def _keepalive() -> dict[int, int]:
    """TCP keepalive probes after 10 s idle, so a half-open connection is found (Linux names;
    other systems keep their defaults)."""
    wanted = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, n): v for n, v in wanted.items() if hasattr(socket, n)}


def make_client(client_url: str, url: str, connect_timeout: float) -> Any:
    """The client for store calls (a pool shared by the process's threads)."""
    return redis.Redis.from_url(
        client_url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=max(connect_timeout, MIN_REPLY_TIMEOUT),
        socket_keepalive=True,
        socket_keepalive_options=_keepalive(),
        retry=DeadlineRetry(connect_timeout, url),
    )


def make_subscriber_client(client_url: str, connect_timeout: float) -> Any:
    """The client of the wake-up subscription: one quick attempt per wait (the waiter itself
    tries again on the next wait), and health checks while it idles."""
    return redis.Redis.from_url(
        client_url,
        decode_responses=True,
        socket_connect_timeout=min(connect_timeout, WAITER_CONNECT_TIMEOUT),
        socket_timeout=max(connect_timeout, MIN_REPLY_TIMEOUT),
        socket_keepalive=True,
        socket_keepalive_options=_keepalive(),
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), 0),
    )
