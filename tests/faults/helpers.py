"""Real worker processes for fault tests: an app module in tmp_path, the `conveyor worker`
command, bounded waits, and the execution log the tasks append to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from conveyor import Conveyor, StoreError

APP_MODULE = '''
import asyncio
import os
import time

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(
        lease_seconds=1.0,
        rescue_interval=0.3,
        poll_interval=0.2,
        grace_period=float(os.environ.get("FAULT_GRACE", "5")),
    ),
)
LOG = os.environ["FAULT_LOG"]


def _record():
    """One line per execution, "job_id attempt pid", appended with a single write."""
    ctx = current_job()
    line = f"{{ctx.id}} {{ctx.attempt}} {{os.getpid()}}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task
def work(n: int) -> int:
    _record()
    time.sleep(0.05)
    return n


@app.task
async def nap(seconds: float) -> float:
    _record()
    await asyncio.sleep(seconds)
    return seconds


@app.task
def block(seconds: float) -> float:
    _record()
    time.sleep(seconds)
    return seconds
'''


@dataclass
class Fixture:
    """One test's worker setup: where the app module and execution log live."""

    tmp_path: Path
    url: str
    grace: float

    @property
    def log_path(self) -> Path:
        return self.tmp_path / "executions.log"

    def write_app(self) -> None:
        (self.tmp_path / "app_mod.py").write_text(APP_MODULE.format(url=self.url))

    def command(self, concurrency: int = 20, burst: bool = False) -> list[str]:
        """The real `conveyor worker` on the app module."""
        cmd = [sys.executable, "-m", "conveyor", "--url", self.url, "worker", "app_mod:app"]
        cmd += ["-c", str(concurrency)]
        return [*cmd, "--burst"] if burst else cmd

    def start(self, name: str, concurrency: int = 20, burst: bool = False) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop("CONVEYOR_URL", None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.tmp_path), env.get("PYTHONPATH", "")) if p
        )
        env["FAULT_LOG"] = str(self.log_path)
        env["FAULT_GRACE"] = str(self.grace)
        out = open(self.tmp_path / f"{name}.out", "wb")  # noqa: SIM115 -- lives with the process
        try:
            return subprocess.Popen(
                self.command(concurrency, burst),
                cwd=self.tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()

    def output(self, name: str) -> str:
        path = self.tmp_path / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def executions(self) -> dict[str, list[tuple[int, int]]]:
        """job id -> [(attempt, pid), ...] in execution order."""
        runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        if not self.log_path.exists():
            return runs
        for line in self.log_path.read_text().splitlines():
            job_id, attempt, pid = line.split()
            runs[job_id].append((int(attempt), int(pid)))
        return runs


def wait_for_exit(proc: subprocess.Popen, timeout: float) -> int:
    """The process's exit code; fails (the finally block kills it) if it runs too long."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process {proc.pid} still running after {timeout} s") from None


def kill_all(*procs: subprocess.Popen | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


OUTAGE_APP_MODULE = """
import os
import time

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(
        lease_seconds={lease}, rescue_interval={rescue}, poll_interval=0.5, grace_period=5.0
    ),
)
LOG = os.environ["FAULT_LOG"]


@app.task
def work(n: int) -> int:
    ctx = current_job()
    line = f"{{ctx.id}} {{ctx.attempt}} {{os.getpid()}}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(0.005)
    return n
"""
"""The app of the store-outage tests: short jobs that log each run (`lease`, `rescue`: s)."""


def default_queue_counts(app: Conveyor) -> dict[str, int]:
    [stats] = app.queue_stats("default")
    return stats.counts


def fresh_counts(url: str, store_errors: tuple[type[BaseException], ...]) -> dict[str, int] | None:
    """Counts read on a fresh connection, or None while the server is not back yet
    (`store_errors`: the driver's errors that mean so)."""
    app = Conveyor(url, migrate=False)
    try:
        return default_queue_counts(app)
    except (StoreError, *store_errors):
        return None
    finally:
        app.close()
