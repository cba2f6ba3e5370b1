"""Layer 2: the stores. `open_backend(url)` picks one by the URL's scheme."""

from __future__ import annotations

from ..model.errors import StoreError
from .base import Backend

DEFAULT_URL = "sqlite:///conveyor.db"
DEFAULT_CONNECT_TIMEOUT = 5.0


def open_backend(url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Backend:
    """Build (not yet open) the store for `url`, or raise StoreError saying what URLs work.

    `connect_timeout`: how long a call waits for a connection (a pooled one, or a new one
    while the store is unreachable) before it fails with a StoreError saying so.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite.backend import SQLiteBackend

        return SQLiteBackend(url, connect_timeout=connect_timeout)
    if scheme in ("postgres", "postgresql"):
        try:
            from .postgres.backend import PostgresBackend
        except ImportError:
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'conveyor[postgres]'"
            ) from None
        return PostgresBackend(url, connect_timeout=connect_timeout)
    if scheme in ("redis", "rediss"):
        try:
            from .redis.backend import RedisBackend
        except ImportError:
            raise StoreError(
                "the Redis store needs redis-py: pip install 'conveyor[redis]'"
            ) from None
        return RedisBackend(url, connect_timeout=connect_timeout)
    raise StoreError(
        f"unsupported store URL {url!r}; use sqlite:///path/to/file.db (relative) or "
        "sqlite:////absolute/path.db, postgresql://user@host/db or redis://host:6379/0"
    )
