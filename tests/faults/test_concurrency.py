"""Four real worker processes share one store and drain 20,000 jobs: each job runs exactly
once; with a worker SIGKILLed mid-run, nothing is lost and only its interrupted jobs run
again (attempt 2, "worker lost")."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import JobListParams
from conveyor.model.job import JobRecord
from engine.helpers import wait_until

from .helpers import Fixture, kill_all, wait_for_exit

TOTAL = 20_000
CHUNK = 1_000
WORKERS = 4
CONCURRENCY = 50
DRAIN_TIMEOUT = 90.0

pytestmark = pytest.mark.timeout(180)  # above the drain bound, so that bound reports

APP_MODULE = '''
import asyncio
import os

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(
        lease_seconds=float(os.environ.get("FAULT_LEASE", {lease!r})),
        rescue_interval={rescue!r},
        poll_interval=0.2,
        grace_period=5.0,
    ),
)
_fd = None


@app.task
async def tick(n: int) -> int:
    """Appends "job_id attempt pid" to this process's own log, in one write."""
    global _fd
    if _fd is None:
        path = f"{{os.environ['FAULT_LOG']}}.{{os.getpid()}}"
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ctx = current_job()
    os.write(_fd, f"{{ctx.id}} {{ctx.attempt}} {{os.getpid()}}\\n".encode())
    if {nap!r}:
        await asyncio.sleep({nap!r})
    return n
