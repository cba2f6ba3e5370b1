"""Run the real `conveyor` command in a subprocess, against a SQLite file in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

APP_SOURCE = """
from conveyor import Conveyor, Settings

app = Conveyor(settings=Settings(poll_interval=0.2, grace_period=2.0))


@app.task
def add(a: int, b: int) -> int:
    return a + b


def _deep(n: int) -> None:
    if n == 0:
        raise RuntimeError("kaboom")
    _deep(n - 1)


@app.task(max_attempts=1)
def boom() -> None:
    _deep(20)


@app.task(queue="reports", priority=2, max_attempts=4)
def report(name: str) -> str:
    return f"report {name}"
"""


class Cli:
    """`cli("jobs", "list")` runs `python -m conveyor jobs list` in `cwd` with CONVEYOR_URL set."""

    def __init__(self, cwd: Path, url: str | None) -> None:
        self.cwd = cwd
        self.url = url

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "COLUMNS")}
        if self.url is not None:
            env["CONVEYOR_URL"] = self.url
        return env

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.cwd,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run, assert success, return stdout."""
        proc = self(*args, input=input)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def make_cli(directory: Path) -> Cli:
    """A directory holding `myapp.py`, and a CLI pointed at `c.db` in it."""
    (directory / "myapp.py").write_text(APP_SOURCE)
    return Cli(directory, f"sqlite:///{directory / 'c.db'}")


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    """Non-zero exit and exactly one `error: <reason>` line on stderr; returns that line."""
    assert proc.returncode != 0, proc
    if code is not None:
        assert proc.returncode == code, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and lines[0][len("error: ") :].strip(), lines
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]
