"""Fault injection under a supervisor, on every store: SIGKILL children and the supervisor.

A supervisor (`conveyor worker -p 2`) works a steady stream of short jobs while a seeded
chaos loop SIGKILLs a random child now and then, and once in a while the supervisor itself
(a new one is started at once, as systemd would). At the end every job must have completed,
with its result; no job ran more often than the attempts the store counted (a crash costs
one attempt, recorded as "worker lost"); and the store's counts match what the handlers
wrote. Each run takes about 20 s.

Replay a failure with the seed it prints: CONVEYOR_FAULT_SEED=<seed> pytest <this file>.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import JobListParams

SEED = int(os.environ.get("CONVEYOR_FAULT_SEED", "20261128"))
JOBS = 400
LOAD_SECONDS = 10.0
CHAOS_SECONDS = 10.0
WORKER = [sys.executable, "-m", "conveyor"]
MAX_ATTEMPTS = 25
"""Far more than the kills of one run can cost a job: every job must complete."""

APP_MODULE = '''
import os
import time

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(lease_seconds=2.0, rescue_interval=0.5, poll_interval=0.2, grace_period=3.0),
)
LOG = {log!r}


def _write(event):
    """One line per event, "event job_id attempt pid", appended with a single write."""
    ctx = current_job()
    line = f"{{event}} {{ctx.id}} {{ctx.attempt}} {{os.getpid()}}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task(max_attempts={max_attempts})
def work(n: int, nap: float) -> int:
    _write("start")
    time.sleep(nap)
    _write("done")
    return n
'''


class Chaos:
    """The supervisor generations and what was done to them, for the failure message."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.rng = random.Random(SEED)
        self.actions: list[str] = []
        self.generation = 0
        self.supervisor = self.start_supervisor()
        self.dead: list[subprocess.Popen[bytes]] = []

    def start_supervisor(self) -> subprocess.Popen[bytes]:
        self.generation += 1
        out = open(self.tmp_path / f"supervisor-{self.generation}.out", "wb")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [*WORKER, "--url", self.url, "worker", "app_mod:app", "-p", "2", "-c", "5"],
                cwd=self.tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.supervisor.pid).children()
        except psutil.NoSuchProcess:
            return []

    def strike(self, elapsed: float) -> None:
        if self.rng.random() < 0.2:
            self.actions.append(f"{elapsed:5.1f}s SIGKILL supervisor {self.supervisor.pid}")
            self.supervisor.send_signal(signal.SIGKILL)
            self.supervisor.wait(timeout=10)
            self.dead.append(self.supervisor)
            self.supervisor = self.start_supervisor()
            return
        children = self.children()
        if not children:
            self.actions.append(f"{elapsed:5.1f}s no child to kill")
            return
        victim = self.rng.choice(children)
        self.actions.append(f"{elapsed:5.1f}s SIGKILL child {victim.pid}")
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            self.actions.append("        (it had exited already)")

    def run(self, stop: threading.Event) -> None:
        started = time.monotonic()
        while not stop.wait(self.rng.uniform(0.6, 1.4)):
            elapsed = time.monotonic() - started
            if elapsed > CHAOS_SECONDS:
                return
            self.strike(elapsed)

    def outputs(self) -> str:
        return "\n".join(
            f"--- supervisor {n} ---\n"
            + (self.tmp_path / f"supervisor-{n}.out").read_text(errors="replace")[-3000:]
            for n in range(1, self.generation + 1)
        )

    def report(self) -> str:
        return f"seed {SEED} (CONVEYOR_FAULT_SEED to replay); actions:\n" + "\n".join(self.actions)


