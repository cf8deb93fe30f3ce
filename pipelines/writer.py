"""Tracking off the critical path: a writer process owns MLflow and the store; a sweep's process sends it what to
record and goes on training (a local store: sqlite or ./mlruns).

The writer loads MLflow and creates the store while the sweep's process loads TensorFlow, then does each request
in the order sent: writes without an answer (a run's records, its end, its files), reads with one (which see every
write sent before them). A write that fails is raised at the next read or at `close`. The writer ignores SIGINT and
SIGTERM, which reach the whole process group: the sweep's process decides how its runs end, and the writer writes
that. If the sweep's process dies, the writer writes what it was sent and exits.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipelines import cli

ROOT = Path(__file__).resolve().parent.parent
# Requests that answer (reads, and writes whose result the caller needs); every other request is a write.
CALLS = {
    "get_run",
    "search_runs",
    "experiment_by_name",
    "experiment",
    "create_experiment",
    "metric_history",
    "artifacts",
    "download",
    "log_folder",  # its folder is the caller's, deleted once this returns
    "settle",
}


class TrackingError(RuntimeError):
    """A write the writer process could not make (the store's own error, as text)."""


class Remote:
    """The store's operations (pipelines/store.py Direct), done by the writer process."""

    def __init__(self, uri: str) -> None:
        import socket

        mine, theirs = socket.socketpair()
        code = "import sys; from pipelines.writer import serve; serve(int(sys.argv[1]), sys.argv[2], sys.argv[3:])"
        env = {
            **os.environ,
            "DESCENT_ROLE": "writer",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), uri, *sys.argv], pass_fds=[theirs.fileno()], env=env
        )
        theirs.close()
        self.connection = Connection(mine.detach())
        self.uri, self.closed, self.asked = uri, False, False
        self.lock = threading.RLock()  # the sweep's threads share the connection: one request (and answer) at a time

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        start_time: int,
        run_id: str | None = None,
        context: bool = False,
    ) -> str:
        """A new run, created by the writer without waiting: its id is made here."""
        run_id = run_id or uuid.uuid4().hex
        self._request("cast", "create_run", (experiment_id, run_name, tags, start_time), run_id=run_id, context=context)
        return run_id

    def log_file(self, run_id: str, path: str, artifact_path: str | None = None, remove: bool = False) -> None:
        """A file the caller wrote for this alone (`remove`) is logged and deleted later; any other, now."""
        self._request("cast" if remove else "call", "log_file", (run_id, path, artifact_path), remove=remove)

    def log_servable_model(self, run_id: str, model: dict, tag: bool = False, remove: str | None = None) -> str | None:
        """With `tag` the writer sets the model's URI on the run and nothing waits for it (None); else its URI."""
        return self._request("cast" if tag else "call", "log_servable_model", (run_id, model), tag=tag, remove=remove)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not a store operation (copy, pickle and hasattr ask for these)
            raise AttributeError(name)

        def request(*args: Any, **kwargs: Any) -> Any:
            return self._request("call" if name in CALLS else "cast", name, args, **kwargs)

        return request

    def _request(self, kind: str, name: str, args: tuple, **kwargs: Any) -> Any:
        """Send one request; for a call, wait for its answer. Ctrl+C or SIGTERM meanwhile takes effect once the
        answer is in (cli.signals_deferred): a message is never cut in two, nor an answer left for the next call."""
        main = threading.current_thread() is threading.main_thread()  # where signal handlers run
        with self.lock, cli.signals_deferred() if main else contextlib.nullcontext():
            if self.closed:
                raise TrackingError("the tracking writer is closed")
            self.asked = self.asked or name != "close"
            try:
                self.connection.send((kind, name, args, kwargs))
                if kind == "cast":
                    return None
                state, value, failed = self.connection.recv()
            except (EOFError, OSError):
                raise TrackingError(f"the tracking writer process is gone ({self._exit()})") from None
        if failed:
            raise TrackingError(f"a write to the tracking store failed: {failed}")
        if state == "error":
            raise _rebuilt(*value)
        return value

    def _exit(self) -> str:
        code = self.process.poll()
        return "still running" if code is None else f"exit code {code}"

    def close(self) -> None:
        """Wait until everything sent is written, then stop the writer; raise the first write that failed. A writer
        never asked anything (the command stopped on bad input first) is not waited for."""
        if self.closed:
            return
        try:
            if self.asked:
                self._request("call", "close", ())
        finally:
            self.closed = True
            self.connection.close()
            if self.asked:
                self.process.wait()


def _rebuilt(kind: str, message: str) -> Exception:
    """The error a read raised in the writer, raised here: descent's own kinds as themselves."""
    from components.errors import InputError

    if kind == "InputError":
        return InputError(message)
    error = TrackingError(f"{kind}: {message}")
    error.kind = kind  # type: ignore[attr-defined]
    return error


def serve(fd: int, uri: str, argv: list[str]) -> None:
    """The writer process: load MLflow, make the store ready, then do each request until told to close.

    `argv`: the command line of the sweep's process, which MLflow's context tags name as the runs' source.
    """
    sys.argv = argv
    os.nice(5)  # training first: the writer catches up in the moments the sweep's process leaves a core idle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from pipelines.store import direct

    connection = Connection(fd)
    failed: str | None = None  # a write that failed, reported at the next answer
    first_failed: str | None = None  # and at the close, whatever answered in between
    broken: tuple[str, str] | None = None  # why there is no store: every read answers it
    try:
        store = direct(uri)
    except Exception as exc:
        store, broken = None, (type(exc).__name__, str(exc))
    # What is alive now (MLflow, SQLAlchemy: ~300,000 objects) is alive for good: the collector's full passes,
    # which would walk it all (~0.15 s each, while the sweep trains or waits for a read), skip it from here on.
    gc.collect()
    gc.freeze()
    while True:
        try:
            kind, name, args, kwargs = connection.recv()
        except (EOFError, OSError):  # the sweep's process is gone: what it sent is written
            break
        state, value = "ok", None
        if name == "close":
            if store is not None:
                store.close()
            connection.send((state, value, first_failed))
            break
        if store is None:
            if kind == "call":
                connection.send(("error", broken, None))
            continue
        try:
            value = getattr(store, name)(*args, **kwargs)
        except Exception as exc:
            if kind == "cast":
                failed = failed or f"{name}: {type(exc).__name__}: {exc}"
                first_failed = first_failed or failed
            state, value = "error", (type(exc).__name__, str(exc))
        if kind == "call":
            connection.send((state, value, failed))
            failed = None
    if store is not None:
        store.close()
    # Everything sent is committed: skip the interpreter's shutdown (MLflow's exit handlers take up to a second,
    # and the sweep waits for this process).
    sys.stderr.flush()
    os._exit(0)


_WRITER: list[Remote] = []


def start(uri: str) -> Remote:
    """Start this process's writer for the store at `uri` (its tracking goes there from now on)."""
    close()
    _WRITER.append(Remote(uri))
    return _WRITER[0]


def active(uri: str) -> Remote | None:
    """This process's writer, if it has one for the store at `uri`."""
    return _WRITER[0] if _WRITER and _WRITER[0].uri == uri and not _WRITER[0].closed else None


def close() -> None:
    """Wait for this process's writer to write everything sent (see Remote.close), and stop it."""
    while _WRITER:
        _WRITER.pop().close()
