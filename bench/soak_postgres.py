"""Ten-minute soak on PostgreSQL: does the hot table stay small and the claim stay fast?

Two `conveyor worker` processes drain no-op jobs enqueued at a steady rate; every 30 s the
script records the size and dead tuples of `jobs` and `jobs_done`, and times a probe claim.

    python bench/soak_postgres.py --minutes 10 --rate 1000 > bench/results/soak.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid

import psycopg
from psycopg import sql

from conveyor.backends.base import ClaimParams, Outcome
from conveyor.bench.noop_app import BENCH_QUEUE, app, noop

BASE = "postgresql://postgres@127.0.0.1:5432/test"
SIZES = """
SELECT s.relname, pg_total_relation_size(c.oid) AS bytes, n_live_tup, n_dead_tup
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE s.schemaname = %s AND s.relname IN ('jobs', 'jobs_done')
"""


def probe_claim(store: object) -> float:
    """Milliseconds for one claim of 10 jobs (acknowledged at once, as a worker would)."""
    start = time.perf_counter()
    jobs = store.job_claim(  # type: ignore[attr-defined]
        ClaimParams((BENCH_QUEUE,), 10, "soak-probe", 30.0, time.time())
    )
    elapsed = (time.perf_counter() - start) * 1000
    store.job_complete_many(  # type: ignore[attr-defined]
        [Outcome(j.id, j.queue, j.attempt, "soak-probe", "completed", time.time()) for j in jobs]
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="jobs enqueued per second")
    args = parser.parse_args()
    schema = f"soak_{uuid.uuid4().hex[:8]}"
    url = f"{BASE}?schema={schema}"
    app.use_url(url)
    store = app.backend
    command = [sys.executable, "-m", "conveyor", "--url", url, "worker",
               "conveyor.bench.noop_app:app", "-q", BENCH_QUEUE, "-c", "50"]
    workers = [subprocess.Popen(command, stderr=subprocess.DEVNULL) for _ in range(2)]
    stats = psycopg.connect(BASE, autocommit=True)
    end = time.monotonic() + args.minutes * 60
    next_sample = time.monotonic()
    enqueued = 0
    probes: list[float] = []
    try:
        while time.monotonic() < end:
            tick = time.monotonic()
            app.enqueue_many([noop.prepare() for _ in range(args.rate // 10)])
            enqueued += args.rate // 10
            probes.append(probe_claim(store))
            if tick >= next_sample:
                stats.execute(sql.SQL("ANALYZE {}.jobs").format(sql.Identifier(schema)))
                rows = {r[0]: r[1:] for r in stats.execute(SIZES, (schema,)).fetchall()}
                print(json.dumps({
                    "t_s": round(args.minutes * 60 - (end - tick)),
                    "enqueued": enqueued,
                    "jobs_bytes": rows.get("jobs", (0, 0, 0))[0],
                    "jobs_live": rows.get("jobs", (0, 0, 0))[1],
                    "jobs_dead": rows.get("jobs", (0, 0, 0))[2],
                    "done_bytes": rows.get("jobs_done", (0, 0, 0))[0],
                    "claim_ms_p50": round(statistics.median(probes), 3),
                    "claim_ms_max": round(max(probes), 3),
                }), flush=True)
                probes.clear()
                next_sample += 30
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=60)
        app.close()
        stats.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        stats.close()


if __name__ == "__main__":
    main()
