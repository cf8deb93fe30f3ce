"""Compile and fit one variant: the Keras workflow of loss, optimizer and metrics, then training.

Training runs one compiled TensorFlow call per epoch (a `tf.function` looping over all of the epoch's
updates), so batch size 1 pays no Python overhead per update. Every update's loss is kept, which is
how the loss noise of stochastic and mini-batch descent is measured.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

# The task's loss and the metric a person reads, by task.
LOSSES = {"classification": "sparse_categorical_crossentropy", "regression": "mean_squared_error"}
METRICS = {"classification": "accuracy", "regression": "mae"}
EVAL_CHUNK = 8192  # rows per step when validating or testing: bounds memory on large data


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
    compile_seconds: float = 0.0
    peak_memory_mb: float = float("nan")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, task: str) -> keras.Model:
    """Step 3 of the Keras workflow: loss, optimizer and metrics for the task."""
    model.compile(loss=LOSSES[task], optimizer=optimizer, metrics=[METRICS[task]])
    return model


def fit_variant(
    model: keras.Model,
    data: Arrays,
    batch_size: int,
    epochs: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    seed: int = 0,
) -> FitResult:
    """Train a compiled model for `epochs` passes, recording each epoch; stop early once the loss is not finite.

    Each epoch visits the training rows in a new order drawn from `seed`. Per epoch it records the loss
    and metric on the training rows (averaged over the epoch's updates, as Keras' fit reports them) and
    on the validation rows, the epoch's seconds, the updates so far, and `loss_noise` (see loss_noise).
    """
    task = _task(model)
    weights = model.trainable_variables
    x, y = tf.convert_to_tensor(data.x_train), tf.convert_to_tensor(data.y_train)
    n = len(data.y_train)
    batch_size = max(1, min(batch_size, n))
    run_epoch = _epoch_function(model, task, batch_size, n)
    validate = _eval_function(model, task)
    x_val, y_val = data.x_val, data.y_val
    if len(y_val):
        x_val, y_val = tf.convert_to_tensor(x_val), tf.convert_to_tensor(y_val)  # once, not every epoch
    callbacks = callbacks or []
    for callback in callbacks:
        callback.set_model(model)
    rng = np.random.default_rng(seed)
    result, previous = FitResult(), np.array([np.nan, np.nan])  # the last two updates' losses so far
    model.optimizer.build(weights)  # its state exists before the first epoch: not counted as training memory
    device = _memory_device()
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        order = tf.convert_to_tensor(rng.permutation(n).astype(np.int32))
        base = _reset_memory(device)
        started = time.perf_counter()
        losses, loss_sum, metric_sum = run_epoch(x, y, order)
        step_losses = losses.numpy()  # waits for the epoch to finish
        train_time = time.perf_counter() - started
        result.peak_memory_mb = float(np.fmax(result.peak_memory_mb, _peak_memory(device, base)))
        if epoch == 0:
            result.compile_seconds = train_time  # tracing + compiling + the first epoch's updates
        record = {"loss": float(loss_sum) / n, METRICS[task]: float(metric_sum) / n}
        record.update(_metric_names(task, _evaluate(validate, x_val, y_val), prefix="val_"))
        recent = np.concatenate([previous, step_losses])
        noise = loss_noise(recent)
        if math.isfinite(noise):
            record["loss_noise"] = noise
        previous = recent[-2:]
        result.updates += len(step_losses)
        result.train_seconds += train_time
        record.update(epoch_train_seconds=train_time, updates=float(result.updates))
        for callback in callbacks:
            callback.on_epoch_end(epoch, record)
        record["epoch_seconds"] = time.perf_counter() - started
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        if not math.isfinite(record["loss"]) or not np.all(np.isfinite(step_losses)):
            result.diverged = True
            break
    return result


def loss_noise(losses: np.ndarray) -> float:
    """The spread of per-update losses around their own trend: sqrt(mean(second differences^2) / 6).

    For losses that are a smooth trend plus independent noise of standard deviation s, this is s: the
    trend (what descent learns) cancels in the second differences, the noise does not. NaN with fewer
    than three finite losses.
    """
    second = np.diff(losses, n=2)
    second = second[np.isfinite(second)]
    return float(np.sqrt(np.mean(second**2) / 6)) if len(second) else math.nan


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss and task metric on held-out rows."""
    task = _task(model)
    return _metric_names(task, _evaluate(_eval_function(model, task), x, y))


def _task(model: keras.Model) -> str:
    return next(task for task, loss in LOSSES.items() if loss == model.loss)


def _metric_names(task: str, sums: tuple[float, float] | None, prefix: str = "") -> dict[str, float]:
    if sums is None:
        return {}
    return {f"{prefix}{METRICS[task]}": sums[1], f"{prefix}loss": sums[0]}  # the metric a person reads first


