"""Compile and fit one variant: the Keras workflow of loss, optimizer and metrics, then training.

Training runs compiled TensorFlow calls that each loop over many updates (an epoch, or the stretch
between two validation checks), so batch size 1 pays no Python overhead per update; one compiled model
trains every learning rate a variant tries. Every update's loss is kept, which is how the loss noise
of stochastic and mini-batch descent is measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from components.graphs import (
    eval_function,
    evaluate_sums,
    memory_device,
    peak_memory,
    reset_memory,
    restore,
    snapshot,
    steps_function,
)

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
    """One training run (one learning rate) of a model: per-epoch history, validation checks and totals."""

    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[dict[str, float]] = field(default_factory=list)  # after 2^k updates and every epoch's end
    diverged: bool = False
    train_seconds: float = 0.0  # the updates alone: no validation, measurement or compilation
    updates: int = 0
    compile_seconds: float = 0.0  # tracing and compiling, once per model, before the first update
    peak_memory_mb: float = float("nan")
    learning_rate: float = float("nan")
    tail: np.ndarray = field(default_factory=lambda: np.array([np.nan, np.nan]), repr=False)  # last 2 losses

    @property
    def epochs(self) -> int:
        return len(self.history)


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
    sample: tuple[np.ndarray, np.ndarray] | None = None,
) -> FitResult:
    """Train a compiled model for `epochs` passes at its optimizer's learning rate (see Trainer)."""
    trainer = Trainer(model, data, batch_size, callbacks=callbacks, seed=seed, sample=sample)
    return trainer.train(trainer.start(), epochs, on_epoch)


class Trainer:
    """A compiled model that trains any number of runs from the same initial weights, one learning rate each.

    The epoch function is traced once, whatever the number of runs: a run is the model's and optimizer's
    variables, swapped in when it trains on. Every run visits the rows in the same order (drawn per epoch
    from `seed`), so runs differ only in their learning rate. Per epoch a run records the loss and metric
    on the training rows (averaged over the epoch's updates, as Keras' fit reports them) and on the
    validation rows, the epoch's seconds, the updates so far and `loss_noise`; it checks the validation
    rows (and `sample`, a fixed sample of training rows) after 2^k updates and at every epoch's end.
    """

    def __init__(
        self,
        model: keras.Model,
        data: Arrays,
        batch_size: int,
        callbacks: list[keras.callbacks.Callback] | None = None,
        seed: int = 0,
        sample: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.model, self.task, self.seed = model, _task(model), seed
        self.x, self.y = as_tensor(data.x_train), as_tensor(data.y_train)
        self.n = len(data.y_train)
        self.batch_size = max(1, min(batch_size, self.n))
        self.steps = math.ceil(self.n / self.batch_size)
        self.val = _tensors(data.x_val, data.y_val)  # once, not every epoch
        self.sample = _tensors(*sample) if sample is not None else None
        self.callbacks = callbacks or []
        for callback in self.callbacks:
            callback.set_model(model)
        self.run_steps = steps_function(model, self.task)
        self.validate = eval_function(model, self.task)
        model.optimizer.build(model.trainable_variables)  # its state exists before training: not training memory
        self.initial = snapshot(model)
        self.device = memory_device()
        self.current: FitResult | None = None
        self.states: dict[int, list[np.ndarray]] = {}
        started = time.perf_counter()
        self._segment(tf.zeros([self.n], tf.int32), 0, 0)  # trace and compile now, without an update
        self._check(FitResult())
        self.compile_seconds = time.perf_counter() - started

    def start(self, learning_rate: float | None = None) -> FitResult:
        """A new run from the initial weights and a fresh optimizer, at `learning_rate` (default: the optimizer's)."""
        lr = float(self.model.optimizer.learning_rate) if learning_rate is None else learning_rate
        run = FitResult(compile_seconds=self.compile_seconds, learning_rate=lr)
        self.states[id(run)] = [*self.initial[:-1], np.asarray(lr, dtype=self.initial[-1].dtype)]
        return run

    def train(
        self, run: FitResult, epochs: int, on_epoch: Callable[[int, dict[str, float]], None] | None = None
    ) -> FitResult:
        """Train `run` on until it has `epochs` epochs, or until its loss is no longer finite."""
        self._switch(run)
        while run.epochs < epochs and not run.diverged:
            self._epoch(run, on_epoch)
        return run

    def range_test(self, rates: np.ndarray) -> np.ndarray:
        """The loss of each of len(rates) updates from the initial weights, the learning rate set anew each update."""
        run = self.start()
        self._switch(run)
        losses = []
        for i, lr in enumerate(rates):
            self.model.optimizer.learning_rate.assign(float(lr))
            epoch, step = divmod(i, self.steps)
            losses.append(float(self._segment(self._order(epoch), step, step + 1)[0][0]))
            if not math.isfinite(losses[-1]):
                break
        self.current = None
        self.states.pop(id(run), None)
        return np.array(losses + [math.nan] * (len(rates) - len(losses)))

    def use(self, run: FitResult) -> None:
        """Put `run`'s weights in the model (to evaluate or save it)."""
        self._switch(run)

    def release(self, run: FitResult) -> None:
        """Forget a run's weights (it will not train on)."""
        self.states.pop(id(run), None)
        if self.current is run:
            self.current = None

    def _switch(self, run: FitResult) -> None:
        if self.current is run:
            return
        if self.current is not None and id(self.current) in self.states:
            self.states[id(self.current)] = snapshot(self.model)
        restore(self.model, self.states[id(run)])
        self.current = run

    def _order(self, epoch: int) -> tf.Tensor:
        rng = np.random.default_rng([self.seed, epoch])
        return tf.convert_to_tensor(rng.permutation(self.n).astype(np.int32))

    def _segment(self, order: tf.Tensor, start: int, stop: int) -> tuple[tf.Tensor, float, float, float, float]:
        """Updates start..stop-1 of an epoch: (their losses, loss sum, metric sum, seconds, peak memory MiB)."""
        base = reset_memory(self.device)
        started = time.perf_counter()
        bounds = (tf.constant(start), tf.constant(stop), tf.constant(self.batch_size))
        losses, loss_sum, metric_sum = self.run_steps(self.x, self.y, order, *bounds)
        losses = losses.numpy()  # waits for the updates to finish
        seconds = time.perf_counter() - started
        return losses, float(loss_sum), float(metric_sum), seconds, peak_memory(self.device, base)

    def _epoch(self, run: FitResult, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        epoch = run.epochs
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch)
        order, started = self._order(epoch), time.perf_counter()
        parts, train_time, loss_sum, metric_sum, previous = [], 0.0, 0.0, 0.0, 0
        for stop in check_stops(run.updates, self.steps):
            losses, loss_part, metric_part, seconds, peak = self._segment(order, previous, stop)
            previous, train_time = stop, train_time + seconds
            parts.append(losses)
            loss_sum, metric_sum = loss_sum + loss_part, metric_sum + metric_part
            run.updates += len(losses)
            run.train_seconds += seconds
            run.peak_memory_mb = float(np.fmax(run.peak_memory_mb, peak))
            check = self._check(run, epoch + stop / self.steps)
            if not np.all(np.isfinite(losses)):
                run.diverged = True
                break
        step_losses = np.concatenate(parts)
        record = {"loss": loss_sum / self.n, METRICS[self.task]: metric_sum / self.n}
        record.update({k: v for k, v in check.items() if k.startswith("val_")})
        recent = np.concatenate([run.tail, step_losses])
        noise = loss_noise(recent)
        if math.isfinite(noise):
            record["loss_noise"] = noise
        record.update(epoch_train_seconds=train_time, updates=float(run.updates))
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, record)
        record["epoch_seconds"] = time.perf_counter() - started
        if not math.isfinite(record["loss"]):
            run.diverged = True
        if on_epoch is not None:
            on_epoch(epoch + 1, dict(record))
        run.tail = recent[-2:]
        run.history.append(record)

    def _check(self, run: FitResult, epoch: float = 0.0) -> dict[str, float]:
        """Validation (and training-sample) loss and metric after run.updates updates."""
        check = {"updates": float(run.updates), "epoch": epoch, "train_seconds": run.train_seconds}
        for prefix, rows in (("val_", self.val), ("train_", self.sample)):
            if rows is not None:
                check.update(_metric_names(self.task, evaluate_sums(self.validate, *rows), prefix=prefix))
        if run.updates:
            run.checks.append(check)
        return check


