"""`conveyor migrate`: create or upgrade the store's schema."""

from __future__ import annotations

import click

from ..backends import open_backend
from .common import echo_json, get_state, redact


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
@click.pass_context
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Create or upgrade the store's schema (safe to run from many machines at once)."""
    url = get_state(ctx).url
    store = open_backend(url)
    store.open(migrate=True)
    try:
        version = store.schema_version()
    finally:
        store.close()
    if as_json:
        echo_json({"url": redact(url), "schema_version": version})
    else:
        click.echo(f"{redact(url)}: schema version {version}")
