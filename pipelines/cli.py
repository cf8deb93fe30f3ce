"""Command-line plumbing shared by every entry point: the common options and the error contract."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from components.errors import InputError
from pipelines.config import Config, load_config, parse_value

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 75


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so every open run ends KILLED on the way out."""


def parser(description: str, variant_options: bool = True) -> argparse.ArgumentParser:
    """The options every entry point takes; `mlflow run -P key=value` arrives as `--key value`."""
    p = argparse.ArgumentParser(description=description)
    # DESCENT_CONFIG / DESCENT_OVERRIDES let schedulers (cron, systemd, Kubernetes) set them once.
    p.add_argument("--config", default=os.environ.get("DESCENT_CONFIG", ""), help="a YAML file over conf/default.yaml")
    p.add_argument("--data", default="", help="embedded data set name or a .csv/.parquet path")
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
    return load_config(args.config or None, args.overrides, chosen | (extra or {}))


def main(entry: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run an entry point: bad input is one line on stderr and exit 2; any other failure exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, terminate)
    try:
        return entry(argv) or EXIT_OK
    except InputError as exc:
        print(f"descent: error: {exc}", file=sys.stderr)
        _tag_launched_run(str(exc))
        return EXIT_BAD_INPUT
    except Terminated:
        print("descent: terminated (SIGTERM); any open run was ended KILLED", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("descent: interrupted; any open run was ended KILLED", file=sys.stderr)
        return 130


def terminate(signum: int, frame: object) -> None:
    """SIGTERM handler: raise Terminated (and remember it for check_stop)."""
    _STOP.set()
    raise Terminated()


def check_stop() -> None:
    """Raise Terminated at a safe point if SIGTERM arrived while a library swallowed the first raise.

    In a worker process it also stops once the sweep process that started it is gone (killed with -9).
    """
    if _STOP.is_set() or (_PARENT and os.getppid() != _PARENT[0]):
        raise Terminated()


def stop_with_parent(pid: int) -> None:
    """Make check_stop raise once this process's parent `pid` has died."""
    _PARENT[:] = [pid]


_PARENT: list[int] = []
_STOP = threading.Event()


def _tag_launched_run(reason: str) -> None:
    # Bad input found before the run was taken over: `mlflow run` will mark it FAILED; say why on it.
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        from pipelines import tracking

        tracking.set_tags_on(run_id, {"descent.error": f"InputError: {reason}"})
