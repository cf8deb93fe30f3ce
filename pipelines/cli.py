"""Command-line plumbing shared by every entry point: the common options and the error contract."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from components.errors import InputError
from pipelines import access, terminal
from pipelines.config import Config, load_config, parse_value
from pipelines.owners import Busy

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 75


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so every open run ends KILLED on the way out."""


HEARTBEAT = "DESCENT_HEARTBEAT"  # files whose modification time says the study is making progress (pipelines/locks)


def parser(description: str, variant_options: bool = True) -> argparse.ArgumentParser:
    """The options every entry point takes; `mlflow run -P key=value` arrives as `--key value`."""
    p = argparse.ArgumentParser(description=description)
    # DESCENT_CONFIG / DESCENT_OVERRIDES let schedulers (cron, systemd, Kubernetes) set them once.
    p.add_argument("--config", default=os.environ.get("DESCENT_CONFIG", ""), help="a YAML file over conf/default.yaml")
    p.add_argument("--data", default="", help="embedded data set name or a data file (.csv, .tsv, .parquet, ...)")
    p.add_argument("--target", default="", help="target column of a data file")
    p.add_argument("--epochs", default="", help="passes over the training rows")
    p.add_argument(
        "--overrides",
        default=os.environ.get("DESCENT_OVERRIDES", ""),
        help='"key.sub=value ..." e.g. "training.seed=3"',
    )
    if variant_options:
        p.add_argument("--optimizer", default="", help="optimizer name from the registry")
        p.add_argument("--batch_size", "--batch-size", default="", help="1, a mini-batch size, or full")
        p.add_argument("--learning_rate", "--learning-rate", default="", help="overrides the optimizer's rate")
        p.add_argument("--seed", default="", help="seed of the initial weights and row order")
    add_flag(p, "verbose", "show everything: per-epoch lines, and TensorFlow's and the libraries' own lines")
    return p


def add_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """A yes/no option that works both as `--name` and as `mlflow run -P name=true` (`--name true`)."""
    p.add_argument(f"--{name}", nargs="?", const="true", default="false", type=_truth, help=help)


def _truth(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from(args: argparse.Namespace, extra: dict | None = None) -> Config:
    """The validated config from the parsed options (and `extra` dotted keys); options win over files."""
    texts = {"data.source": args.data, "data.target": args.target}
    values = {
        "training.epochs": args.epochs,
        "training.optimizer": getattr(args, "optimizer", ""),
        "training.batch_size": getattr(args, "batch_size", ""),
        "training.learning_rate": getattr(args, "learning_rate", ""),
        "training.seed": getattr(args, "seed", ""),
    }
    chosen = {k: v for k, v in texts.items() if v} | {k: parse_value(v) for k, v in values.items() if v}
    cfg = load_config(args.config or None, args.overrides, chosen | (extra or {}))
    shutdown_within(cfg.tracking.shutdown_timeout)
    access.note(experiment=cfg.experiment)  # named if the tracking server refuses this login
    if getattr(args, "verbose", False) and not cfg.training.verbose:
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"verbose": 1})})
    if cfg.training.verbose:
        terminal.show_everything()
    return cfg


