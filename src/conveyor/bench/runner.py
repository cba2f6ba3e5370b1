"""`conveyor bench`: enqueue, bulk enqueue, drain and latency, measured against a real store.

Workers run as separate processes (the real `conveyor worker`), started on a paused queue and
released at once, so that process start-up is not counted as drain time.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO

from ..app import Conveyor
from ..model.states import JobState
from .noop_app import BENCH_QUEUE, noop

Progress = Callable[[str, int, int], None]
"""(phase, done, total): called as each phase advances."""

WORKER_START_SECONDS = 1.5
_LOGS: dict[int, IO[bytes]] = {}
"""stderr of each running bench worker, shown if it dies."""


@dataclass
class BenchResult:
    store: str
    n: int
    enqueue_per_s: float
    bulk_enqueue_per_s: float
    drain_per_s: float
    drain_processes: int
    drain_concurrency: int
    drain_supervised: bool
    lat_rate_per_s: float
    lat_seconds: float
    lat_p50_ms: float
    lat_p95_ms: float
    lat_p99_ms: float
    worker_rss_mb: float
    cpus: int
    python: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_bench(
    url: str,
    n: int,
    seconds: float,
    rate: float,
    processes: int,
    concurrency: int,
    progress: Progress,
    supervised: bool = False,
) -> BenchResult:
    app = Conveyor(url)
    noop.app.use_url(url)
    try:
        enqueue_rate = _enqueue_one_by_one(n, progress)
        bulk_rate = _enqueue_bulk(app, n, progress)
        drain_rate, drain_rss = _drain(
            app, url, 2 * n, processes, concurrency, progress, supervised
        )
        latencies, lat_rss = _latency(app, url, rate, seconds, progress)
    finally:
        noop.app.close()
        app.close()
    return BenchResult(
        store=url.split(":", 1)[0],
        n=n,
        enqueue_per_s=enqueue_rate,
        bulk_enqueue_per_s=bulk_rate,
        drain_per_s=drain_rate,
        drain_processes=processes,
        drain_concurrency=concurrency,
        drain_supervised=supervised,
        lat_rate_per_s=rate,
        lat_seconds=seconds,
        lat_p50_ms=_percentile(latencies, 50),
        lat_p95_ms=_percentile(latencies, 95),
        lat_p99_ms=_percentile(latencies, 99),
        worker_rss_mb=max(drain_rss, lat_rss),
        cpus=os.cpu_count() or 1,
        python=platform.python_version(),
    )


def _enqueue_one_by_one(n: int, progress: Progress) -> float:
    started = time.perf_counter()
    for i in range(n):
        noop.enqueue()
        if i % 250 == 0:
            progress("enqueue", i, n)
    elapsed = time.perf_counter() - started
    progress("enqueue", n, n)
    return n / elapsed


def _enqueue_bulk(app: Conveyor, n: int, progress: Progress, chunk: int = 1000) -> float:
    started = time.perf_counter()
    done = 0
    while done < n:
        size = min(chunk, n - done)
        app.enqueue_many([noop.prepare() for _ in range(size)])
        done += size
        progress("bulk", done, n)
    return n / (time.perf_counter() - started)


def _drain(
    app: Conveyor,
    url: str,
    total: int,
    processes: int,
    concurrency: int,
    progress: Progress,
    supervised: bool,
) -> tuple[float, float]:
    """Start workers on the paused queue, resume it, and time until every job completed.

    `supervised`: one `conveyor worker -p N` supervisor instead of N separate processes.
    """
    app.pause_queue(BENCH_QUEUE)
    done_before = _count(app, JobState.COMPLETED)  # a store reused by an earlier run
    with _workers(url, processes, concurrency, supervised) as procs:
        time.sleep(WORKER_START_SECONDS)
        _check_alive(procs)
        started = time.perf_counter()
        app.resume_queue(BENCH_QUEUE)
        while True:
            completed = _count(app, JobState.COMPLETED) - done_before
            progress("drain", completed, total)
            if completed >= total:
                break
            _check_alive(procs)
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        rss = max(_peak_rss_mb(pid) for pid in _worker_pids(procs))
    return total / elapsed, rss


def _latency(
    app: Conveyor, url: str, rate: float, seconds: float, progress: Progress
) -> tuple[list[float], float]:
    """Enqueue at a steady rate to one idle worker; latency = claim time - enqueue time."""
    total = int(rate * seconds)
    ids: list[str] = []
    done_before = _count(app, JobState.COMPLETED)
    with _workers(url, 1, 10) as procs:
        time.sleep(WORKER_START_SECONDS)
        _check_alive(procs)
        begin = time.perf_counter()
        for i in range(total):
            target = begin + i / rate
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            ids.append(noop.enqueue().id)
            if i % 20 == 0:
                progress("latency", i, total)
        deadline = time.monotonic() + 30
        while _count(app, JobState.COMPLETED) < done_before + total:
            if time.monotonic() > deadline:
                raise RuntimeError("the latency worker did not finish its jobs within 30 s")
            _check_alive(procs)
            time.sleep(0.05)
        rss = _peak_rss_mb(procs[0].pid)
    progress("latency", total, total)
    latencies = []
    for job_id in ids:
        record = app.backend.job_get(job_id)
        if record is not None and record.started_at is not None:
            latencies.append((record.started_at - record.enqueued_at) * 1000)
    return latencies, rss


def _count(app: Conveyor, state: JobState) -> int:
    stats = app.queue_stats(BENCH_QUEUE)
    return stats[0].counts.get(state.value, 0) if stats else 0


@contextmanager
def _workers(
    url: str, processes: int, concurrency: int, supervised: bool = False
) -> Iterator[list[subprocess.Popen[bytes]]]:
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "--url",
        url,
        "worker",
        "conveyor.bench.noop_app:app",
        "-q",
        BENCH_QUEUE,
        "-c",
        str(concurrency),
    ]
    if supervised:
        command += ["-p", str(processes)]
    starts = 1 if supervised else processes
    logs = [tempfile.TemporaryFile() for _ in range(starts)]  # noqa: SIM115 - closed below
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log) for log in logs]
    for proc, log in zip(procs, logs, strict=True):
        _LOGS[proc.pid] = log
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _LOGS.pop(proc.pid).close()


def _worker_pids(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """The processes that run jobs: the workers, or a supervisor's children."""
    import psutil

    pids = []
    for proc in procs:
        children = psutil.Process(proc.pid).children()
        pids += [child.pid for child in children] or [proc.pid]
    return pids


def _check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            log = _LOGS[proc.pid]
            log.seek(0)
            err = log.read().decode(errors="replace")
            last = err.strip().splitlines()[-1] if err.strip() else "no output"
            raise RuntimeError(f"a bench worker exited with code {proc.returncode}: {last}")


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a worker process, in MB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]
