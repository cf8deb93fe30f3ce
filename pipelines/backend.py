"""Where the tracking store is and whether it answers: its URI, a sqlite store's schema and write mode, the server's
health, the machine-wide locks of descent's processes."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from components.errors import InputError

log = logging.getLogger("descent")


def use_wal() -> None:
    """Open sqlite stores in write-ahead-log mode from now on, in this process (see _sqlite_wal)."""
    import sqlalchemy

    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _sqlite_wal):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _sqlite_wal)


def _sqlite_wal(connection: Any, _: Any) -> None:
    """A sqlite store in write-ahead-log mode, synced at checkpoints rather than at every commit.

    A variant run is a handful of small commits; each waited for the disk (~10-20 ms, as long as training a
    small variant). In WAL mode a commit appends to mlflow.db-wal and returns; a crash of descent loses nothing,
    a power cut at most the last commits, never the database (MLflow's own bulk import uses WAL too). Readers
    (the MLflow UI) no longer block writers. WAL needs a local disk, as the sqlite store does anyway.
    """
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else a sqlite file in the working directory (MLflow 3's own default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_remote() -> bool:
    return tracking_uri().startswith(("http://", "https://"))


def is_local_store() -> bool:
    """Whether runs go to files on this machine (a sqlite file, ./mlruns), out of other machines' reach."""
    return urlsplit(tracking_uri()).scheme in ("", "file", "sqlite")


def redacted(uri: str) -> str:
    """A URI fit to print: any user:password@ part replaced."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def ui_command() -> str:
    """The command that opens the MLflow UI on this tracking store."""
    if is_remote():
        return f"open {redacted(tracking_uri())}"
    return f"descent-ui (or: mlflow ui --backend-store-uri {tracking_uri()})"


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer; scheduled runs exit 75 (try again later)."""


def wait_for_server(retries: int, backoff: float) -> None:
    """For an http(s) tracking URI, poll /health with exponential backoff; raise TrackingUnavailable."""
    if not is_remote():
        return
    url = tracking_uri().rstrip("/")
    delay = backoff
    for attempt in range(1, retries + 1):
        if healthy(url, timeout=5):
            return
        if attempt < retries:
            log.info(
                "tracking server %s not reachable (try %d of %d); retrying in %.0f s",
                redacted(url),
                attempt,
                retries,
                delay,
            )
            time.sleep(delay)
            delay *= 2
    raise TrackingUnavailable(
        f"tracking server {redacted(url)} did not answer after {retries} tries: start it or fix MLFLOW_TRACKING_URI"
    )


def healthy(url: str, timeout: float) -> bool:
    """Whether an MLflow server answers 200 on /health."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def check_store(uri: str | None = None) -> None:
    """Refuse a sqlite store whose folder does not exist, in one line."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.parent.is_dir():
        raise InputError(
            f"tracking store folder {database.parent} does not exist: create it or fix MLFLOW_TRACKING_URI"
        )


def ensure_store(uri: str | None = None) -> None:
    """Create a sqlite store's schema once, under a file lock: parallel first-time creation crashes."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///") or uri in _READY:
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    check_store(uri)
    database = Path(uri.removeprefix("sqlite:///"))
    use_wal()
    with FileLock(f"{database}.lock"):
        MlflowClient(uri).search_experiments(max_results=1)
    _READY.add(uri)


_READY: set[str] = set()


def machine_lock(name: str, timeout: float = -1) -> Any:
    """A file lock shared by every descent process on this machine, whichever user runs it."""
    from filelock import FileLock

    return FileLock(lock_path(name), timeout=timeout, mode=0o666)


def lock_path(name: str) -> str:
    """The file of a machine-wide lock (one per experiment or store)."""
    folder = Path(tempfile.gettempdir()) / "descent-locks"
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # like /tmp itself: everyone may add a lock file
            folder.chmod(0o1777)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return str(folder / f"{safe}.lock")