def main(entry: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run an entry point: bad input (a refusing tracking server too) is one line on stderr and exit 2; else exit 1.
    A write the tracking writer could not make is one line and exit 1 too, when the entry point had succeeded."""
    terminal.setup_logging()
    handle_signals()
    code = _run(entry, argv)
    return _close_writer(code)


def _close_writer(code: int) -> int:
    """Wait until the tracking writer (if any) has written everything; its failure turns success into exit 1."""
    from pipelines import writer

    try:
        writer.close()
    except writer.TrackingError as exc:
        print(f"descent: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if code == EXIT_OK else code
    except KeyboardInterrupt:  # a stop that came while the last records were written: they are written
        pass
    return code


def _run(entry: Callable[[list[str] | None], int | None], argv: list[str] | None) -> int:
    try:
        return entry(argv) or EXIT_OK
    except Busy as exc:  # another live run has the study: not bad input, and it may be free later
        print(f"descent: error: {exc}", file=sys.stderr)
        _tag_launched_run(f"Busy: {exc}")
        return EXIT_UNAVAILABLE
    except Exception as exc:
        stopped = stop_inside(exc)
        if stopped is not None:
            return _stopped(stopped)
        # A server that refuses the login (401) or its rights (403) is bad input too: retrying will not help.
        refused = access.refusal(exc)
        if refused is None and not isinstance(exc, InputError):
            raise
        print(f"descent: error: {refused or exc}", file=sys.stderr)
        if refused is None:  # the server would refuse this tag too
            _tag_launched_run(f"InputError: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stopped:  # Ctrl+C, or SIGTERM (which Ray re-raises as a plain KeyboardInterrupt)
        return _stopped(stopped)
    finally:
        _keep_logs()


def _stopped(stopped: KeyboardInterrupt) -> int:
    if isinstance(stopped, Terminated) or _FIRST[:1] == [signal.SIGTERM]:
        print("descent: terminated (SIGTERM); any open run was ended KILLED", file=sys.stderr)
        return 143
    print("descent: interrupted; any open run was ended KILLED", file=sys.stderr)
    return 130


def stop_inside(exc: BaseException) -> KeyboardInterrupt | None:
    """The stop (SIGTERM or Ctrl+C, see `stop`) that the error `exc` stands for, if any.

    A stop is raised wherever the main thread is, library code included, and a library may turn it into an error of
    its own: TensorFlow converting a numpy array (SystemError "returned a result with an exception set", the stop as
    its cause), its C++ code raising an error of its own at that moment (pybind11's RuntimeError "ORIGINAL
    InvalidArgumentError REPLACED BY Terminated", the stop in its text only), or its tracing swallowing it (ValueError
    "Could not pack sequence", no trace of the stop at all). So once a stop has arrived in this process, any error
    is the stop's doing: the user asked for the end, and what was running ends KILLED, not FAILED.
    """
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, KeyboardInterrupt):
            return found
        named = _REPLACED_BY.search(str(found)) if isinstance(found, RuntimeError) else None
        if named is not None:  # also a stop that came another way than this process's handler (Ray's cancel)
            return Terminated() if named[1] == Terminated.__name__ else KeyboardInterrupt()
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return _stopping() if _STOP.is_set() else None


_REPLACED_BY = re.compile(r"REPLACED BY (Terminated|KeyboardInterrupt)\b")  # pybind11's error_already_set


def _keep_logs() -> None:
    """The log files of this command (what was kept off the console) become logs/ of the run it ended last."""
    from pipelines import tracking

    def upload(folder: object) -> None:
        last = tracking.last_run_id()
        if last is not None:
            tracking.log_folder_to(last, folder, "logs")

    try:
        terminal.keep_logs(upload)
    except Exception as exc:  # the logs are a courtesy: never the reason a run fails
        print(f"descent: note: the log files were not kept ({type(exc).__name__}: {exc})", file=sys.stderr)


def handle_signals() -> None:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt, once (see `stop`)."""
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def stop(signum: int, frame: object) -> None:
    """Raise Terminated (SIGTERM) or KeyboardInterrupt (SIGINT): the open runs end KILLED on the way out.

    Only the first signal raises. systemd and Ctrl+C signal the whole process group, then the sweep signals its
    workers again: a repeat must not interrupt the shutdown it started (the flush of buffered metrics, the ending
    of runs), so repeats are ignored, and the process exits anyway `shutdown_within` seconds after the first.
    """
    if _FIRST:
        return
    _FIRST.append(signum)
    _STOP.set()
    if _DEADLINE:
        timer = threading.Timer(_DEADLINE[0], _exit_now, (signum,))
        timer.daemon = True
        timer.start()
    if _DEFERRED:  # raised when the block that must not be cut ends
        _DEFERRED[-1] = True
        return
    raise _stopping()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A first SIGTERM or Ctrl+C that arrives in this block (in the main thread) raises when the block ends: a
    message to the tracking writer is sent, and its answer read, whole."""
    _DEFERRED.append(False)
    try:
        yield
    finally:
        arrived = _DEFERRED.pop()
        if arrived and _DEFERRED:
            _DEFERRED[-1] = True
        elif arrived:
            raise _stopping()


def shutdown_within(seconds: float) -> None:
    """After a SIGTERM or Ctrl+C, exit at the latest this many seconds later (runs still open stay RUNNING)."""
    _DEADLINE[:] = [seconds]


def _exit_now(signum: int) -> None:
    print(
        f"descent: stopped after {_DEADLINE[0]:g} s of shutting down (tracking.shutdown_timeout); "
        "runs still RUNNING are ended by the next run of this study",
        file=sys.stderr,
    )
    os._exit(128 + signum)


def _stopping() -> KeyboardInterrupt:
    return KeyboardInterrupt() if _FIRST and _FIRST[0] == signal.SIGINT else Terminated()


def check_stop() -> None:
    """Raise at a safe point if a signal arrived while a library swallowed the first raise; say the study progresses.

    In a worker process it also stops once the sweep process that started it is gone (killed with -9).
    """
    if _STOP.is_set():
        raise _stopping()
    if _PARENT and os.getppid() != _PARENT[0]:
        raise Terminated()
    beat()


def beat() -> None:
    """Touch the heartbeat files of the study lock this process works under (at most every few seconds)."""
    now = time.monotonic()
    if now - _LAST_BEAT[0] < BEAT_SECONDS:
        return
    _LAST_BEAT[0] = now
    for path in filter(None, os.environ.get(HEARTBEAT, "").split(os.pathsep)):
        with contextlib.suppress(OSError):
            os.utime(path)


def stop_with_parent(pid: int) -> None:
    """Make check_stop raise once this process's parent `pid` has died."""
    _PARENT[:] = [pid]


_PARENT: list[int] = []
_DEFERRED: list[bool] = []  # open signals_deferred blocks: whether a signal arrived in each
_STOP = threading.Event()
_FIRST: list[int] = []  # the signal that started the shutdown
_DEADLINE: list[float] = []
_LAST_BEAT = [-math.inf]
BEAT_SECONDS = 5.0


def _tag_launched_run(reason: str) -> None:
    # Bad input found before the run was taken over: `mlflow run` will mark it FAILED; say why on it.
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        from pipelines import tracking

        tracking.set_tags_on(run_id, {"descent.error": reason})
