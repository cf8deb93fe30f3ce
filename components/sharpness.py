"""How sharp the minimum is where a variant ends: the Hessian's top eigenvalue and Keskar's epsilon-sharpness.

Keskar et al. (2016), "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima": large
batches tend to end in sharp minima, where the training loss rises steeply around the weights, and those
generalize worse. Both numbers are of the loss exactly as training optimises it (mean per-row loss plus the
layers' penalties, training=False so dropout adds no randomness) on given rows. The loss is evaluated as a pure
function of weight values (Keras' stateless_call), so the model's weights are never written to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from components.graphs import architecture

CHUNK_ROWS = 4096  # rows per step of the compiled loops: bounds memory on large samples, changes no result
# Projected ascent moves each weight by this share of its box per step, divided by the steps (Madry et al. 2018's
# 2.5 epsilon / steps): enough to cross the box from any start, small enough to follow a curved loss.
ASCENT_REACH = 2.5


@dataclass(frozen=True)
class SharpnessSettings:
    """How hard to look; the defaults, and why, are conf/default.yaml's `measure.sharpness_*`."""

    tolerance: float  # power iteration stops when the estimate changes by less than this share of itself
    iterations: int  # at most this many Hessian-vector products (per pass; a second pass if the top one is < 0)
    epsilon: float  # the box: |delta_i| <= epsilon * (|w_i| + 1)
    steps: int  # projected gradient ascent steps inside the box
    seed: int  # the power iteration's start vector and the ascent's start point
    chunk_rows: int = CHUNK_ROWS

    @classmethod
    def from_measure(cls, measure: Any, seed: int) -> SharpnessSettings:
        """From the config's `measure` section (pipelines.config.MeasureConfig)."""
        return cls(
            tolerance=measure.sharpness_tolerance,
            iterations=measure.sharpness_iterations,
            epsilon=measure.sharpness_epsilon,
            steps=measure.sharpness_steps,
            seed=seed,
        )


def measure_sharpness(
    model: keras.Model, loss: Callable | str, x: np.ndarray, y: np.ndarray, settings: SharpnessSettings
) -> dict[str, float]:
    """`sharpness_top_eigenvalue` and `sharpness_epsilon` of the model's loss on rows (x, y); NaN if not finite.

    `loss` is the per-row Keras loss training uses (a name, a function such as keras.losses.get(name), or a
    keras.losses.Loss); for regression, y is the standardised target the network was trained on.
    """
    if len(y) == 0:
        return {"sharpness_top_eigenvalue": math.nan, "sharpness_epsilon": math.nan}
    compiled, inputs = _compiled(model, loss, x, y, settings.chunk_rows)
    return {
        "sharpness_top_eigenvalue": _top_eigenvalue(compiled, inputs, settings),
        "sharpness_epsilon": _epsilon_sharpness(compiled, inputs, settings),
    }


def top_eigenvalue(
    model: keras.Model, loss: Callable | str, x: np.ndarray, y: np.ndarray, settings: SharpnessSettings
) -> float:
    """The largest eigenvalue of the loss's Hessian with respect to the trainable weights: the curvature along
    the direction in which the loss bends up most steeply.

    Power iteration on Hessian-vector products (double backpropagation: no Hessian is formed) converges to the
    eigenvalue of largest magnitude. Near a minimum that is the top one. Where it comes out negative (near a
    saddle or a maximum whose downward curvature outweighs any upward one), a second pass on H - lambda I,
    whose eigenvalues are all >= 0, finds the top one. So the number is always the largest (most positive)
    eigenvalue, as sharpness means: how fast the loss can rise, never how fast it falls.
    """
    return _top_eigenvalue(*_compiled(model, loss, x, y, settings.chunk_rows), settings)


def epsilon_sharpness(
    model: keras.Model, loss: Callable | str, x: np.ndarray, y: np.ndarray, settings: SharpnessSettings
) -> float:
    """Keskar et al.'s epsilon-sharpness: 100 x (max loss in the box - loss) / (1 + loss), in percent.

    The box holds every weight within epsilon * (|w_i| + 1) of its value. The maximum is searched by projected
    gradient ascent: a seeded random start in the box (at a minimum the gradient is 0 and ascent from the
    weights themselves would not move), then `steps` signed gradient steps (the steepest ascent in a box), each
    clipped back into it; the largest loss seen counts. 0 where the loss is flat in the box.
    """
    return _epsilon_sharpness(*_compiled(model, loss, x, y, settings.chunk_rows), settings)


def _top_eigenvalue(compiled: _Compiled, inputs: tuple, settings: SharpnessSettings) -> float:
    start = tf.constant(np.random.default_rng(settings.seed).standard_normal(compiled.size), tf.float32)
    limits = (tf.constant(settings.tolerance, tf.float32), tf.constant(settings.iterations, tf.int32))
    first = float(compiled.run("power", *inputs, start, tf.constant(0.0), *limits)[0])
    if not first < 0:
        return first
    return float(compiled.run("power", *inputs, start, tf.constant(first, tf.float32), *limits)[0])


