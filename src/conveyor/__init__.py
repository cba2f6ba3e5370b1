"""Conveyor: background jobs for Python on SQLite, PostgreSQL or Redis."""

from .app import Conveyor, Settings
from .job import Job
from .model.backoff import Backoff
from .model.errors import (
    ConveyorError,
    InvalidTransition,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NonRetryable,
    PayloadError,
    RetryAfter,
    Snooze,
    StoreError,
)
from .model.priority import Priority
from .model.states import JobState
from .task import Task
from .worker.context import current_job
from .worker.runner import Worker

__all__ = [
    "Backoff",
    "Conveyor",
    "ConveyorError",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "NonRetryable",
    "PayloadError",
    "Priority",
    "RetryAfter",
    "Settings",
    "Snooze",
    "StoreError",
    "Task",
    "Worker",
    "current_job",
]
