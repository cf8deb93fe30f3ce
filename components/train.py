"""Compile and fit one variant: the Keras workflow of loss, optimizer and metrics, then training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

# The task's loss and the metric a person reads, by task.
LOSSES = {"classification": "sparse_categorical_crossentropy", "regression": "mean_squared_error"}
METRICS = {"classification": "accuracy", "regression": "mae"}


@dataclass(frozen=True)
class Arrays:
    """The preprocessed rows a network trains and validates on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass
class FitResult:
    """Per-epoch history and totals of one fit."""

    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    train_seconds: float = 0.0
    updates: int = 0


def compile_model(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, task: str, steps_per_execution: int = 1
) -> keras.Model:
    """Step 3 of the Keras workflow: loss, optimizer and metrics for the task."""
    model.compile(
        loss=LOSSES[task],
        optimizer=optimizer,
        metrics=[METRICS[task]],
        steps_per_execution=steps_per_execution,
    )
    return model


def fit_variant(
    model: keras.Model,
    data: Arrays,
    batch_size: int,
    epochs: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> FitResult:
    """Train for `epochs` passes, recording each epoch; stop early once the loss is NaN or infinite."""
    recorder = _EpochRecorder(on_epoch)
    validation = (data.x_val, data.y_val) if len(data.y_val) else None
    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=validation,
        shuffle=True,
        verbose=verbose,
        callbacks=[*(callbacks or []), recorder],
    )
    return FitResult(recorder.history, recorder.diverged, time.perf_counter() - start, recorder.updates)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """Loss and task metric on held-out rows."""
    if len(y) == 0:
        return {}
    scores = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return {key: float(value) for key, value in scores.items()}


class _EpochRecorder(keras.callbacks.Callback):
    """Times each epoch, counts updates (iterations) and flags divergence."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self.diverged = False
        self.updates = 0
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.updates = int(self.model.optimizer.iterations.numpy())
        record = {key: float(value) for key, value in (logs or {}).items()}
        record["epoch_seconds"] = time.perf_counter() - self._started
        record["updates"] = float(self.updates)
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, record)
        if not math.isfinite(record.get("loss", 0.0)):
            self.diverged = True
            self.model.stop_training = True
