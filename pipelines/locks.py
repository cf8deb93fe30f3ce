"""Machine-wide locks that say who holds them and whether the holder still makes progress.

Beside each lock file, `<name>.owner` names the holder (host:pid:start, since when) and its modification time is the
holder's heartbeat, touched at every epoch's end and every finished variant by the holder and its workers
(cli.check_stop). The system frees a dead holder's lock at once; a holder silent for longer than `stale_after`
seconds is taken for hung: the next run stops it and takes the lock over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import BaseFileLock, Timeout

from pipelines import backend, cli, owners
from pipelines.owners import Busy, Owner

log = logging.getLogger("descent")
POLL = 5.0  # seconds between looks at a held lock's holder


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, since when, and when it last made progress (seconds since the epoch)."""

    owner: Owner | None
    since: float
    beat: float

    def describe(self, now: float) -> str:
        who = self.owner.describe() if self.owner else "another process"
        return f"{who}, for {now - self.since:.0f} s, last progress {now - self.beat:.0f} s ago"


@contextmanager
def hold(name: str, timeout: float, stale_after: float, grace: float) -> Iterator[None]:
    """Hold machine lock `name`: wait up to `timeout` seconds for a live holder (then raise Busy), stop a holder
    silent for longer than `stale_after` seconds (SIGTERM, SIGKILL after `grace` seconds) and take the lock over."""
    lock = backend.machine_lock(name)
    marker = Path(lock.lock_file).with_suffix(".owner")
    _acquire(lock, marker, timeout, stale_after, grace)
    beats = os.environ.get(cli.HEARTBEAT, "")
    try:
        _write(marker)
        os.environ[cli.HEARTBEAT] = os.pathsep.join(filter(None, [beats, str(marker)]))  # workers inherit it
        yield
    finally:
        os.environ[cli.HEARTBEAT] = beats
        lock.release()


def holder(marker: Path) -> Holder | None:
    """The holder a lock's owner file names; None when there is none or it cannot be read (being written)."""
    try:
        record, beat = json.loads(marker.read_text()), marker.stat().st_mtime
        return Holder(owners.parse(record["owner"]), float(record["since"]), beat)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _acquire(lock: BaseFileLock, marker: Path, timeout: float, stale_after: float, grace: float) -> None:
    deadline, noted = time.monotonic() + timeout, False
    while True:
        with contextlib.suppress(Timeout):
            lock.acquire(timeout=max(0.0, min(POLL, deadline - time.monotonic())))
            return
        found, now = holder(marker), time.time()
        # A holder that runs on this machine but is silent is hung. (One that is gone left its file to the next
        # holder, which is writing its own: wait.)
        if found is not None and now - found.beat > stale_after and owners.is_gone(found.owner) is False:
            _take_over(lock, found, stale_after, grace)
            return
        who = f"another descent run holds {lock.lock_file} ({found.describe(now) if found else 'its process'})"
        if time.monotonic() >= deadline:
            held_for = now - found.since if found else None
            message = f"{who}: waited {timeout:g} s (schedule.lock_timeout); try again later"
            raise Busy(message, held_for, who)
        if not noted:
            log.info("waiting: %s", who)
            noted = True


def _take_over(lock: BaseFileLock, found: Holder, stale_after: float, grace: float) -> None:
    """Stop a holder silent for longer than `stale_after` (hung) and take its lock."""
    owner, now = found.owner, time.time()
    log.info("%s holds %s and is silent for %.0f s: stopping it", owner.describe(), lock.lock_file, now - found.beat)
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, POLL)):
        try:
            os.kill(owner.pid, signum)
        except PermissionError:
            silent = f"silent for {now - found.beat:.0f} s (schedule.stale_after={stale_after:g})"
            raise Busy(f"{owner.describe()} holds {lock.lock_file}, {silent}, but this user may not stop it") from None
        except ProcessLookupError:
            pass
        with contextlib.suppress(Timeout):
            lock.acquire(timeout=wait)
            return
    raise Busy(f"{owner.describe()} holds {lock.lock_file} and did not stop")


def _write(marker: Path) -> None:
    # Written in place, not replaced: in the shared lock folder (mode 1777) only a file's owner may replace it.
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "w") as out:
        json.dump({"owner": str(owners.me()), "since": time.time()}, out)
    with contextlib.suppress(PermissionError):
        marker.chmod(0o666)
