"""Measure what the textbook claims during training: gradient noise scale, per-layer gradient and update norms.

The gradient noise scale follows McCandlish et al. (2018), "An Empirical Model of Large-Batch Training",
appendix A: from squared norms of mini-batch gradients at two batch sizes b < B,
    |G|^2 ~ (B |G_B|^2 - b |G_b|^2) / (B - b)        S ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)
are unbiased estimates of the true gradient's squared norm and of tr(Sigma), the summed per-example
gradient variance; their ratio B_simple = S / |G|^2 is the batch size beyond which bigger batches
mostly buy less noise rather than more progress per update (the "critical batch size").
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def noise_scale(small_sq: float, big_sq: float, small: int, big: int) -> tuple[float, float]:
    """Unbiased (|G|^2, tr(Sigma)) from mean squared gradient norms at batch sizes small < big."""
    g2 = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1 / small - 1 / big)
    return g2, trace


def exact_noise_scale(per_example: np.ndarray) -> float:
    """B_simple from per-example gradients (rows): tr(Sigma) / |G|^2, for checking the estimator."""
    mean = per_example.mean(axis=0)
    trace = float(((per_example - mean) ** 2).sum(axis=1).mean())
    return trace / float((mean**2).sum())


def gradients(model: keras.Model, loss: Callable, x: np.ndarray, y: np.ndarray) -> list[tf.Tensor]:
    """Gradient of the mean loss over rows (x, y) with respect to every trainable weight."""
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(y, model(x, training=False)))  # a Keras loss function returns one per row
    return tape.gradient(value, model.trainable_variables)


def squared_norm(grads: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])


def mean_squared_norm(
    model: keras.Model, loss: Callable, x: np.ndarray, y: np.ndarray, size: int, draws: int, rng: np.random.Generator
) -> float:
    """Mean of |g_b|^2 over `draws` random batches of `size` rows."""
    rows = np.stack([rng.choice(len(x), size=size, replace=False) for _ in range(draws)])
    rows = tf.constant(rows.astype(np.int32))
    return float(_Compiled(model, loss).measure(tf.constant(x), tf.constant(y), rows, rows)[1])


class _Compiled:
    """The probe's gradient computations as TensorFlow graphs, traced once per model."""

    def __init__(self, model: keras.Model, loss: Callable) -> None:
        self.model = model

        # autograph=False and one function: it traces once per variant, and tracing (autograph's above
        # all) would otherwise cost more than all the epochs' measurements together.
        @tf.function(autograph=False, reduce_retracing=True)
        def measure(x: tf.Tensor, y: tf.Tensor, small: tf.Tensor, big: tf.Tensor) -> tuple[tf.Tensor, ...]:
            norms = tf.stack([tf.norm(g) for g in gradients(model, loss, x, y)])
            return norms, mean_sq(x, y, small), mean_sq(x, y, big)

        def mean_sq(x: tf.Tensor, y: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
            def add(i: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                grads = gradients(model, loss, tf.gather(x, rows[i]), tf.gather(y, rows[i]))
                return i + 1, total + tf.cast(squared_norm(grads), tf.float32)

            draws = tf.shape(rows)[0]
            _, total = tf.while_loop(lambda i, _: i < draws, add, (tf.constant(0), tf.constant(0.0)))
            return total / tf.cast(draws, tf.float32)

        self.measure = measure


class GradientProbe(keras.callbacks.Callback):
    """At each epoch's end: noise scale estimate, per-layer gradient norms and per-layer update norms.

    Costs 2 x `draws` + 1 extra gradient evaluations per epoch (compiled); it changes no weight and no
    random state that training uses (it has its own generator). The measurements are added to the
    epoch's `logs` (so they are recorded with the epoch) and, when given, passed to `on_measure`.
    """

    def __init__(
        self,
        loss: Callable,
        x: np.ndarray,
        y: np.ndarray,
        on_measure: Callable[[int, dict[str, float]], None] | None = None,
        small: int = 8,
        big: int = 256,
        draws: int = 4,
        smoothing: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.loss, self.x, self.y, self.on_measure = loss, tf.constant(x), tf.constant(y), on_measure
        self.n = len(x)
        self.big = min(big, self.n)
        self.small = min(small, max(1, self.big // 4))
        self.draws, self.smoothing = draws, smoothing
        self.rng = np.random.default_rng(seed)
        self._g2 = self._trace = None
        self._start: list[np.ndarray] = []
        self._compiled: _Compiled | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = [np.array(v.numpy()) for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._compiled is None or self._compiled.model is not self.model:
            self._compiled = _Compiled(self.model, self.loss)
        record: dict[str, float] = {}
        small, big = self._rows(self.small), self._rows(self.big)
        norms, small_sq, big_sq = (t.numpy() for t in self._compiled.measure(self.x, self.y, small, big))
        for variable, norm, start in zip(self.model.trainable_variables, norms, self._start, strict=True):
            # "grad_norm/hidden_1/kernel": MLflow's chart view groups metrics by the part before "/".
            name = variable.path.removeprefix(f"{self.model.name}/")
            record[f"grad_norm/{name}"] = float(norm)
            record[f"update_norm/{name}"] = float(np.linalg.norm(variable.numpy() - start))
        if self.small < self.big:
            g2, trace = noise_scale(float(small_sq), float(big_sq), self.small, self.big)
            # Smooth numerator and denominator separately (the paper's advice), then divide.
            a = self.smoothing
            self._g2 = g2 if self._g2 is None else a * self._g2 + (1 - a) * g2
            self._trace = trace if self._trace is None else a * self._trace + (1 - a) * trace
            # Early on, or on tiny data, the estimates can come out non-positive: not measurable, not zero.
            if self._g2 > 0 and self._trace > 0 and np.isfinite(self._g2) and np.isfinite(self._trace):
                record["noise_scale"] = self._trace / self._g2
        if logs is not None:
            logs.update(record)
        if self.on_measure is not None:
            self.on_measure(epoch + 1, record)

    def _rows(self, size: int) -> tf.Tensor:
        """`draws` random batches of `size` rows (without replacement within a batch)."""
        return tf.constant(np.stack([self.rng.choice(self.n, size=size, replace=False) for _ in range(self.draws)]))
