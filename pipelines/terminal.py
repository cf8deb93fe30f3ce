"""What reaches the terminal: descent's own lines only, unless --verbose; the rest goes to a log file the run keeps.

TensorFlow prints its start-up lines (oneDNN, CUDA, CPU features) from C++ straight to file descriptor 2, whatever
TF_CPP_MIN_LOG_LEVEL says, so a descent process points descriptor 2 at its log file before TensorFlow is imported
and gives Python's `sys.stderr` a copy of the terminal. Worker processes inherit DESCENT_LOG_DIR and do the same
into their own file; every file ends up under `logs/` on the run (see keep_logs).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, TextIO

from components.errors import InputWarning

LOG_DIR = "DESCENT_LOG_DIR"  # set by the entry point, inherited by its workers: where every process logs
VERBOSE = "DESCENT_VERBOSE"  # "1": show everything, in this process and the ones it starts
ROLE = "DESCENT_ROLE"  # what a process started by an entry point does (worker, writer): its log file's name
SCRIPTS = {"descent": "sweep"}  # console scripts: descent-train -> train, ...


class _State:
    quiet = False
    log: Path | None = None  # this process's log file
    folder: Path | None = None  # the folder of every process's log, when this process made it
    terminal: TextIO | None = None  # what descriptor 2 was before it pointed at the log
    terminal_fd: int | None = None


STATE = _State()


def entry_point() -> str | None:
    """The descent entry point this process runs (sweep, train, ...), or None (a worker, a test, a notebook)."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if "--multiprocessing-fork" in argv:  # a worker process: it has the sweep's argv, not its own
        return None
    if "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        return module.removeprefix("pipelines.") if module.startswith("pipelines.") else None
    script = Path(sys.argv[0]).name
    if script.startswith("descent"):
        return SCRIPTS.get(script, script.removeprefix("descent-"))
    return None


def start() -> None:
    """Called once, when `pipelines` is first imported: before TensorFlow, in every process of descent."""
    warnings.showwarning = _show_warning
    if os.environ.get(VERBOSE) == "1":
        return
    name = entry_point()
    if name is not None:
        folder = Path(tempfile.mkdtemp(prefix="descent-logs-"))
        os.environ[LOG_DIR] = str(folder)
        STATE.folder = folder
        _hush(folder / f"{name}.log", keep_terminal=True)
    elif os.environ.get(LOG_DIR) and Path(os.environ[LOG_DIR]).is_dir():
        # A worker of a descent process: its Python stderr goes to its log too (its parent reports for it).
        role = os.environ.get(ROLE, "worker")
        _hush(Path(os.environ[LOG_DIR]) / f"{role}-{os.getpid()}.log", keep_terminal=False)


def _hush(log: Path, keep_terminal: bool) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if keep_terminal:
        sys.stderr.flush()
        STATE.terminal_fd = os.dup(2)
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        STATE.terminal = open(  # noqa: SIM115 (the process's stderr from now on, closed at exit)
            STATE.terminal_fd, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
        )
        sys.stderr = STATE.terminal
    os.dup2(fd, 2)
    os.close(fd)
    STATE.quiet, STATE.log = True, log


def show_everything() -> None:
    """--verbose or training.verbose: what was logged so far to the terminal, and everything from now on."""
    os.environ[VERBOSE] = "1"  # workers started from now on print everything too
    if not STATE.quiet:
        return
    STATE.quiet = False
    if STATE.terminal_fd is not None:
        os.dup2(STATE.terminal_fd, 2)
    if STATE.log is not None and STATE.terminal is not None:
        STATE.terminal.write(STATE.log.read_text(errors="replace"))
        STATE.terminal.flush()


def setup_logging() -> None:
    """descent's own lines on stdout; other libraries' log records to the log file while quiet (else to stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for name in ("", "mlflow", "tensorflow", "absl"):  # "": the root logger, which the others propagate to
        _divert(name)


def divert(logger: str) -> None:
    """A library's logger imported after setup_logging: its records follow the same rule (call once it exists)."""
    _divert(logger)


def _divert(logger: str) -> None:
    for handler in logging.getLogger(logger).handlers:
        if not any(isinstance(f, _Divert) for f in handler.filters):
            handler.addFilter(_Divert())


class _Divert(logging.Filter):
    """While quiet, a record that is not descent's goes to the log file instead of the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not STATE.quiet or record.name == "descent" or record.name.startswith("descent."):
            return True
        _write_log(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        return False


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """descent's own warnings as one line on the console; the libraries' to the log file while quiet."""
    if issubclass(category, InputWarning):
        print(f"descent: warning: {message}", file=sys.stderr)
    elif STATE.quiet:
        _write_log(warnings.formatwarning(message, category, filename, lineno, line))
    else:
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)


_ORIGINAL_SHOWWARNING = warnings.showwarning


def _write_log(text: str) -> None:
    # Descriptor 2 is the log file while quiet: write there unbuffered, in order with TensorFlow's own lines.
    os.write(2, text.encode("utf-8", errors="backslashreplace"))


def logs_folder() -> Path | None:
    """The folder of this command's log files (made by this process), while it exists."""
    return STATE.folder if STATE.folder is not None and STATE.folder.is_dir() else None


def keep_logs(log_folder_to: Any) -> None:
    """Hand the log files to `log_folder_to(folder)` (they become the run's logs/ artifacts), then delete them."""
    folder = logs_folder()
    if folder is None:
        return
    try:
        if any(p.stat().st_size for p in folder.glob("*.log")):
            log_folder_to(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        STATE.folder = None


def ray_options() -> dict[str, Any]:
    """ray.init options (Ray imported): while quiet, Ray's own lines go to the log file, its workers' output
    stays in Ray's session logs."""
    _divert("ray")
    return {"log_to_driver": not STATE.quiet}
