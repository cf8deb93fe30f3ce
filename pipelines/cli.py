"""Command-line plumbing shared by every entry point: the common options and the error contract."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from components.errors import InputError
from pipelines.config import Config, load_config, parse_value

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def parser(description: str, variant_options: bool = True) -> argparse.ArgumentParser:
    """The options every entry point takes; `mlflow run -P key=value` arrives as `--key value`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default="", help="a YAML file merged over conf/default.yaml")
    p.add_argument("--data", default="", help="embedded data set name or a .csv/.parquet path")
    p.add_argument("--target", default="", help="target column of a data file")
    p.add_argument("--epochs", default="", help="passes over the training rows")
    p.add_argument("--overrides", default="", help='"key.sub=value ..." pairs, e.g. "training.seed=3"')
    if variant_options:
        p.add_argument("--optimizer", default="", help="optimizer name from the registry")
        p.add_argument("--batch_size", "--batch-size", default="", help="1, a mini-batch size, or full")
        p.add_argument("--learning_rate", "--learning-rate", default="", help="overrides the optimizer's rate")
        p.add_argument("--seed", default="", help="seed of the initial weights and row order")
    return p


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


def main(entry: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run an entry point: bad input is one line on stderr and exit 2; any other failure exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        entry(argv)
    except InputError as exc:
        print(f"descent: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("descent: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK
