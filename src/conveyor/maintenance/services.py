"""The maintenance services a worker runs while it leads: rescue, pruning, compaction and
registry pruning, each on its own thread (so its own store connection), never on the path of
claims, lease renewals and acknowledgements."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from ..backends.base import Backend, JobChange
from .compactor import compact
from .leader import LeaderElector, Leadership
from .pruner import prune_finished
from .registry_pruner import prune_registry
from .rescuer import rescue_expired
from .service import PeriodicService

log = logging.getLogger("conveyor.maintenance")

_JOIN_TIMEOUT = 5.0


class MaintenanceSettings(Protocol):
    """The timings the services need (`conveyor.Settings` has them)."""

    @property
    def leader_seconds(self) -> float: ...
    @property
    def rescue_interval(self) -> float: ...
    @property
    def prune_interval(self) -> float: ...
    @property
    def compact_interval(self) -> float: ...
    @property
    def keep_completed(self) -> float: ...
    @property
    def keep_failed(self) -> float: ...


class Maintenance:
    """Elects a leader among the workers of one store and, while this one leads, runs the
    periodic services. `stop` resigns at once so that another worker takes over."""

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        settings: MaintenanceSettings,
        publish: Callable[[Sequence[JobChange]], None],
    ) -> None:
        self.leadership = Leadership()
        self._elector = LeaderElector(backend, worker_id, settings.leader_seconds, self.leadership)
        stopping = self._stopping = threading.Event()

        def pause(seconds: float) -> bool:
            return stopping.wait(seconds)

        self._services = [
            PeriodicService(
                "rescuer",
                functools.partial(rescue_expired, backend, publish),
                settings.rescue_interval,
                self.leadership,
            ),
            PeriodicService(
                "pruner",
                functools.partial(
                    prune_finished,
                    backend,
                    settings.keep_completed,
                    settings.keep_failed,
                    pause=pause,
                ),
                settings.prune_interval,
                self.leadership,
            ),
            PeriodicService(
                "compactor",
                functools.partial(compact, backend),
                settings.compact_interval,
                self.leadership,
                first_delay=settings.compact_interval,
            ),
            PeriodicService(
                "registry-pruner",
                functools.partial(prune_registry, backend),
                settings.rescue_interval,
                self.leadership,
            ),
        ]

    def start(self) -> None:
        for service in self._services:
            service.start()
        self._elector.start()

    def stop(self) -> None:
        """Stop the services and give the lead up (blocking, bounded: call it off the loop)."""
        self._stopping.set()
        self._elector.stop()
        self.leadership.stop()
        self._elector.join(_JOIN_TIMEOUT)
        for service in self._services:
            service.join(_JOIN_TIMEOUT)
        self._elector.resign()  # a no-op unless we lead
