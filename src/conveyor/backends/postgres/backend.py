"""The PostgreSQL store: many worker machines share one database.

Claims take a batch in one statement with `FOR UPDATE SKIP LOCKED`; finished jobs move from
the hot `jobs` table to `jobs_done` in the same statement that finishes them, so the claim
path never walks history. Idle workers are woken by LISTEN/NOTIFY (`listener.py`).

The parts: `core.py` (statements, pools, transactions, migrations, fork safety), `pool.py`
(connections and their timeouts), `inserts.py` (bulk enqueue rows, shared by the blocking
and asyncio paths), `jobs.py` (the hot path), `admin.py` (reads and operator actions),
`registry.py` (worker registry and leader leases).
"""

from __future__ import annotations

from ..base import Capabilities
from .admin import AdminStatements
from .core import SCHEMA_VERSION
from .jobs import JobStatements
from .registry import RegistryStatements


class PostgresBackend(JobStatements, AdminStatements, RegistryStatements):
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=True, local_file=False
    )


__all__ = ["SCHEMA_VERSION", "PostgresBackend"]