def _epsilon_sharpness(compiled: _Compiled, inputs: tuple, settings: SharpnessSettings) -> float:
    start = tf.constant(np.random.default_rng(settings.seed).uniform(-1, 1, compiled.size), tf.float32)
    reach = tf.constant(min(1.0, ASCENT_REACH / max(settings.steps, 1)), tf.float32)
    epsilon, steps = tf.constant(settings.epsilon, tf.float32), tf.constant(settings.steps, tf.int32)
    base, highest = (float(t) for t in compiled.run("ascend", *inputs, start, epsilon, reach, steps))
    if not (math.isfinite(base) and math.isfinite(highest)):
        return math.nan
    return 100 * (highest - base) / (1 + base)


class SharpnessProbe(keras.callbacks.Callback):
    """At each epoch's end, adds `sharpness_top_eigenvalue` and `sharpness_epsilon` to the epoch's logs."""

    def __init__(self, loss: Callable | str, x: np.ndarray, y: np.ndarray, settings: SharpnessSettings) -> None:
        super().__init__()
        self.loss, self.x, self.y, self.settings = loss, x, y, settings

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        measured = measure_sharpness(self.model, self.loss, self.x, self.y, self.settings)
        if logs is not None:
            logs.update({k: v for k, v in measured.items() if math.isfinite(v)})