@pytest.fixture
def chaos(tmp_path: Path, store_url: str) -> Iterator[Chaos]:
    log = tmp_path / "events.log"
    (tmp_path / "app_mod.py").write_text(
        APP_MODULE.format(url=store_url, log=str(log), max_attempts=MAX_ATTEMPTS)
    )
    Conveyor(store_url).close()  # create the schema before the processes race to
    fx = Chaos(tmp_path, store_url)
    yield fx
    for proc in [fx.supervisor, *fx.dead]:
        for child in psutil.Process(proc.pid).children() if proc.poll() is None else []:
            child.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for stray in _strays(tmp_path):  # children of a killed supervisor that outlived it
        stray.kill()


def _strays(tmp_path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            mine = proc.info["cwd"] == str(tmp_path)
            if mine and "app_mod:app" in (proc.info["cmdline"] or []) and proc.status() != "zombie":
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _events(log: Path) -> dict[str, dict[str, list[int]]]:
    """job id -> {"start": [attempts], "done": [attempts]}."""
    events: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"start": [], "done": []})
    for line in log.read_text().splitlines():
        event, job_id, attempt, _pid = line.split()
        events[job_id][event].append(int(attempt))
    return events


def _counts(app: Conveyor) -> dict[str, int]:
    stats = app.queue_stats("default")
    return stats[0].counts if stats else {}


def test_killing_children_and_supervisors_loses_no_job_and_runs_none_too_often(
    chaos: Chaos, tmp_path: Path
) -> None:
    load_rng = random.Random(SEED + 1)
    app = Conveyor(chaos.url)
    stop = threading.Event()
    striker = threading.Thread(target=chaos.run, args=(stop,), daemon=True)
    expected: dict[str, int] = {}
    try:
        striker.start()
        began = time.monotonic()
        for i in range(JOBS):  # a steady stream over LOAD_SECONDS
            pause = began + i * LOAD_SECONDS / JOBS - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            job = app.enqueue("work", {"n": i, "nap": load_rng.uniform(0.005, 0.05)})
            expected[job.id] = i
        striker.join(CHAOS_SECONDS + 5)
        stop.set()

        deadline = time.monotonic() + 45
        while _counts(app).get("completed", 0) < JOBS:
            assert chaos.supervisor.poll() is None, (
                f"the supervisor exited\n{chaos.report()}\n{chaos.outputs()}"
            )
            assert time.monotonic() < deadline, (
                f"not every job completed within 45 s: {_counts(app)}\n{chaos.report()}\n"
                f"{chaos.outputs()}"
            )
            time.sleep(0.2)

        chaos.supervisor.send_signal(signal.SIGTERM)
        assert chaos.supervisor.wait(timeout=20) == 0, chaos.outputs()

        records = {r.id: r for r in app.backend.job_list(JobListParams(limit=JOBS + 10))}
        events = _events(tmp_path / "events.log")
    finally:
        stop.set()
        app.close()

    context = chaos.report()
    assert set(records) == set(expected), context
    counts = defaultdict(int)
    for record in records.values():
        counts[record.state] += 1
    assert counts == {JobState.COMPLETED: JOBS}, context
    for job_id, record in records.items():
        runs = events[job_id]
        assert record.result == expected[job_id], context
        # Every start of a handler was an attempt the store counted (none ran uncounted) ...
        assert len(runs["start"]) <= record.attempt <= MAX_ATTEMPTS, (job_id, runs, context)
        # ... the stored outcome is that of the last attempt that finished ...
        assert runs["done"] and max(runs["done"]) == record.attempt, (job_id, runs, context)
        # ... and each earlier attempt ended with a recorded "worker lost".
        assert len(record.errors) == record.attempt - 1, (job_id, record.errors, context)
        assert all("worker lost" in e.error for e in record.errors), (job_id, context)
    # what the handlers recorded matches the store: one completion counted per job
    assert {job_id for job_id, runs in events.items() if runs["done"]} == set(expected)
    print(context)  # shown with -s, and kept in the report of a failing run
    kills = [a for a in chaos.actions if "SIGKILL" in a]
    assert kills, f"the chaos loop killed nothing: {context}"
    # children of the killed supervisors noticed and exited by themselves
    deadline = time.monotonic() + 10
    while _strays(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _strays(tmp_path), context