def check_stops(done: int, steps: int) -> list[int]:
    """Where an epoch's updates pause for a validation check: after 2^k updates in all, and at the epoch's end.

    `done` updates came before this epoch of `steps` updates. Small batches get many updates per epoch;
    checking at powers of two counts their updates to a target to within a factor of two, at a cost of
    about log2(total updates) extra checks.
    """
    stops = [2**k - done for k in range(max(0, done).bit_length(), (done + steps).bit_length()) if 2**k > done]
    return sorted({s for s in stops if 0 < s < steps} | {steps})


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
    return _metric_names(task, evaluate_sums(eval_function(model, task), x, y))


def as_tensor(array: np.ndarray) -> tf.Tensor:
    """`array` as a tensor: the same memory when it is C-ordered and 64-byte aligned (components.preprocess makes
    the feature matrices so) and writable, through DLPack; else a copy. tf.convert_to_tensor copies, so a
    million-row training matrix would be held twice (three times while copying). A read-only array (a Ray task's
    arguments, a memory map) is copied: DLPack cannot say read-only to TensorFlow."""
    if isinstance(array, np.ndarray) and array.size and _shareable(array):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def _shareable(array: np.ndarray) -> bool:
    return array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % 64 == 0


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[tf.Tensor, tf.Tensor] | None:
    return (as_tensor(x), as_tensor(y)) if len(y) else None


def _task(model: keras.Model) -> str:
    return next(task for task, loss in LOSSES.items() if loss == model.loss)


def _metric_names(task: str, sums: tuple[float, float] | None, prefix: str = "") -> dict[str, float]:
    if sums is None:
        return {}
    return {f"{prefix}{METRICS[task]}": sums[1], f"{prefix}loss": sums[0]}  # the metric a person reads first
