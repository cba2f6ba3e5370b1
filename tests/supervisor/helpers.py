"""Real `conveyor worker -p N` supervisors for the supervisor tests: an app module in
tmp_path, the supervisor's combined log (its own lines and its children's), the execution
log the tasks append to, bounded waits, and a clean-up that leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from conveyor import Conveyor, JobState
from conveyor.backends.base import JobListParams
from conveyor.model.job import JobRecord
from engine.helpers import wait_until

APP_MODULE = '''
import asyncio
import os
import time

from conveyor import Conveyor, Settings, current_job

app = Conveyor(
    {url!r},
    settings=Settings(
        lease_seconds=float(os.environ.get("SV_LEASE", "30")),
        rescue_interval=float(os.environ.get("SV_RESCUE", "0.5")),
        poll_interval=0.2,
        grace_period=float(os.environ.get("SV_GRACE", "5")),
    ),
)
LOG = os.environ["SV_LOG"]
_LEAKED = []


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
def where(seconds: float = 0.05) -> int:
    _record()
    time.sleep(seconds)
    return os.getpid()


@app.task
async def awhere(seconds: float = 0.05) -> int:
    _record()
    await asyncio.sleep(seconds)
    return os.getpid()


@app.task
def crunch(n: int) -> int:
    """CPU-bound: holds the GIL of its own process."""
    _record()
    total = 0
    for i in range(n):
        total += i * i
    return os.getpid()


@app.task
async def nap(seconds: float) -> int:
    _record()
    await asyncio.sleep(seconds)
    return os.getpid()


@app.task
def block(seconds: float) -> int:
    _record()
    time.sleep(seconds)
    return os.getpid()


@app.task(timeout=1, max_attempts=2, backoff=3)
def stuck(first: float) -> None:
    """Attempt 1 blocks where no cancellation check can reach it; later attempts check."""
    _record()
    if current_job().attempt == 1:
        time.sleep(first)
        return
    while True:
        time.sleep(0.05)
        current_job().check_cancelled()


@app.task(timeout=1, max_attempts=1)
async def freeze(seconds: float) -> None:
    """Blocks its worker's event loop: only the supervisor can end it."""
    _record()
    time.sleep(seconds)


@app.task(timeout=1, max_attempts=2, backoff=0)
def sticky(seconds: float) -> None:
    """Attempt 1 overruns its timeout a little (its thread returns 2.2 s later, before the
    hard limit); attempt 2 never returns on its own."""
    _record()
    time.sleep(seconds if current_job().attempt == 1 else 3600)


@app.task
def leak(mb: int) -> int:
    """Keeps `mb` MB (touched, so resident) in a module-level list for good."""
    _record()
    _LEAKED.append(b"\\x01" * (mb * 2**20))
    time.sleep(0.2)
    return os.getpid()


@app.task
def hog(mb: int, seconds: float, marker: str) -> int:
    """The first run holds `mb` MB (touched) for `seconds`; reruns return at once."""
    _record()
    if os.path.exists(marker):
        return os.getpid()
    open(marker, "w").close()
    buf = b"\\x01" * (mb * 2**20)
    time.sleep(seconds)
    del buf
    return os.getpid()


@app.task
def always_hog(mb: int) -> int:
    """Outgrows any small memory limit on every run."""
    _record()
    buf = b"\\x01" * (mb * 2**20)
    time.sleep(10)
    del buf
    return os.getpid()


@app.task
def crash_once() -> int:
    """Kills its own process on the first attempt; succeeds on the next."""
    _record()
    if current_job().attempt == 1:
        os._exit(3)
    return os.getpid()


@app.task
async def slow_once(seconds: float) -> int:
    """Long on the first attempt, quick afterwards."""
    _record()
    if current_job().attempt == 1:
        await asyncio.sleep(seconds)
    return os.getpid()
