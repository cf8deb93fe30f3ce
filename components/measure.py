"""Measure what the textbook claims during training: gradient noise scale, per-layer gradient and update norms.

The noise scale (components/noise.py) needs the squared norms of mean gradients over many small groups of the
probe rows. They are computed in one vectorised call (`tf.vectorized_map` over the groups: every group's gradient
at once, no Python loop), in passes whose gradients fit `memory_mb`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from components.noise import NoiseScale, groups_per_pass, noise_scale, partitions

METHODS = ("auto", "exact", "two_batch")


def gradients(model: keras.Model, loss: Callable, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
    """Gradient of the mean loss over rows (x, y) with respect to every trainable weight."""
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(y, model(x, training=False)))  # a Keras loss function returns one per row
    return tape.gradient(value, model.trainable_variables)


def squared_norm(grads: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads])


class _Compiled:
    """The probe's gradient computations as TensorFlow graphs of the weights' values (Keras' stateless call).

    The weights are inputs, not captured variables, so one trace serves every model of the same architecture:
    a sweep's variants share it and pay the tracing (more than all of a variant's measurements) once per process.
    """

    def __init__(self, model: keras.Model, loss: Callable, x: tf.Tensor, y: tf.Tensor) -> None:
        self.model = model  # the first model of its architecture: its layers trace the graphs
        values = [[tf.TensorSpec(v.shape, v.dtype) for v in vs] for vs in (_trainable(model), _others(model))]
        data = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in (x, y)]
        rows = tf.TensorSpec([None, None], tf.int32)

        def gradients_of(weights: list, others: list, x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(weights)
                predicted, _ = model.stateless_call(weights, others, x, training=False)
                value = tf.reduce_mean(loss(y, predicted))
            return tape.gradient(value, weights)

        # autograph=False and fixed signatures: each traces once (single rows and groups alike).
        @tf.function(autograph=False, input_signature=[*values, *data])
        def layer_norms(weights: list, others: list, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            return tf.stack([tf.norm(g) for g in gradients_of(weights, others, x, y)])

        @tf.function(autograph=False, input_signature=[*values, *data, rows])
        def group_sq(weights: list, others: list, x: tf.Tensor, y: tf.Tensor, groups: tf.Tensor) -> tf.Tensor:
            def one(group: tf.Tensor) -> tf.Tensor:
                return squared_norm(gradients_of(weights, others, tf.gather(x, group), tf.gather(y, group)))

            return tf.vectorized_map(one, groups)

        self._layer_norms, self._group_sq = layer_norms, group_sq

    def layer_norms(self, model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> np.ndarray:
        return self._layer_norms(_trainable(model), _others(model), x, y).numpy().astype(np.float64)

    def group_sq(self, model: keras.Model, x: tf.Tensor, y: tf.Tensor, groups: np.ndarray) -> np.ndarray:
        return self._group_sq(_trainable(model), _others(model), x, y, groups).numpy()


_GRAPHS: dict[str, _Compiled] = {}  # by architecture, loss and probe shapes; the latest few


def _graphs(model: keras.Model, loss: Callable, x: tf.Tensor, y: tf.Tensor) -> _Compiled:
    """The compiled graphs for `model`: shared with every earlier model of the very same configuration."""
    try:
        # The architecture alone (get_config, not to_json, which holds the optimizer and its learning rate):
        # every variant of a sweep shares the graphs, whatever its optimizer.
        parts = [model.get_config(), keras.losses.serialize(loss), [(str(t.dtype), list(t.shape[1:])) for t in (x, y)]]
        key = json.dumps(parts, default=str, sort_keys=True)
    except (TypeError, ValueError, NotImplementedError):  # a model or loss Keras cannot describe: not shared
        return _Compiled(model, loss, x, y)
    if key not in _GRAPHS:
        while len(_GRAPHS) >= 4:
            _GRAPHS.pop(next(iter(_GRAPHS)))
        _GRAPHS[key] = _Compiled(model, loss, x, y)
    return _GRAPHS[key]


def _trainable(model: keras.Model) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(v) for v in model.trainable_variables]


def _others(model: keras.Model) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(v) for v in model.non_trainable_variables]


class GradientProbe(keras.callbacks.Callback):
    """At each epoch's end: per-layer gradient and update norms; the gradient noise scale at epochs 1, 2, 4, ...
    and the last of `epochs` (evenly spaced on the log scale of epochs that training curves need).

    `method`: exact = from every probe row's own gradient (the true value for those rows, standard error 0);
    two_batch = estimated from `draws` random splits of the probe rows into batches of `small` rows and the
    gradient of all of them (unbiased; its standard error is the spread of the draws); auto = two_batch, and exact
    at the last epoch when the per-example gradients of all probe rows fit `memory_mb`.
    `population`: the training rows the probe rows were drawn from (None: the probe rows are all of them).

    It changes no weight and no random state that training uses (it has its own generator). The measurements are
    added to the epoch's `logs` (so they are recorded with the epoch) and, when given, passed to `on_measure`.
    An epoch whose noise scale cannot be measured logs none (never an earlier epoch's) and is counted in
    `noise_scale_unmeasured`.
    """

    def __init__(
        self,
        loss: Callable,
        x: np.ndarray,
        y: np.ndarray,
        on_measure: Callable[[int, dict[str, float]], None] | None = None,
        method: str = "auto",
        small: int = 8,
        draws: int = 3,
        memory_mb: float = 256.0,
        population: int | None = None,
        epochs: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"noise method {method!r} is not one of {', '.join(METHODS)}")
        self.loss, self.x, self.y, self.on_measure = loss, tf.constant(x), tf.constant(y), on_measure
        self.n = len(x)
        self.method, self.draws, self.memory_mb, self.epochs = method, draws, memory_mb, epochs
        self.small = max(1, min(small, self.n // 2))
        self.population = population if population and population > self.n else None
        self.rng = np.random.default_rng(seed)
        self.unmeasured = 0
        self.last: NoiseScale | None = None
        self._start: list[np.ndarray] = []
        self._compiled: _Compiled | None = None
        self._model: keras.Model | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = [np.array(v.numpy()) for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        record: dict[str, float] = {}
        norms = self._graphs().layer_norms(self.model, self.x, self.y)
        for variable, norm, start in zip(self.model.trainable_variables, norms, self._start, strict=True):
            # "grad_norm/hidden_1/kernel": MLflow's chart view groups metrics by the part before "/".
            name = variable.path.removeprefix(f"{self.model.name}/")
            record[f"grad_norm/{name}"] = float(norm)
            record[f"update_norm/{name}"] = float(np.linalg.norm(variable.numpy() - start))
        if self.noise_at(epoch):
            self.last = self.measure_noise(self.exact_at(epoch), mean_sq=float(np.sum(norms**2)))
            if self.last.measurable:
                record["noise_scale"] = self.last.value
                record["noise_scale_se"] = self.last.se
            else:
                self.unmeasured += 1
            record["noise_scale_unmeasured"] = float(self.unmeasured)
        if logs is not None:
            logs.update(record)
        if self.on_measure is not None:
            self.on_measure(epoch + 1, record)

    def noise_at(self, epoch: int) -> bool:
        """Whether the noise scale is measured at the end of `epoch` (0-based): epochs 1, 2, 4, 8, ... and the last
        (every epoch when the number of epochs is not known)."""
        done = epoch + 1
        return self.epochs is None or done == self.epochs or done & (done - 1) == 0

    def exact_at(self, epoch: int) -> bool:
        """Whether the noise scale at the end of `epoch` (0-based) is computed exactly."""
        if self.method == "exact":
            return True
        if self.method == "two_batch" or self.epochs is None or epoch + 1 != self.epochs:
            return False
        return self.n <= groups_per_pass(self._parameters(), self.memory_mb)

    def measure_noise(self, exact: bool, mean_sq: float | None = None) -> NoiseScale:
        """The noise scale at the current weights (`mean_sq`: |mean gradient of all probe rows|^2, when known)."""
        compiled = self._graphs()
        if mean_sq is None:
            mean_sq = float(np.sum(compiled.layer_norms(self.model, self.x, self.y) ** 2))
        group, draws = (1, 1) if exact else (self.small, self.draws)
        if exact:
            groups = np.arange(self.n, dtype=np.int32).reshape(-1, 1)
        else:
            groups = partitions(self.n, group, draws, self.rng)
        step = groups_per_pass(self._parameters(), self.memory_mb)
        passes = range(0, len(groups), step)
        sq = np.concatenate([compiled.group_sq(self.model, self.x, self.y, groups[i : i + step]) for i in passes])
        return noise_scale(sq.reshape(draws, -1), mean_sq, group, self.n, self.population, exact=exact)

    def _graphs(self) -> _Compiled:
        if self._compiled is None or self._model is not self.model:
            self._compiled, self._model = _graphs(self.model, self.loss, self.x, self.y), self.model
        return self._compiled

    def _parameters(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