def _evaluate(function: Callable, x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor) -> tuple[float, float] | None:
    if len(y) == 0:
        return None
    loss_sum, metric_sum = function(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
    return float(loss_sum) / len(y), float(metric_sum) / len(y)


def _row_scores(task: str, loss: Callable, y: tf.Tensor, predicted: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-row loss and per-row metric (1/0 for a right/wrong class, or the absolute error)."""
    if task == "classification":
        hit = tf.equal(tf.argmax(predicted, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
        return loss(y, predicted), tf.cast(hit, tf.float32)
    flat = tf.reshape(predicted, [-1])  # one output unit: (rows, 1) -> (rows,), like the target
    return loss(y, flat), tf.abs(tf.cast(y, flat.dtype) - flat)


def _epoch_function(model: keras.Model, task: str, batch_size: int, n: int) -> Callable:
    """One compiled call: every update of an epoch, rows taken in the given order."""
    loss = keras.losses.get(model.loss)
    optimizer, steps = model.optimizer, math.ceil(n / batch_size)
    weights = model.trainable_variables

    # autograph=False and an explicit while loop: tracing is paid once per variant, and autograph's
    # conversion of every Keras call inside the loop would make it several times slower.
    @tf.function(autograph=False)
    def run_epoch(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        def update(step: tf.Tensor, losses: tf.TensorArray, loss_sum: tf.Tensor, metric_sum: tf.Tensor) -> tuple:
            rows = order[step * batch_size : (step + 1) * batch_size]
            xb, yb = tf.gather(x, rows), tf.gather(y, rows)
            with tf.GradientTape() as tape:
                predicted = model(xb, training=True)
                row_loss, row_metric = _row_scores(task, loss, yb, predicted)
                value = tf.reduce_mean(row_loss)
                if model.losses:  # weight penalties, when a layer has a regularizer
                    value += tf.add_n(model.losses)
            optimizer.apply_gradients(zip(tape.gradient(value, weights), weights, strict=True))
            return (
                step + 1,
                losses.write(step, tf.cast(value, tf.float32)),
                loss_sum + tf.cast(tf.reduce_sum(row_loss), tf.float32),
                metric_sum + tf.reduce_sum(row_metric),
            )

        start = (tf.constant(0), tf.TensorArray(tf.float32, size=steps), tf.constant(0.0), tf.constant(0.0))
        # parallel_iterations=1: one update at a time, as the maths says (and as memory is measured)
        _, losses, loss_sum, metric_sum = tf.while_loop(
            lambda step, *_: step < steps, update, start, parallel_iterations=1
        )
        return losses.stack(), loss_sum, metric_sum

    return run_epoch


def _eval_function(model: keras.Model, task: str) -> Callable:
    """One compiled call: summed loss and metric over all rows, EVAL_CHUNK rows at a time (one per model)."""
    if model in _EVAL:
        return _EVAL[model]
    loss = keras.losses.get(model.loss)
    spec = [
        tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32),
        tf.TensorSpec([None], tf.int32 if task == "classification" else tf.float32),
    ]

    @tf.function(autograph=False, input_signature=spec)  # any number of rows: traced once
    def run(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def add(start: tf.Tensor, loss_sum: tf.Tensor, metric_sum: tf.Tensor) -> tuple:
            xb, yb = x[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
            row_loss, row_metric = _row_scores(task, loss, yb, model(xb, training=False))
            return (
                start + EVAL_CHUNK,
                loss_sum + tf.cast(tf.reduce_sum(row_loss), tf.float32),
                metric_sum + tf.reduce_sum(row_metric),
            )

        n = tf.shape(y)[0]
        _, loss_sum, metric_sum = tf.while_loop(
            lambda start, *_: start < n, add, (tf.constant(0), tf.constant(0.0), tf.constant(0.0))
        )
        return loss_sum, metric_sum

    _EVAL[model] = run
    return run


_EVAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memory_device() -> str:
    """The device whose allocator TensorFlow trains on: the first GPU when there is one."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name.removeprefix("/device:") if gpus else "CPU:0"


def _reset_memory(device: str) -> float:
    try:
        tf.config.experimental.reset_memory_stats(device)
        return float(tf.config.experimental.get_memory_info(device)["current"])
    except (ValueError, RuntimeError):  # an allocator that keeps no statistics
        return float("nan")


def _peak_memory(device: str, base: float) -> float:
    """MiB the allocator held at its peak during an epoch's updates, above what it held before (weights, data)."""
    try:
        return (tf.config.experimental.get_memory_info(device)["peak"] - base) / 2**20
    except (ValueError, RuntimeError):
        return float("nan")
