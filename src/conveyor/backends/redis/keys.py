"""Key names of the Redis store, and its URL.

Every key of one queue carries the hash tag `{<prefix>:<queue>}`, so a script that changes
a queue touches one Redis Cluster slot. The store-wide keys (job id -> queue index, queue
names, schema version, the worker registry, leader leases) share the tag `{<prefix>}`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from ...model.errors import StoreError

DEFAULT_PREFIX = "conveyor"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The KEYS and leading ARGV every queue script takes (see scripts/includes/queue.lua)."""

    keys: list[str]
    args: list[str]

    def job(self, job_id: str) -> str:
        return self.args[0] + job_id


@dataclass(frozen=True, slots=True)
class StoreKeys:
    prefix: str

    @property
    def index(self) -> str:
        return "{" + self.prefix + "}:jobs"

    @property
    def queues(self) -> str:
        return "{" + self.prefix + "}:queues"

    @property
    def meta(self) -> str:
        return "{" + self.prefix + "}:meta"

    @property
    def workers(self) -> str:
        """Hash: worker id -> its registry entry (WorkerInfo as JSON)."""
        return "{" + self.prefix + "}:workers"

    @property
    def workers_expiry(self) -> str:
        """Sorted set: worker id scored by the time its entry expires."""
        return "{" + self.prefix + "}:workers_expiry"

    def leader(self, name: str) -> str:
        """String: the holder of the leader lease `name`, expiring with the lease."""
        return "{" + self.prefix + "}:leader:" + name

    @property
    def wake_channel(self) -> str:
        return self.prefix + ":wake"

    def queue(self, name: str) -> QueueKeys:
        tag = "{" + self.prefix + ":" + name + "}"
        kinds = ("ready", "scheduled", "active", "completed", "failed", "cancelled", "all")
        return QueueKeys(
            keys=[f"{tag}:{kind}" for kind in kinds] + [f"{tag}:unique", f"{tag}:meta"],
            args=[f"{tag}:job:", self.wake_channel, name],
        )


def split_url(url: str) -> tuple[str, str]:
    """(URL for redis-py without our own `prefix` parameter, key prefix)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise StoreError(
            f"bad Redis URL {url!r}; write redis://[:password@]host:6379/0 "
            "(rediss:// for TLS), optionally with ?prefix=name"
        )
    prefix = DEFAULT_PREFIX
    kept = []
    for name, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        else:
            kept.append((name, value))
    if not prefix or any(c in prefix for c in "{}:"):
        raise StoreError(
            f"bad prefix {prefix!r} in the Redis URL: use a non-empty name without braces or colons"
        )
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parsed._replace(query=query)), prefix
