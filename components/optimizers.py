"""The optimizer registry and the batch regimes (batch, stochastic, mini-batch) of gradient descent."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from components.errors import InputError

# descent's name -> (Keras optimizer class, arguments that define the variant).
# momentum and nesterov are SGD with a velocity term; the momentum value comes from config.
REGISTRY: dict[str, tuple[str, dict]] = {
    "sgd": ("SGD", {"momentum": 0.0}),
    "momentum": ("SGD", {"nesterov": False}),
    "nesterov": ("SGD", {"nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adadelta": ("Adadelta", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "nadam": ("Nadam", {}),
    "adamax": ("Adamax", {}),
    "lion": ("Lion", {}),
}
REGIMES = ("batch", "stochastic", "minibatch")


@dataclass(frozen=True)
class BatchRegime:
    """How many rows each update sees, in the seed notes' words."""

    batch_size: int
    regime: str
    updates_per_epoch: int
    label: str


def make_optimizer(name: str, hyperparameters: dict) -> Any:
    """A fresh Keras optimizer (keras.optimizers.Optimizer) for a registry name and its hyperparameters."""
    import keras

    check_optimizer(name, hyperparameters)
    class_name, fixed = REGISTRY[name]
    return getattr(keras.optimizers, class_name)(**{**hyperparameters, **fixed})


def check_optimizer(name: str, hyperparameters: dict) -> None:
    """Reject unknown optimizers, unknown hyperparameters and non-positive learning rates."""
    import keras

    if name not in REGISTRY:
        raise InputError(f"unknown optimizer {name!r}: choose one of {', '.join(REGISTRY)}")
    class_name, fixed = REGISTRY[name]
    accepted = set(inspect.signature(getattr(keras.optimizers, class_name)).parameters) - set(fixed)
    for key in hyperparameters:
        if key not in accepted:
            raise InputError(
                f"optimizer {name!r} has no hyperparameter {key!r}: it accepts "
                f"{', '.join(sorted(accepted - {'name', 'kwargs'}))}"
            )
    lr = hyperparameters.get("learning_rate")
    if lr is None or not lr > 0:
        raise InputError(f"learning rate of {name!r} must be positive, got {lr}: set e.g. training.learning_rate=0.01")
    if name in ("momentum", "nesterov") and not 0 < hyperparameters.get("momentum", 0) < 1:
        raise InputError(f"optimizer {name!r} needs momentum in (0, 1): set optimizers.{name}.momentum=0.9")


def batch_regime(batch_size: int | str, n_train: int) -> BatchRegime:
    """Resolve a batch size ('full' or a positive integer) against the number of training rows."""
    if batch_size == "full":
        return BatchRegime(n_train, "batch", 1, "full")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer or 'full', got {batch_size!r}: e.g. batch_size=32")
    if batch_size > n_train:
        raise InputError(
            f"batch size {batch_size} is larger than the {n_train} training rows: "
            "use batch_size=full for batch gradient descent"
        )
    regime = "stochastic" if batch_size == 1 else "batch" if batch_size == n_train else "minibatch"
    return BatchRegime(batch_size, regime, math.ceil(n_train / batch_size), f"bs{batch_size}")
