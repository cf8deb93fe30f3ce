"""Entry point `train`: one optimizer x batch-size variant, end to end, as one tracked MLflow run."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import resource
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from components.measure import GradientProbe
from components.model import build_model, check_activation
from components.optimizers import BatchRegime, batch_regime, check_optimizer, make_optimizer
from components.train import LOSSES, compile_model, evaluate, fit_variant
from pipelines import cli, system_metrics, tracking
from pipelines.config import Config, flatten
from pipelines.grouping import group_tags
from pipelines.prepare import Prepared, prepare

log = logging.getLogger("descent")
ROOT = Path(__file__).resolve().parent.parent


def train(
    cfg: Config,
    prepared: Prepared | None = None,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    run_name: str | None = None,
) -> dict:
    """Train the configured variant on the configured data; returns its final metrics.

    With `parent_run_id` the run is nested under that (sweep) run, from this process or a worker's.
    """
    t = cfg.training
    hyper = cfg.hyperparameters(t.optimizer)
    check_optimizer(t.optimizer, hyper)
    check_activation(cfg.model.activation)
    prepared = prepared or prepare(cfg)
    n_train = len(prepared.split.train)
    regime = batch_regime(t.batch_size, n_train)
    variant = f"{t.optimizer}-{regime.label}"
    name = run_name or variant
    tags = {
        **run_tags(cfg, prepared),
        "descent.variant": variant,
        **group_tags(t.optimizer, regime, variant),
        **(tags or {}),
    }
    with tracking.run(cfg.experiment, name, tags=tags, parent_run_id=parent_run_id) as active:
        system_metrics.record(cfg.tracking, active.info.run_id)  # until the run ends
        tracking.log_params(variant_params(cfg, hyper, regime, n_train))
        tracking.set_tags({"mlflow.note.content": describe_variant(t.optimizer, hyper, regime, cfg)})
        if parent_run_id is None:
            log_data_record(cfg, prepared)
        result = _fit(cfg, prepared, hyper, regime.batch_size)
        tracking.log_metrics(result["final"])
        if result["diverged"]:
            tracking.set_tags({"descent.diverged": "true"})
        else:
            result["model_uri"] = tracking.log_servable_model(
                prepared.preprocessor, result.pop("network"), _example(prepared)
            )
            tracking.set_tags({"descent.model_uri": result["model_uri"]})
        result.pop("network", None)
        result.update(name=name, variant=variant, run_id=active.info.run_id, experiment_id=active.info.experiment_id)
    return result


def variant_params(cfg: Config, hyper: dict, regime: BatchRegime, n_train: int) -> dict:
    """The params a person compares variants by, under the names the seed notes use."""
    t = cfg.training
    params = {
        "optimizer": t.optimizer,
        "learning_rate": hyper["learning_rate"],
        "batch_size": regime.batch_size,
        "regime": regime.regime,
        "epochs": t.epochs,
        "seed": t.seed,
        "updates_per_epoch": regime.updates_per_epoch,
        "train_rows": n_train,
    }
    params.update({k: v for k, v in hyper.items() if k != "learning_rate"})
    resolved = cfg.model_dump(exclude={"training", "optimizers", "sweep", "schedule", "measure"})
    params.update(flatten(resolved))
    return params


def describe_variant(optimizer: str, hyper: dict, regime: BatchRegime, cfg: Config) -> str:
    """The run description shown in the MLflow UI, in the seed notes' words."""
    words = {"batch": "batch gradient descent", "stochastic": "stochastic gradient descent", "minibatch": "mini-batch"}
    return (
        f"{optimizer} (learning rate {hyper['learning_rate']:g}), {words[regime.regime]}: batch size "
        f"{regime.batch_size}, {regime.updates_per_epoch} update(s) per epoch, {cfg.training.epochs} epochs, "
        f"seed {cfg.training.seed}, {cfg.model.api} model {cfg.model.hidden} on {cfg.data.source}."
    )


def run_tags(cfg: Config, prepared: Prepared) -> dict[str, str]:
    """Tags that let scheduled and resumed runs find their own."""
    return {
        "descent.data_digest": prepared.dataset.digest,
        "descent.split_digest": prepared.split_digest,
        "descent.config_digest": cfg.digest(),
        "descent.code_version": code_version(),
    }


