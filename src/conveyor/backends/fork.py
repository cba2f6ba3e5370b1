"""Fork safety shared by every store: a forked child must never reuse its parent's
connections (gunicorn `--preload`, multiprocessing), so each store forgets them there."""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForgetsAfterFork(Protocol):
    def _forget_after_fork(self) -> None:
        """Drop inherited connections without closing them (that would shut the parent's
        sockets); the next call in the child connects anew."""


def forget_connections_in_children(store: ForgetsAfterFork) -> None:
    """Register once per store; a weak reference, so the store can still be collected."""
    ref = weakref.ref(store)

    def in_child() -> None:
        alive = ref()
        if alive is not None:
            alive._forget_after_fork()

    os.register_at_fork(after_in_child=in_child)