'''


class ManyWorkers(Fixture):
    """Worker processes on one app module, each logging its executions to its own file."""

    lease: float = 10.0
    """Long by default: on a busy machine a late heartbeat may (rightly) cost a 1 s lease and
    run its job again, which would fail an exactly-once check for the wrong reason."""
    rescue: float = 5.0
    nap: float = 0.0
    """How long each job stays active after it logged its run."""

    def write_app(self) -> None:
        source = APP_MODULE.format(url=self.url, lease=self.lease, rescue=self.rescue, nap=self.nap)
        (self.tmp_path / "app_mod.py").write_text(source)

    def start(  # type: ignore[override]
        self, name: str, concurrency: int, lease: float | None = None
    ) -> subprocess.Popen:
        """A worker process; `lease` overrides the app's lease_seconds for this one."""
        extra = {} if lease is None else {"FAULT_LEASE": str(lease)}
        with mock.patch.dict(os.environ, extra):  # the child's environment is copied at spawn
            return super().start(name, concurrency)

    def check_logs(self, procs: list) -> None:
        """A healthy run logs no errors (no deadlocks, no failed writes)."""
        outputs = {f"worker-{i}": self.output(f"worker-{i}") for i in range(len(procs))}
        errors = [
            f"{name}: {line}"
            for name, text in outputs.items()
            for line in text.splitlines()
            if " ERROR " in line or " CRITICAL " in line
        ]
        assert not errors, "\n".join(errors[:10])

    def executions(self) -> dict[str, list[tuple[int, int]]]:
        """job id -> [(attempt, pid), ...] over the logs of all processes, by attempt."""
        runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for path in self.tmp_path.glob(f"{self.log_path.name}.*"):
            for line in path.read_text().splitlines():
                job_id, attempt, pid = line.split()
                runs[job_id].append((int(attempt), int(pid)))
        for job_runs in runs.values():
            job_runs.sort()
        return runs


@pytest.fixture
def workers(tmp_path: Path, store_url: str) -> Iterator[tuple[ManyWorkers, list]]:
    fx = ManyWorkers(tmp_path, store_url, grace=5.0)
    procs: list = []
    yield fx, procs
    kill_all(*procs)


def enqueue_all(app: Conveyor) -> set[str]:
    ids: set[str] = set()
    for start in range(0, TOTAL, CHUNK):
        batch = [app.prepare("tick", {"n": n}) for n in range(start, start + CHUNK)]
        ids.update(job.id for job in app.enqueue_many(batch))
    assert len(ids) == TOTAL
    return ids


def counts(app: Conveyor) -> dict[str, int]:
    [stats] = app.queue_stats("default")
    return {state: n for state, n in stats.counts.items() if n}


def all_records(app: Conveyor, state: JobState | None = None) -> dict[str, JobRecord]:
    """Every job (in `state`), page by page."""
    records: dict[str, JobRecord] = {}
    before: str | None = None
    while True:
        page = app.backend.job_list(JobListParams(state=state, limit=2_000, before_id=before))
        if not page:
            return records
        records.update((r.id, r) for r in page)
        before = page[-1].id


def check_alive(fx: ManyWorkers, procs: list, dead: object = None) -> None:
    for i, proc in enumerate(procs):
        if proc is not dead and proc.poll() is not None:
            raise AssertionError(f"worker-{i} exited early:\n{fx.output(f'worker-{i}')}")


def wait_drained(app: Conveyor, fx: ManyWorkers, procs: list, dead: object = None) -> None:
    def done() -> bool:
        check_alive(fx, procs, dead)
        return counts(app).get("completed", 0) == TOTAL

    wait_until(done, DRAIN_TIMEOUT, interval=0.2, what=f"all {TOTAL} jobs completed")


def stop_all(fx: ManyWorkers, procs: list) -> None:
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    for proc in live:
        assert wait_for_exit(proc, 15) == 0, fx.output(f"worker-{procs.index(proc)}")


def is_stopped(pid: int) -> bool:
    """True once the process is stopped (SIGSTOP), per /proc (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        time.sleep(0.1)  # no /proc: give the signal a moment
        return True
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


def worker_pid(record: JobRecord) -> int:
    """The pid in a default worker id, "host:pid:suffix"."""
    assert record.worker_id is not None
    return int(record.worker_id.rsplit(":", 2)[1])


def test_four_workers_run_every_job_exactly_once(workers, make_app):
    fx, procs = workers
    fx.write_app()
    app = make_app()
    started = time.monotonic()
    procs += [fx.start(f"worker-{i}", concurrency=CONCURRENCY) for i in range(WORKERS)]
    ids = enqueue_all(app)  # while the workers start and claim: inserts race with claims
    wait_drained(app, fx, procs)
    stop_all(fx, procs)
    print(f"drained {TOTAL} jobs in {time.monotonic() - started:.1f} s")

    assert counts(app) == {"completed": TOTAL}
    runs = fx.executions()
    assert set(runs) == ids, "some job never ran"
    twice = {i: r for i, r in runs.items() if len(r) != 1}
    assert not twice, f"{len(twice)} jobs ran more than once, e.g. {next(iter(twice.items()))}"
    assert {attempt for r in runs.values() for attempt, _ in r} == {1}
    pids = {pid for r in runs.values() for _, pid in r}
    assert pids <= {p.pid for p in procs}
    assert len(pids) > 1, "one worker did everything: the test did not exercise concurrency"
    records = all_records(app)
    assert set(records) == ids
    assert all(r.state is JobState.COMPLETED and r.attempt == 1 for r in records.values())
    assert all(r.result == r.data["n"] and r.errors == () for r in records.values())
    fx.check_logs(procs)


def test_sigkilled_worker_loses_nothing_and_only_its_jobs_run_again(workers, make_app):
    fx, procs = workers
    fx.lease, fx.rescue = 1.0, 0.3
    fx.nap = 0.02  # each worker holds running jobs at any moment, so the kill interrupts some
    fx.write_app()
    app = make_app()
    ids = enqueue_all(app)
    # worker-0, the one killed, has the app's 1 s lease: its jobs come back within ~1.3 s. The
    # others hold 5 s leases, so that on a loaded machine a late heartbeat cannot (rightly)
    # cost a live worker its jobs and blur "only the killed worker's jobs run again".
    procs += [
        fx.start(f"worker-{i}", concurrency=CONCURRENCY, lease=None if i == 0 else 5.0)
        for i in range(WORKERS)
    ]

    def a_third_done() -> bool:
        check_alive(fx, procs)
        return counts(app).get("completed", 0) >= TOTAL // 3

    wait_until(a_third_done, DRAIN_TIMEOUT, what="a third of the jobs completed")
    victim = procs[0]

    def frozen_holding_jobs() -> dict[str, JobRecord] | None:
        """Stop the victim; if the store shows it holding a job whose handler has started
        there, leave it stopped (a claimed job may not have started yet: a kill then
        interrupts nothing that ran)."""
        victim.send_signal(signal.SIGSTOP)
        wait_until(lambda: is_stopped(victim.pid), 5, what="the victim stopped")
        # more than concurrency each: finished jobs stay active until their outcome is written
        active = all_records(app, JobState.ACTIVE)
        held = {i for i, r in active.items() if worker_pid(r) == victim.pid}
        started_there = {
            i for i, runs in fx.executions().items() if any(pid == victim.pid for _, pid in runs)
        }
        if held & started_there:
            return active
        victim.send_signal(signal.SIGCONT)
        return None

    # Between two claims a worker may hold nothing; stopped, it can neither finish nor claim,
    # so what the store shows is exactly what the kill interrupts.
    active = wait_until(frozen_holding_jobs, 10, interval=0.02, what="the victim holding jobs")
    victim.kill()
    wait_for_exit(victim, 10)
    lost = {i for i, r in active.items() if worker_pid(r) == victim.pid}
    assert lost, "the killed worker held no job"
    assert counts(app).get("completed", 0) < TOTAL

    # the other three rescue its jobs and finish the rest
    wait_drained(app, fx, procs, dead=victim)
    stop_all(fx, procs)

    assert counts(app) == {"completed": TOTAL}
    records = all_records(app)
    assert set(records) == ids
    assert all(r.state is JobState.COMPLETED for r in records.values())
    runs = fx.executions()
    assert set(runs) == ids, "some job never ran"

    def explain(what: str, job_ids: set[str]) -> str:
        shown = sorted(job_ids)[:5]
        lines = [f"{len(job_ids)} {what}; victim pid {victim.pid}; e.g."]
        for i in shown:
            r, at_kill = records[i], active.get(i)
            was = None if at_kill is None else (at_kill.attempt, at_kill.worker_id)
            lines.append(
                f"  {i}: {r.state.value} attempt {r.attempt} by {r.worker_id}, errors "
                f"{[(e.attempt, e.error) for e in r.errors]}, runs {runs.get(i)}, at kill {was}"
            )
        return "\n".join(lines)

    interrupted = {i for i, r in records.items() if r.attempt > 1}
    assert lost <= interrupted, explain("jobs of the killed worker not rescued", lost - interrupted)
    extra = interrupted - lost
    assert not extra, explain("jobs the killed worker did not hold ran again", extra)
    ran_twice = {i for i, r in runs.items() if len(r) > 1}
    assert ran_twice, "none of the killed worker's jobs had started before the kill"
    same_attempt = ran_twice - interrupted
    assert not same_attempt, explain("jobs ran twice on one attempt", same_attempt)
    for job_id in interrupted:
        record = records[job_id]
        assert record.attempt == 2, record
        assert [e.attempt for e in record.errors] == [1], record
        assert "worker lost" in record.errors[0].error
        assert [a for a, _ in runs[job_id]] in ([1, 2], [2]), runs[job_id]
        assert runs[job_id][-1][1] != victim.pid
        if len(runs[job_id]) == 2:
            assert runs[job_id][0][1] == victim.pid, runs[job_id]
    for job_id in ids - interrupted:
        assert records[job_id].attempt == 1 and records[job_id].errors == ()
        assert [a for a, _ in runs[job_id]] == [1], runs[job_id]
    fx.check_logs(procs)