class _Compiled:
    """The two searches as compiled graphs, made once per network architecture: the weights are inputs, not
    captured variables, so every variant of a sweep (same network, new weights) reuses the first one's."""

    def __init__(self, model: keras.Model, loss: Callable | str, chunk_rows: int, x: tf.Tensor, y: tf.Tensor) -> None:
        per_row = loss.call if isinstance(loss, keras.losses.Loss) else keras.losses.get(loss)  # one value per row
        shapes = [tuple(w.shape) for w in model.trainable_variables]
        sizes = [math.prod(s) for s in shapes]
        self.size = sum(sizes)

        def unflatten(flat: tf.Tensor) -> list[tf.Tensor]:
            return [tf.reshape(part, s) for part, s in zip(tf.split(flat, sizes), shapes, strict=True)]

        def loss_of(w: tf.Tensor, state: list[tf.Tensor], xb: tf.Tensor, yb: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
            """The rows' part of the training loss: the sum of each row's loss x its share (1/n, 0 for a repeat),
            plus the weight penalties (regularizers) x the rows' total share, so the chunks add up to them once."""
            out, _, penalties = model.stateless_call(unflatten(w), state, xb, training=False, return_losses=True)
            value = tf.reduce_sum(tf.cast(per_row(yb, out), tf.float32) * share)
            if penalties:
                value += tf.add_n([tf.cast(p, tf.float32) for p in penalties]) * tf.reduce_sum(share)
            return value

        def over_chunks(part: Callable, x: tf.Tensor, y: tf.Tensor, zero: Any) -> Any:
            """The sum of part(x_chunk, y_chunk, share) over the rows, in chunks of at most chunk_rows rows."""
            n = x.shape[0]  # known when tracing
            if n <= chunk_rows:  # one chunk needs no loop
                return part(x, y, tf.fill([n], 1.0 / n))
            size = math.ceil(n / math.ceil(n / chunk_rows))  # equal chunks: one fixed size, traced once

            def add(start: tf.Tensor, total: Any) -> tuple:
                rows = start + tf.range(size)
                taken = tf.minimum(rows, n - 1)  # the last chunk may repeat the final row, counted 0 times
                share = tf.where(rows < n, 1.0 / n, 0.0)
                chunk = part(tf.gather(x, taken), tf.gather(y, taken), share)
                return start + size, tf.nest.map_structure(tf.add, total, chunk)

            return tf.while_loop(lambda start, _: start < n, add, (tf.constant(0), zero))[1]

        def hessian_times(v: tf.Tensor, w: tf.Tensor, state: list, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            def part(xb: tf.Tensor, yb: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
                at = tf.identity(w)  # made inside the loop body, so the derivatives are taken there
                with tf.GradientTape() as outer:  # double backpropagation: H v is the gradient of (gradient . v)
                    outer.watch(at)
                    with tf.GradientTape() as inner:
                        inner.watch(at)
                        value = loss_of(at, state, xb, yb, share)
                    along = tf.tensordot(inner.gradient(value, at), v, 1)
                return outer.gradient(along, at)

            return over_chunks(part, x, y, tf.zeros_like(v))

        def value_and_gradient(w: tf.Tensor, state: list, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            def part(xb: tf.Tensor, yb: tf.Tensor, share: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                at = tf.identity(w)
                with tf.GradientTape() as tape:
                    tape.watch(at)
                    value = loss_of(at, state, xb, yb, share)
                return value, tape.gradient(value, at)

            return over_chunks(part, x, y, (tf.constant(0.0), tf.zeros_like(w)))

        vector, real, count = tf.TensorSpec([self.size]), tf.TensorSpec([]), tf.TensorSpec([], tf.int32)
        common = [
            vector,
            [tf.TensorSpec(v.shape, v.dtype) for v in model.non_trainable_variables],
            tf.TensorSpec(x.shape, x.dtype),
            tf.TensorSpec(y.shape, y.dtype),
        ]

        def power(w: tf.Tensor, state: list, x: tf.Tensor, y: tf.Tensor, *search: tf.Tensor) -> tuple:
            """Power iteration on H - shift I from `start`: its Rayleigh quotient + shift, and the products made."""
            start, shift, tolerance, cap = search

            def step(i: tf.Tensor, v: tf.Tensor, estimate: tf.Tensor, done: tf.Tensor) -> tuple:
                product = hessian_times(v, w, state, x, y) - shift * v
                new = tf.tensordot(v, product, 1)  # v has unit length: the Rayleigh quotient
                size = tf.norm(product)
                done = (tf.abs(new - estimate) <= tolerance * tf.abs(new)) | (size == 0.0)
                return i + 1, tf.math.divide_no_nan(product, size), new, done

            loop = (tf.constant(0), tf.math.l2_normalize(start), tf.constant(math.nan), tf.constant(False))
            products, _, estimate, _ = tf.while_loop(lambda i, v, e, done: (i < cap) & ~done, step, loop)
            return estimate + shift, products

        def ascend(w: tf.Tensor, state: list, x: tf.Tensor, y: tf.Tensor, *search: tf.Tensor) -> tuple:
            """The loss at the weights and the highest loss projected gradient ascent finds in the box."""
            start, epsilon, reach, steps = search
            radius = epsilon * (tf.abs(w) + 1.0)

            # One loss evaluation per pass (one traced copy of the model): pass 0 at the weights themselves,
            # pass 1 at the random start, then one per ascent step.
            def step(i: tf.Tensor, delta: tf.Tensor, base: tf.Tensor, highest: tf.Tensor) -> tuple:
                value, grad = value_and_gradient(w + delta, state, x, y)
                ascended = tf.clip_by_value(delta + reach * radius * tf.sign(grad), -radius, radius)
                first = tf.equal(i, 0)
                delta = tf.where(first, start * radius, ascended)
                return i + 1, delta, tf.where(first, value, base), tf.maximum(highest, value)

            loop = (tf.constant(0), tf.zeros_like(start), tf.constant(math.nan), tf.constant(-math.inf))
            _, _, base, highest = tf.while_loop(lambda i, *_: i < steps + 2, step, loop)
            return base, highest

        # autograph=False with explicit loops, as in training: traced quickly, and once. Plain graphs, not XLA: a
        # sweep's worker keeps its network (components/networks.py) and never reseeds between variants, so nothing
        # drops them; on digits they measure a variant in ~30 ms, where XLA took ~80 ms after ~2 s of compiling.
        signature = [*common, vector, real, real, count]
        self.power = tf.function(power, autograph=False, input_signature=signature)
        self.ascend = tf.function(ascend, autograph=False, input_signature=signature)

    def run(self, search: str, *args: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Run `power` or `ascend`."""
        return getattr(self, search)(*args)


def _compiled(
    model: keras.Model, loss: Callable | str, x: np.ndarray, y: np.ndarray, chunk_rows: int
) -> tuple[_Compiled, tuple]:
    """The compiled searches for this model's architecture, and their first four arguments (weights, state, rows).

    Kept per process, keyed by what the graphs depend on: the network's config (layers, sizes, activations)
    and weight shapes, the loss, the rows' shapes and the chunk size; a model without a config gets its own.
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    key = (
        architecture(model),
        loss,  # a name, function or Loss object: kept alive by the key, so never mistaken for another
        chunk_rows,
        (x.dtype, tuple(x.shape), y.dtype, tuple(y.shape)),
    )
    compiled = _COMPILED.pop(key, None) or _Compiled(model, loss, chunk_rows, x, y)
    _COMPILED[key] = compiled  # most recent last
    while len(_COMPILED) > 8:  # a handful of architectures per process at most; drop the oldest
        _COMPILED.pop(next(iter(_COMPILED)))
    weights = tf.concat([tf.reshape(w.value, [-1]) for w in model.trainable_variables], axis=0)
    return compiled, (weights, [v.value for v in model.non_trainable_variables], x, y)


_COMPILED: dict[tuple, _Compiled] = {}
