"""The TensorFlow graphs training runs: an epoch's updates, evaluation, and the allocator's memory statistics.

Each is traced once per model (autograph off, explicit while loops), so a batch size of 1 pays no Python
per update and a sweep pays tracing once per variant, whatever the number of learning rates it tries.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

EVAL_CHUNK = 8192  # rows per step when validating or testing: bounds memory on large data


def snapshot(model: keras.Model) -> list[np.ndarray]:
    """Values of the model's variables (weights, statistics, seed states), its optimizer's, learning rate last."""
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    state = [v.numpy() for v in model.variables] + [v.numpy() for v in optimizer.variables if v is not rate]
    return [*state, rate.numpy()]


def restore(model: keras.Model, state: list[np.ndarray]) -> None:
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    variables = list(model.variables) + [v for v in optimizer.variables if v is not rate] + [rate]
    for variable, value in zip(variables, state, strict=True):
        variable.assign(value)


def evaluate_sums(
    function: Callable, x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor
) -> tuple[float, float] | None:
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


def steps_function(model: keras.Model, task: str) -> Callable:
    """One compiled call: updates start..stop-1 of an epoch, rows taken in the given order, `batch_size` rows each.

    Traced once per model and optimizer, whatever the batch size (an argument): a process that trains many
    variants of one network pays it once per optimizer.
    """
    cached = getattr(model.optimizer, "_descent_steps", None)  # an optimizer is built for one model's weights
    if cached is not None and cached[0] == task:
        return cached[1]
    loss = keras.losses.get(model.loss)
    optimizer, weights = model.optimizer, model.trainable_variables

    # autograph=False and an explicit while loop: tracing is paid once per model, and autograph's
    # conversion of every Keras call inside the loop would make it several times slower.
    @tf.function(autograph=False)
    def run_steps(
        x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, start: tf.Tensor, stop: tf.Tensor, batch_size: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
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
                losses.write(step - start, tf.cast(value, tf.float32)),
                loss_sum + tf.cast(tf.reduce_sum(row_loss), tf.float32),
                metric_sum + tf.reduce_sum(row_metric),
            )

        first = (
            start,
            tf.TensorArray(tf.float32, size=stop - start, element_shape=[]),
            tf.constant(0.0),
            tf.constant(0.0),
        )
        # parallel_iterations=1: one update at a time, as the maths says (and as memory is measured)
        _, losses, loss_sum, metric_sum = tf.while_loop(
            lambda step, *_: step < stop, update, first, parallel_iterations=1
        )
        return losses.stack(), loss_sum, metric_sum

    # Kept on the optimizer it captures: both live as long as the optimizer is kept, and no longer.
    optimizer._descent_steps = (task, run_steps)
    return run_steps


def eval_function(model: keras.Model, task: str) -> Callable:
    """One compiled call: summed loss and metric over all rows, EVAL_CHUNK rows at a time.

    The graph takes the weights' values as inputs (Keras' stateless call), so it is traced once per architecture
    and process: every variant of a sweep evaluates with the first one's.
    """
    graph = _eval_graph(model, task)

    def run(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return graph(
            [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], x, y
        )

    return run


def _eval_graph(model: keras.Model, task: str) -> Callable:
    key = (architecture(model), task, str(model.loss))
    if key in _EVAL:
        return _EVAL[key]
    loss = keras.losses.get(model.loss)
    spec = [
        [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables],
        [tf.TensorSpec(v.shape, v.dtype) for v in model.non_trainable_variables],
        tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32),
        tf.TensorSpec([None], tf.int32 if task == "classification" else tf.float32),
    ]

    @tf.function(autograph=False, input_signature=spec)  # any number of rows: traced once
    def run(weights: list, others: list, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def add(start: tf.Tensor, loss_sum: tf.Tensor, metric_sum: tf.Tensor) -> tuple:
            xb, yb = x[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
            predicted, _ = model.stateless_call(weights, others, xb, training=False)
            row_loss, row_metric = _row_scores(task, loss, yb, predicted)
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

    while len(_EVAL) >= 8:  # a handful of architectures per process at most; drop the oldest
        _EVAL.pop(next(iter(_EVAL)))
    _EVAL[key] = run
    return run


_EVAL: dict[tuple, Callable] = {}


def architecture(model: keras.Model) -> str:
    """The network's config and weight shapes as text: equal for every model a graph of weight values can serve.

    A model Keras cannot describe (a subclass without get_config) is its own architecture.
    """
    if model not in _ARCHITECTURES:
        try:
            config = json.dumps(model.get_config(), sort_keys=True, default=repr)
        except (NotImplementedError, TypeError, ValueError):
            config = f"model-{id(model)}"
        shapes = [[(tuple(v.shape), str(v.dtype)) for v in vs] for vs in (model.trainable_variables, model.variables)]
        _ARCHITECTURES[model] = f"{config} {shapes}"
    return _ARCHITECTURES[model]


_ARCHITECTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def memory_device() -> str:
    """The device whose allocator TensorFlow trains on: the first GPU when there is one."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name.removeprefix("/device:") if gpus else "CPU:0"


def reset_memory(device: str) -> float:
    try:
        tf.config.experimental.reset_memory_stats(device)
        return float(tf.config.experimental.get_memory_info(device)["current"])
    except (ValueError, RuntimeError):  # an allocator that keeps no statistics
        return float("nan")


def peak_memory(device: str, base: float) -> float:
    """MiB the allocator held at its peak during an epoch's updates, above what it held before (weights, data)."""
    try:
        return (tf.config.experimental.get_memory_info(device)["peak"] - base) / 2**20
    except (ValueError, RuntimeError):
        return float("nan")
