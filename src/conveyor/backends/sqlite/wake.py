"""Wake idle workers of one SQLite file across processes without polling.

Each waiting worker binds a Unix datagram socket in a directory named after the database
file; an enqueue sends the queue's name to every socket there. A datagram is fire-and-forget:
a full buffer means the worker is already awake, a dead socket is removed. A lost wake-up
costs at most the worker's fallback poll interval.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence

log = logging.getLogger("conveyor.store")


def wake_dir_for(db_path: str) -> str:
    """One directory per user and database file: another user cannot block or spoof ours.

    Processes of different users sharing one file do not wake each other; they fall back to
    the poll interval.
    """
    digest = hashlib.sha1(os.path.realpath(db_path).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"conveyor-wake-{os.getuid()}-{digest}")


class WakeChannel:
    def __init__(self, db_path: str) -> None:
        self.directory = wake_dir_for(db_path)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._listener_path: str | None = None
        self._lock = threading.Lock()
        self._listen_failed = False

    def notify(self, queues: Iterable[str]) -> None:
        """Tell every waiting worker that jobs became due in `queues`."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return  # nobody listens (or we may not look): workers fall back to polling
        if not names:
            return
        messages = [q.encode() for q in set(queues)]
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            for name in names:
                path = os.path.join(self.directory, name)
                for message in messages:
                    try:
                        self._sender.sendto(message, path)
                    except BlockingIOError:
                        break  # its buffer is full: that worker has wake-ups pending
                    except (ConnectionRefusedError, FileNotFoundError):
                        with contextlib.suppress(OSError):
                            os.unlink(path)  # its worker died without cleaning up
                        break
                    except OSError:
                        break

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a wake-up names one of `queues` (True) or `timeout` passes (False)."""
        listener = self._ensure_listener()
        if listener is None:
            time.sleep(timeout)  # cannot listen: the caller's timeout is the poll interval
            return False
        wanted = {q.encode() for q in queues}
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([listener], [], [], remaining)
            if not readable:
                return False
            woken = False
            while True:  # drain everything pending: one claim serves them all
                try:
                    message = listener.recv(256)
                except BlockingIOError:
                    break
                woken = woken or message in wanted
            if woken:
                return True

    def _ensure_listener(self) -> socket.socket | None:
        with self._lock:
            if self._listener is None and not self._listen_failed:
                try:
                    self._listener, self._listener_path = self._bind()
                except OSError as exc:
                    self._listen_failed = True
                    log.warning(
                        "cannot listen for wake-ups in %s (%s); polling instead",
                        self.directory,
                        exc,
                    )
            return self._listener

    def _bind(self) -> tuple[socket.socket, str]:
        path = os.path.join(self.directory, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")
        failures = 0
        while True:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(path)
            except FileNotFoundError:
                sock.close()  # another worker removed the empty directory just now
                failures += 1
                if failures == 3:
                    raise
                continue
            sock.setblocking(False)
            return sock, path

    def forget_after_fork(self) -> list[socket.socket]:
        """In a forked child: drop the parent's sockets unclosed (the listener's file is the
        parent's to remove) and return them for the caller to keep; rebind lazily."""
        inherited = [s for s in (self._sender, self._listener) if s is not None]
        self._sender = self._listener = None
        self._listener_path = None
        self._listen_failed = False
        self._lock = threading.Lock()  # another thread may have held it at the fork
        return inherited

    def close(self) -> None:
        with self._lock:
            for sock in (self._sender, self._listener):
                if sock is not None:
                    sock.close()
            if self._listener_path:
                with contextlib.suppress(OSError):
                    os.unlink(self._listener_path)
                with contextlib.suppress(OSError):
                    os.rmdir(self.directory)  # only succeeds when no other worker waits
            self._sender = self._listener = None
            self._listener_path = None
