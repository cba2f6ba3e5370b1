"""A server store that cannot be reached fails within `connect_timeout`, with an error that
names the server and the timeout and never shows the password (PostgreSQL and Redis)."""

from __future__ import annotations

import time

import pytest

from conveyor import StoreError
from conveyor.backends import open_backend
from conveyor.model.errors import StoreUnavailable


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://postgres:s3cret-pw@127.0.0.1:5999/test", "127.0.0.1:5999"),
        ("redis://:s3cret-pw@127.0.0.1:6399/0", "127.0.0.1:6399"),
    ],
    ids=["postgres", "redis"],
)
def test_an_unreachable_server_fails_within_the_connect_timeout_hiding_the_password(
    url: str, where: str
) -> None:
    store = open_backend(url, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreError) as refused:
        store.open()
    assert time.monotonic() - started < 0.5 + 2.0
    store.close()
    assert isinstance(refused.value, StoreUnavailable), "an outage is worth waiting for"
    message = str(refused.value)
    assert where in message
    assert "0.5" in message, f"the timeout is not named: {message}"
    assert "s3cret-pw" not in message
