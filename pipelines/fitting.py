"""One variant's training, without tracking: its network, its learning rate's epochs, its final numbers.

pipelines/train.py records it as an MLflow run; benchmarks/untracked.py times the very same work without MLflow.
"""

from __future__ import annotations

import hashlib
import logging
import math
import resource
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from components.builder import builder_source
from components.measure import GradientProbe
from components.model import build_model
from components.networks import compile_with, initial_network
from components.optimizers import BatchRegime
from components.sharpness import SharpnessProbe, SharpnessSettings, measure_sharpness
from components.train import LOSSES, FitResult, Trainer, evaluate
from pipelines import cli
from pipelines.config import Config
from pipelines.prepare import Prepared
from pipelines.tune import Choice

log = logging.getLogger("descent")


def build_network(cfg: Config, prepared: Prepared, seed: int) -> keras.Model:
    """The network for the data (the user's, or the dense one of model.hidden), its initial weights drawn from `seed`.

    Every variant of one seed gets the same initial weights, whatever was built before it in the process: the
    network is the process's kept one (components/networks.py), which a variant of that seed then trains.
    """
    pre = prepared.preprocessor
    spec = cfg.model.model_dump()
    source = builder_source(spec["builder"]) if spec["builder"] else None
    changed = source.stat().st_mtime_ns if source is not None and source.is_file() else None  # edited in between
    key = [spec, changed, pre.input_shape, _digest(pre.input_stats), pre.n_outputs, prepared.split.task, seed]
    return initial_network(key, lambda: _build(cfg, prepared, seed))


def untrained_network(cfg: Config, prepared: Prepared) -> keras.Model:
    """A new network of the sweep's architecture (not the process's kept one): a variant's saved weights go in it."""
    return _build(cfg, prepared, cfg.training.seed)


def _build(cfg: Config, prepared: Prepared, seed: int) -> keras.Model:
    pre = prepared.preprocessor
    spec = cfg.model.model_dump()
    return build_model(
        pre.input_shape, pre.n_outputs, prepared.split.task, **spec, seed=seed, input_stats=pre.input_stats
    )


def make_trainer(cfg: Config, prepared: Prepared, hyper: dict, batch_size: int) -> Trainer:
    """The variant's network, compiled with its optimizer, ready to train one or more learning rates.

    The network and the optimizer are the process's kept ones when an earlier variant used the same (at their
    initial weights and state again, components/networks.py): no building, seeding or tracing a second time.
    """
    t, task = cfg.training, prepared.split.task
    model = build_network(cfg, prepared, t.seed)
    compile_with(model, t.optimizer, hyper, task)
    probes = [gradient_probe(cfg, prepared)] if cfg.measure.gradients else []
    if cfg.measure.sharpness_per_epoch:
        settings = SharpnessSettings.from_measure(cfg.measure, seed=t.seed)
        probes.append(SharpnessProbe(LOSSES[task], *prepared.sample, settings))
    return Trainer(model, prepared.arrays, batch_size, callbacks=probes, seed=t.seed, sample=prepared.sample)


def fit(
    cfg: Config,
    prepared: Prepared,
    hyper: dict,
    regime: BatchRegime,
    rate: Callable[[Trainer], Choice],
    sink: Any,
) -> dict:
    """Train the variant at the learning rate `rate` chooses (it may train trials on the trainer); every epoch's
    metrics and every validation check go to `sink.add(metrics, step)` as they are measured.

    Returns the final metrics, the per-epoch history and the checks (as they went to the sink), whether it
    diverged, the trained network and the choice of learning rate.
    """
    t, pre = cfg.training, prepared.preprocessor
    trainer = make_trainer(cfg, prepared, hyper, regime.batch_size)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        shown = pre.in_target_units(metrics)
        sink.add(shown, step=epoch)
        if t.verbose:
            log.info("epoch %d/%d: %s", epoch, t.epochs, ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        cli.check_stop()

    choice = rate(trainer)
    fit = choice.fit
    if fit is None:
        fit = trainer.train(trainer.start(choice.learning_rate), t.epochs, on_epoch)
    else:  # the search trained the chosen learning rate for every epoch already
        for epoch, record in enumerate(fit.history, start=1):
            on_epoch(epoch, record)
    trainer.use(fit)
    for check in fit.checks:
        shown = {f"by_update/{k}": v for k, v in pre.in_target_units(check).items() if k != "updates"}
        sink.add(shown, step=int(check["updates"]))
    fit.history = [pre.in_target_units(h) for h in fit.history]
    final = final_metrics(prepared, trainer, fit)
    if cfg.measure.sharpness and not fit.diverged:  # of the loss as trained (a regression target standardised)
        settings = SharpnessSettings.from_measure(cfg.measure, seed=t.seed)
        sharpness = measure_sharpness(trainer.model, LOSSES[prepared.split.task], *prepared.sample, settings)
        final.update({k: v for k, v in sharpness.items() if math.isfinite(v)})
    final.update(tuning_seconds=choice.seconds, tuning_trials=float(choice.trials))
    return {
        "final": final,
        "diverged": fit.diverged,
        "history": fit.history,
        "checks": [pre.in_target_units(check) for check in fit.checks],
        "network": trainer.model,
        "choice": choice,
    }


def final_metrics(prepared: Prepared, trainer: Trainer, fit: FitResult) -> dict[str, float]:
    """The variant's final metrics: test scores, times, throughput, memory, the final training-sample scores."""
    pre, test, model = prepared.preprocessor, prepared.split.test, trainer.model
    scores = pre.in_target_units(evaluate(model, pre.transform(test.features), pre.encode_target(test.target)))
    final = {f"test_{k}": v for k, v in scores.items() if math.isfinite(v)}
    # Throughput from the second epoch on: the first pays for the kernels' first use.
    steady = fit.history[1:] or fit.history
    steady_seconds = max(sum(h["epoch_train_seconds"] for h in steady), 1e-9)
    steady_updates = fit.updates - (fit.history[0]["updates"] if len(fit.history) > 1 else 0)
    final.update(
        train_seconds=fit.train_seconds,
        compile_seconds=fit.compile_seconds,
        total_updates=float(fit.updates),
        samples_per_second=trainer.n * len(steady) / steady_seconds,
        updates_per_second=steady_updates / steady_seconds,
        process_peak_memory_mb=peak_memory_mb(),
        **prepared.baseline,
    )
    if fit.checks:
        last = pre.in_target_units(fit.checks[-1])
        final.update({f"final_{k}": v for k, v in last.items() if k.startswith("train_") and k != "train_seconds"})
    if math.isfinite(fit.peak_memory_mb):
        final["train_peak_memory_mb"] = fit.peak_memory_mb
    return {k: v for k, v in final.items() if math.isfinite(v)}


def gradient_probe(cfg: Config, prepared: Prepared) -> GradientProbe:
    m = cfg.measure
    x, y = prepared.sample
    return GradientProbe(
        keras.losses.get(LOSSES[prepared.split.task]),
        x,
        y,
        method=m.noise_method,
        small=m.noise_small_batch,
        draws=m.noise_draws,
        memory_mb=m.noise_memory_mb,
        population=len(prepared.arrays.y_train),
        epochs=cfg.training.epochs,
        seed=cfg.training.seed,
    )


def _digest(stats: tuple[np.ndarray, ...] | None) -> str | None:
    """The input statistics a network normalises with (array data), as part of what names a kept network."""
    if stats is None:
        return None
    return hashlib.sha256(b"".join(np.ascontiguousarray(s).tobytes() for s in stats)).hexdigest()[:16]


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
