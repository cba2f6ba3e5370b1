"""Fixtures of the supervisor tests: a `Rig` (app module, logs, clean-up) on a SQLite file
in tmp_path, and a test-side app on the same store to enqueue and inspect jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, Settings

from .helpers import Rig, sqlite_url

TEST_SIDE = Settings(lease_seconds=30.0, rescue_interval=0.5, poll_interval=0.2, grace_period=5)
"""The test process only enqueues and reads; the workers' settings are in the app module."""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Process-heavy tests run on SQLite only (a file in tmp_path)."""
    setup = Rig(tmp_path, sqlite_url(tmp_path))
    yield setup
    setup.cleanup()


@pytest.fixture
def app(rig: Rig) -> Iterator[Conveyor]:
    conveyor = Conveyor(rig.url, settings=TEST_SIDE)
    yield conveyor
    conveyor.close()


@pytest.fixture
def store_rig(tmp_path: Path, store_url: str) -> Iterator[Rig]:
    """The same on every store of the conformance suite (sqlite, postgres, redis)."""
    setup = Rig(tmp_path, store_url)
    yield setup
    setup.cleanup()


@pytest.fixture
def store_app(store_rig: Rig) -> Iterator[Conveyor]:
    conveyor = Conveyor(store_rig.url, settings=TEST_SIDE)
    yield conveyor
    conveyor.close()
