"""What every benchmark shares: the default grid, the digits rows descent trains on, optimizers by name."""

from __future__ import annotations

from typing import Any

GRID = {
    "optimizers": ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"],
    "batch_sizes": ["full", 1, 32, 256],
}


def prepared_digits() -> tuple[Any, Any, Any, dict]:
    """descent's own split and preprocessing of digits: (train/val arrays, test x, test y, hyperparameters)."""
    from pipelines.config import load_config
    from pipelines.prepare import prepare

    cfg = load_config()
    prepared = prepare(cfg)
    pre, test = prepared.preprocessor, prepared.split.test
    hyper = {name: cfg.hyperparameters(name) for name in cfg.optimizers}
    return prepared.arrays, pre.transform(test.features), pre.encode_target(test.target), hyper


def keras_optimizer(name: str, hyper: dict) -> Any:
    """The Keras optimizer descent's registry makes for `name`."""
    from components.optimizers import make_optimizer

    return make_optimizer(name, hyper)


def variant_name(optimizer: str, size: str) -> str:
    """descent's run name for a grid cell: adam-full, adam-bs32."""
    return f"{optimizer}-full" if size == "full" else f"{optimizer}-bs{size}"


def grid_arguments(description: str) -> Any:
    """The command line every peer takes: --epochs, --optimizers, --batch_sizes (the default grid)."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--optimizers", default=",".join(GRID["optimizers"]))
    p.add_argument("--batch_sizes", default=",".join(map(str, GRID["batch_sizes"])))
    return p.parse_args()


if __name__ == "__main__":  # python -m benchmarks.common --import: what every sweep's process starts with
    import sys

    if "--import" in sys.argv:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