'''

CHILD_STARTED = re.compile(r"child (\d+) started \(pid (\d+), worker (\S+)\)")
ISOLATE = ("CONVEYOR_URL", "CONVEYOR_WORKER_", "CONVEYOR_SCALE_", "SV_")
"""Environment variables a test run must not inherit from the developer's shell."""


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@dataclass
class Rig:
    """One test's supervisor setup: app module, logs, and every process it started."""

    tmp_path: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the processes (SV_LEASE, SV_GRACE, CONVEYOR_SCALE_..., ...)."""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    """The processes started, by name (their output is in `name`.out)."""

    def __post_init__(self) -> None:
        (self.tmp_path / "sv_app.py").write_text(APP_MODULE.format(url=self.url))

    @property
    def log_path(self) -> Path:
        return self.tmp_path / "executions.log"

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATE)}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.tmp_path), env.get("PYTHONPATH", "")) if p
        )
        env["SV_LOG"] = str(self.log_path)
        env.update(self.env)
        env.update(extra or {})
        return env

    def start(
        self,
        *args: str,
        name: str = "supervisor",
        env: dict[str, str] | None = None,
        app_spec: str = "sv_app:app",
    ) -> subprocess.Popen:
        """`conveyor --url URL worker APP ARGS`, stdout and stderr to `name`.out."""
        cmd = [sys.executable, "-m", "conveyor", "--url", self.url, "worker", app_spec]
        out = open(self.tmp_path / f"{name}.out", "wb")  # noqa: SIM115 -- lives with the process
        try:
            proc = subprocess.Popen(
                [*cmd, *args],
                cwd=self.tmp_path,
                env=self._env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()
        self.procs[name] = proc
        return proc

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "conveyor", "--url", self.url, "worker", "sv_app:app"]
        return subprocess.run(
            [*cmd, *args],
            cwd=self.tmp_path,
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def output(self, name: str = "supervisor") -> str:
        path = self.tmp_path / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def children(self, name: str = "supervisor") -> list[tuple[int, int]]:
        """(slot, pid) of every child the supervisor started, in order."""
        return [(int(m[1]), int(m[2])) for m in CHILD_STARTED.finditer(self.output(name))]

    def child_pids(self, name: str = "supervisor") -> list[int]:
        return [pid for _, pid in self.children(name)]

    def executions(self) -> dict[str, list[tuple[int, int]]]:
        """job id -> [(attempt, pid), ...] in execution order."""
        runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        if not self.log_path.exists():
            return runs
        for line in self.log_path.read_text().splitlines():
            job_id, attempt, pid = line.split()
            runs[job_id].append((int(attempt), int(pid)))
        return runs

    def wait_log(
        self, pattern: str, timeout: float, count: int = 1, name: str = "supervisor"
    ) -> list[str]:
        """Wait until `pattern` (a regex) matches `count` log lines; fail if the process
        exited first. Returns the matching lines."""
        proc = self.procs.get(name)

        def matches() -> list[str] | None:
            lines = [ln for ln in self.output(name).splitlines() if re.search(pattern, ln)]
            if len(lines) >= count:
                return lines
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({proc.returncode}) before logging {pattern!r}:\n"
                    + self.output(name)
                )
            return None

        try:
            return wait_until(matches, timeout, interval=0.05, what=f"{count} x {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {name} log ---\n{self.output(name)}") from None

    def wait_started(self, job_id: str, timeout: float = 15, runs: int = 1) -> list[tuple]:
        return wait_until(
            lambda: len(self.executions().get(job_id, ())) >= runs and self.executions()[job_id],
            timeout,
            interval=0.05,
            what=f"job {job_id} started {runs} time(s)",
        )

    def cleanup(self) -> None:
        """SIGKILL what is still running: our processes, then every child they started."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for out in self.tmp_path.glob("*.out"):
            for _, pid in self.children(out.stem):
                kill_if_ours(pid)


def kill_if_ours(pid: int) -> None:
    """SIGKILL `pid` if it is still a conveyor worker child (pids get reused)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return
        if "--report-fd" in proc.cmdline():
            proc.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass


def gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float) -> None:
    wait_until(
        lambda: all(gone(p) for p in pids),
        timeout,
        interval=0.05,
        what=f"processes {pids} gone (left: {[p for p in pids if not gone(p)]})",
    )


def wait_for_exit(proc: subprocess.Popen, timeout: float, rig: Rig | None = None) -> int:
    """The process's exit code; fails (the rig's clean-up kills it) if it runs too long."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log = f"\n{rig.output()}" if rig is not None else ""
        raise AssertionError(f"process {proc.pid} still running after {timeout} s{log}") from None


def records(app: Conveyor) -> dict[str, JobRecord]:
    return {r.id: r for r in app.backend.job_list(JobListParams(limit=1000))}


def record(app: Conveyor, job_id: str) -> JobRecord:
    job = app.get_job(job_id)
    assert job is not None, job_id
    return job.record


def wait_state(
    app: Conveyor, job_id: str, state: JobState, timeout: float, rig: Rig | None = None
) -> JobRecord:
    def reached() -> JobRecord | None:
        rec = record(app, job_id)
        return rec if rec.state == state else None

    try:
        return wait_until(reached, timeout, interval=0.05, what=f"job {job_id} {state.value}")
    except AssertionError as exc:
        detail = f"\nnow: {record(app, job_id)}"
        if rig is not None:
            detail += f"\n--- supervisor log ---\n{rig.output()}"
        raise AssertionError(f"{exc}{detail}") from None


def wait_all(
    app: Conveyor, ids: set[str], state: JobState, timeout: float, rig: Rig | None = None
) -> dict[str, JobRecord]:
    def reached() -> dict[str, JobRecord] | None:
        now = records(app)
        return now if all(now[i].state == state for i in ids) else None

    try:
        return wait_until(reached, timeout, interval=0.1, what=f"{len(ids)} jobs {state.value}")
    except AssertionError as exc:
        now = records(app)
        counts: dict[str, int] = defaultdict(int)
        for i in ids:
            counts[now[i].state.value] += 1
        detail = f"\nstates: {dict(counts)}"
        if rig is not None:
            detail += f"\n--- supervisor log ---\n{rig.output()}"
        raise AssertionError(f"{exc}{detail}") from None


def measure_child_rss_mb(rig: Rig, timeout: float = 15) -> float:
    """The resident memory of an idle supervised child of this app: start `-p 1`, read the
    child's RSS once it runs, stop it."""
    proc = rig.start("-p", "1", "-c", "1", name="baseline")
    try:
        rig.wait_log(r"worker \S+ started", timeout, name="baseline")
        [pid] = rig.child_pids("baseline")
        time.sleep(0.3)
        rss = psutil.Process(pid).memory_info().rss / 2**20
        proc.send_signal(signal.SIGTERM)
        assert wait_for_exit(proc, 10) == 0, rig.output("baseline")
        return rss
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