def log_data_record(cfg: Config, prepared: Prepared) -> None:
    """Dataset inputs, split report and resolved config: the record of what the run learned from."""
    ds = prepared.dataset
    tracking.log_dataset_inputs(prepared.split, ds.name, ds.source, ds.digest)
    tracking.log_params({f"data.read.{k}": v for k, v in ds.reading.items()})  # e.g. the encoding detected
    report = prepared.split.report.to_dict() | {"imputed_values": prepared.preprocessor.imputed}
    tracking.log_json(report, "split_report.json")
    tracking.log_yaml(cfg.model_dump(), "config.yaml")


@functools.cache  # the code a process runs is the code it imported: ask git once per process
def code_version() -> str:
    """The git commit of the project, or 'unknown' outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip() or "unknown"
    if head.returncode or not diff.stdout:
        return commit
    # Uncommitted edits are code too: a resume must not reuse variants trained by other code.
    return f"{commit}-dirty-{hashlib.sha256(diff.stdout).hexdigest()[:8]}"


def _fit(cfg: Config, prepared: Prepared, hyper: dict, batch_size: int) -> dict:
    t, arrays, pre = cfg.training, prepared.arrays, prepared.preprocessor
    keras.backend.clear_session()  # a sweep builds many models in one process: start each from a clean graph
    model = build_model(pre.n_features, pre.n_outputs, prepared.split.task, **cfg.model.model_dump(), seed=t.seed)
    compile_model(model, make_optimizer(t.optimizer, hyper), prepared.split.task)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        shown = pre.in_target_units(metrics)
        sink.add(shown, step=epoch)
        if t.verbose:
            log.info("epoch %d/%d: %s", epoch, t.epochs, ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        cli.check_stop()

    probes = [_gradient_probe(cfg, prepared)] if cfg.measure.gradients else []
    with tracking.EpochMetrics() as sink:
        fit = fit_variant(model, arrays, batch_size, t.epochs, on_epoch=on_epoch, callbacks=probes, seed=t.seed)
    fit.history = [pre.in_target_units(h) for h in fit.history]
    test = prepared.split.test
    scores = pre.in_target_units(evaluate(model, pre.transform(test.features), pre.encode_target(test.target)))
    final = {f"test_{k}": v for k, v in scores.items() if math.isfinite(v)}
    final.update(
        train_seconds=fit.train_seconds,
        first_epoch_seconds=fit.compile_seconds,
        total_updates=float(fit.updates),
        samples_per_second=len(arrays.y_train) * len(fit.history) / max(fit.train_seconds, 1e-9),
        updates_per_second=fit.updates / max(fit.train_seconds, 1e-9),
        process_peak_memory_mb=peak_memory_mb(),
    )
    if math.isfinite(fit.peak_memory_mb):
        final["train_peak_memory_mb"] = fit.peak_memory_mb
    return {"final": final, "diverged": fit.diverged, "history": fit.history, "network": model}


def _gradient_probe(cfg: Config, prepared: Prepared) -> GradientProbe:
    m, arrays = cfg.measure, prepared.arrays
    rows = np.random.default_rng(cfg.training.seed).permutation(len(arrays.y_train))[: m.probe_rows]
    return GradientProbe(
        keras.losses.get(LOSSES[prepared.split.task]),
        arrays.x_train[rows],
        arrays.y_train[rows],
        small=m.noise_small_batch,
        big=m.noise_big_batch,
        draws=m.noise_draws,
        seed=cfg.training.seed,
    )


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _example(prepared: Prepared) -> pd.DataFrame:
    # Rows with missing values go into the signature sample so served rows may have them too.
    rows = prepared.split.train.features
    gaps = rows[rows.isna().any(axis=1)]
    return pd.concat([rows.head(50), gaps.head(50)]).reset_index(drop=True)


def _entry(argv: list[str] | None) -> None:
    args = cli.parser("Train one optimizer x batch-size variant as one MLflow run.").parse_args(argv)
    cfg = cli.config_from(args)
    result = train(cfg)
    final = result["final"]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if k.startswith("test_"))
    state = "diverged" if result["diverged"] else "finished"
    log.info("%s %s: %s (%.1f s)", result["name"], state, shown, final["train_seconds"])
    log.info("see it: %s", tracking.ui_command())


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
