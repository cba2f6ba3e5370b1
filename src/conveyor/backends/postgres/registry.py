"""Who is alive and who leads: the worker registry and leader leases, on the store's clock."""

from __future__ import annotations

from ..base import WorkerInfo
from ..rows import worker_info_json, workers_from_json
from .core import PostgresCore


class RegistryStatements(PostgresCore):
    # workers ------------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._q["worker_beat"],
                {"id": info.id, "info": worker_info_json(info), "ttl": ttl, "now": None},
            )

    def worker_list(self, now: float | None = None) -> list[WorkerInfo]:
        with self._tx() as cur:
            cur.execute(self._q["worker_list"], {"now": now})
            rows = cur.fetchall()
        return workers_from_json(r["info"] for r in rows)

    def worker_forget(self, worker_id: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["worker_forget"], {"id": worker_id})

    def worker_prune(self, now: float | None = None) -> int:
        with self._tx() as cur:
            cur.execute(self._q["worker_prune"], {"now": now})
            return cur.rowcount

    # leadership ---------------------------------------------------------------------------
    def leader_elect(self, name: str, holder: str, ttl: float) -> bool:
        """One upsert: taken if free or expired, renewed if `holder` has it, else no row."""
        with self._tx() as cur:
            cur.execute(
                self._q["leader_elect"], {"name": name, "holder": holder, "ttl": ttl, "now": None}
            )
            return cur.fetchone() is not None

    def leader_resign(self, name: str, holder: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["leader_resign"], {"name": name, "holder": holder})

    def leader_get(self, name: str) -> str | None:
        with self._tx() as cur:
            cur.execute(self._q["leader_get"], {"name": name, "now": None})
            row = cur.fetchone()
        return None if row is None else str(row["holder"])
