"""What every command shares: the store URL from the group, loading `module:attr` apps, errors."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import click
import orjson

from ..app import Conveyor
from ..backends import DEFAULT_URL


class CliError(Exception):
    """An error the command reports as one line (`error: ...`) before exiting with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """Fold a possibly multi-line message into one line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def describe(exc: BaseException) -> str:
    """`Type: message`, or the message alone for Conveyor's and the CLI's own errors."""
    if isinstance(exc, click.ClickException):
        return one_line(exc.format_message())
    text = str(exc)
    if isinstance(exc, CliError):
        return one_line(text)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    module = type(exc).__module__
    if module.startswith("conveyor") or isinstance(exc, ValueError | TypeError):
        return one_line(text) or type(exc).__name__
    return one_line(f"{type(exc).__name__}: {text}") if text else type(exc).__name__


def error_line(exc: BaseException) -> str:
    return f"error: {describe(exc)}"


@dataclass
class CliState:
    """The group's options, handed to subcommands as the click context object."""

    url: str
    url_explicit: bool
    """True when --url or CONVEYOR_URL was given (it then overrides an app's own URL)."""
    _apps: list[Conveyor] = field(default_factory=list)

    def bare_app(self) -> Conveyor:
        """A `Conveyor` on the URL, with no tasks: enough for reads and admin commands."""
        app = Conveyor(self.url)
        self._apps.append(app)
        return app

    def load_app(self, spec: str) -> Conveyor:
        """Import the user's app; --url / CONVEYOR_URL, when given, replaces its own URL."""
        app = load_app(spec)
        if self.url_explicit and app.url != self.url:
            app.use_url(self.url)
        self._apps.append(app)
        return app

    def close(self) -> None:
        for app in self._apps:
            app.close()
        self._apps.clear()


def get_state(ctx: click.Context) -> CliState:
    state = ctx.find_object(CliState)
    if state is None:  # a subcommand invoked without the group (tests, embedding)
        state = CliState(url=os.environ.get("CONVEYOR_URL") or DEFAULT_URL, url_explicit=False)
        ctx.obj = state
    return state


def load_app(spec: str) -> Conveyor:
    """Import `module:attribute` (the current directory first on sys.path)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise click.UsageError(f"APP must be module:attribute (e.g. myapp:app), not {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"in {cwd} or on the Python path"
            ) from None
        raise CliError(f"importing {module_name!r} failed: {_with_location(exc)}") from None
    except Exception as exc:
        raise CliError(f"importing {module_name!r} failed: {_with_location(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Conveyor):
        raise CliError(
            f"{spec} is a {type(obj).__name__}, not a Conveyor app (app = Conveyor(...))"
        )
    return obj


def _with_location(exc: BaseException) -> str:
    """The error plus where in the user's code it was raised, since no traceback is shown."""
    text = f"{type(exc).__name__}: {one_line(str(exc))}"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    if user and not isinstance(exc, SyntaxError):
        text += f" ({user[-1].filename}:{user[-1].lineno})"
    return text


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parsed = urllib.parse.urlsplit(url)
    if not parsed.password:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def split_names(values: tuple[str, ...]) -> list[str]:
    """`-q a,b -q c` -> ["a", "b", "c"], in order, without blanks or repeats."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names
