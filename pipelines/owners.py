"""Who owns a run or a lock (host, process id, process start time), and whether that owner is gone.

A run left RUNNING is only ever ended as interrupted once its owner is known to be gone: a process on this
machine that no longer exists (a recycled process id is told apart by its start time).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

import psutil


class Busy(RuntimeError):
    """A live run owns what this run needs (its study, a lock): try again later (exit 75)."""

    def __init__(self, message: str, held_for: float | None = None, who: str = "") -> None:
        super().__init__(message)
        self.held_for = held_for  # seconds the holder has held it, when known
        self.who = who or message  # who holds it, in words


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float  # the process's start time (seconds since the epoch, 2 decimals)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started:.2f}"

    def describe(self) -> str:
        here = "this machine" if self.host == socket.gethostname() else f"host {self.host}"
        return f"process {self.pid} on {here}"


def me() -> Owner:
    """This process."""
    return _me(os.getpid())


@functools.cache  # a process's host, id and start time never change while it runs (a forked child has its own id)
def _me(pid: int) -> Owner:
    return Owner(socket.gethostname(), pid, _started(pid))


def parse(text: str | None) -> Owner | None:
    """An owner from its tag or lock-file form `host:pid:started`; None when absent or unreadable."""
    try:
        host, pid, started = (text or "").rsplit(":", 2)
        return Owner(host, int(pid), float(started))
    except ValueError:
        return None


def is_gone(owner: Owner | None) -> bool | None:
    """True when the owner is a process of this machine that has ended; False while it runs; None when it cannot
    be told (no owner recorded, or one on another machine)."""
    if owner is None or owner.host != socket.gethostname():
        return None
    try:
        process = psutil.Process(owner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped by its parent
            return True
        return round(process.create_time(), 2) != round(owner.started, 2)  # the id now names another process
    except psutil.NoSuchProcess:
        return True


def _started(pid: int) -> float:
    return round(psutil.Process(pid).create_time(), 2)
