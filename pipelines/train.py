"""Entry point `train`: one optimizer x batch-size variant, end to end, as one tracked MLflow run."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any

from components.builder import builder_source, check_builder, is_saved_model, network_summary
from components.errors import InputError
from components.model import check_activation
from components.optimizers import BatchRegime, batch_regime, check_optimizer
from components.train import Trainer
from pipelines import backend, cli, fitting, models, owners, system_metrics, tracking
from pipelines.config import Config, flatten
from pipelines.fitting import build_network
from pipelines.grouping import group_tags
from pipelines.prepare import Prepared, prepare
from pipelines.tune import Choice, Chosen, choose
from pipelines.version import code_version

log = logging.getLogger("descent")


def train(
    cfg: Config,
    prepared: Prepared | None = None,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    run_name: str | None = None,
    chosen: Chosen | None = None,
    resume_from: str | None = None,
) -> dict:
    """Train the configured variant on the configured data; returns its final metrics.

    Its learning rate is chosen by cfg.tuning (or given as `chosen`: a first seed's, or a scaled one); the
    finished trials of `resume_from`, an interrupted run of the same variant, are reused. With
    `parent_run_id` the run is nested under that (sweep) run, from this process or a worker's.
    """
    t = cfg.training
    hyper = cfg.hyperparameters(t.optimizer)
    # A sweep checked its variants before its own run: what fails on a worker (a builder file missing on a Ray
    # node) fails inside the variant's run, which ends FAILED with the reason. Alone, a variant checks now.
    if parent_run_id is None:
        check_variant(cfg)
    prepared = prepared or prepare(cfg)
    check_tuning(cfg, prepared)
    if parent_run_id is None:
        check_network_fits(cfg, prepared)
    n_train = len(prepared.split.train)
    regime = batch_regime(t.batch_size, n_train)
    variant = f"{t.optimizer}-{regime.label}"
    name = run_name or variant
    tags = {
        **run_tags(cfg, prepared),
        "descent.variant": variant,
        "descent.process": str(os.getpid()),  # a sweep's worker keeps its log as logs/worker-<this id>.log
        **group_tags(t.optimizer, regime, variant),
        **(tags or {}),
        **trained_on(prepared),  # the rows this process was given and the code it runs, whatever the sweep's say
        "descent.owner": str(owners.me()),  # its run is only ever called interrupted once this process is gone
    }
    with tracking.run(cfg.experiment, name, tags=tags, parent_run_id=parent_run_id) as active:
        if system_metrics.wanted(cfg.tracking):  # sampled until the run ends
            tracking.store().system_metrics(active.info.run_id, cfg.tracking.system_metrics_interval)
        # Params, final metrics and tags are written in one batch when the run ends (a failed run's too).
        tracking.later(params=variant_params(cfg, hyper, regime, prepared))
        if parent_run_id is None:
            log_data_record(cfg, prepared)
            log_network(cfg)  # the network's summary: below, as every variant run logs it
        run_id, units = active.info.run_id, prepared.preprocessor.in_target_units

        def rate(trainer: Trainer) -> Choice:  # the learning-rate trials, if any, nest under this run
            return choose(cfg, trainer, name, run_id, hyper["learning_rate"], chosen, units, resume_from)

        with tracking.EpochMetrics() as sink:
            result = fitting.fit(cfg, prepared, hyper, regime, rate, sink)
        choice, network = result.pop("choice"), result.pop("network")
        tracking.log_text(summary_of(network), "network_summary.txt")
        ending = {
            "descent.lr_chosen_by": choice.by,
            "descent.lr_at_edge": str(choice.at_edge).lower(),
            "mlflow.note.content": describe_variant(t.optimizer, hyper, regime, cfg, choice),
        }
        tracking.later(params={"learning_rate": choice.learning_rate}, metrics=result["final"], tags=ending)
        for plot in choice.plots:
            tracking.log_file(plot)
        if result["diverged"]:
            tracking.later(tags={"descent.diverged": "true"})
        elif parent_run_id is None or cfg.tracking.log_models == "all":
            tracking.flush()  # the model records the run's metrics when it is logged
            code = builder_code(cfg)
            result["model_uri"] = models.log_servable_model(prepared.preprocessor, network, prepared.example, code)
            tracking.later(tags={"descent.model_uri": result["model_uri"]})
        elif cfg.tracking.log_networks == "all":  # the sweep logs its best variant's servable model from it
            models.log_network(network)
        else:  # the sweep makes its best variant's network.keras and servable model from them
            models.log_weights(network)
        result.update(name=name, variant=variant, run_id=active.info.run_id, experiment_id=active.info.experiment_id)
        result.update(learning_rate=choice.learning_rate, lr_chosen_by=choice.by)
    return result


def summary_of(network: Any) -> str:
    """The network's summary, made once per network and optimizer (a kept network trains many variants; Keras'
    summary counts the optimizer's variables too)."""
    optimizer = getattr(network, "optimizer", None)
    key = (type(optimizer).__name__, len(optimizer.variables) if optimizer is not None else 0)
    made = _SUMMARIES.setdefault(network, {})
    if key not in made:
        made[key] = network_summary(network)
    return made[key]


_SUMMARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_variant(cfg: Config) -> None:
    """Refuse, before any run starts, an optimizer, hyperparameter, activation or builder that cannot work."""
    check_optimizer(cfg.training.optimizer, cfg.hyperparameters(cfg.training.optimizer))
    check_model(cfg)


def check_model(cfg: Config) -> None:
    """What can be checked of the network before the data is loaded: its activation, its builder's file and function."""
    check_activation(cfg.model.activation)
    if cfg.model.builder:
        check_builder(cfg.model.builder, cfg.model.keep_weights)


def check_network_fits(cfg: Config, prepared: Prepared) -> str:
    """Build the network once for the data (the user's network is checked against it: input shape, outputs);
    a misfit is a one-line InputError before any run exists. Returns the network's summary."""
    return network_summary(build_network(cfg, prepared, cfg.training.seed))


def log_network(cfg: Config, summary: str | None = None) -> None:
    """The builder's file (to reproduce the run) and the network's summary (layers, output shapes, parameter counts)
    on the active run."""
    if summary is not None:
        tracking.log_text(summary, "network_summary.txt")
    source = builder_source(cfg.model.builder) if cfg.model.builder else None
    if source is not None:
        tracking.log_file(source, "builder")


def check_tuning(cfg: Config, prepared: Prepared) -> None:
    """A grid search compares learning rates on the validation rows: it needs some."""
    if cfg.tuning.method == "grid" and not len(prepared.split.validation):
        raise InputError(
            "tuning.method=grid chooses learning rates on the validation rows, but split.validation is 0: "
            "set split.validation=0.15 or tuning.method=none"
        )


def variant_params(cfg: Config, hyper: dict, regime: BatchRegime, prepared: Prepared) -> dict:
    """The params a person compares variants by, under the names the seed notes use (learning_rate once chosen)."""
    t, n_train = cfg.training, len(prepared.split.train)
    params = {
        "optimizer": t.optimizer,
        "batch_size": regime.batch_size,
        "regime": regime.regime,
        "epochs": t.epochs,
        "seed": t.seed,
        "updates_per_epoch": regime.updates_per_epoch,
        "train_rows": n_train,
        "val_rows": len(prepared.split.validation),
        "test_rows": len(prepared.split.test),
    }
    params.update({k: v for k, v in hyper.items() if k != "learning_rate"})
    resolved = cfg.model_dump(exclude={"training", "optimizers", "sweep", "schedule", "measure"})
    params.update(flatten(resolved))
    return params


def describe_variant(optimizer: str, hyper: dict, regime: BatchRegime, cfg: Config, choice: Choice) -> str:
    """The run description shown in the MLflow UI, in the seed notes' words."""
    words = {"batch": "batch gradient descent", "stochastic": "stochastic gradient descent", "minibatch": "mini-batch"}
    how = {
        "config": "as configured",
        "grid": f"chosen by a grid search of {choice.trials} learning rates on the validation rows",
        "range_test": "chosen by a learning-rate range test",
        "scaled": "scaled from a reference batch size",
    }[choice.by]
    edge = " It sits on the edge of the grid: the best may lie further out." if choice.at_edge else ""
    source = f" ({choice.note})" if choice.note else ""
    m = cfg.model
    network = f"the network of {m.builder}" if m.builder else f"{m.api} model {m.hidden}"
    if m.builder and m.keep_weights:
        network += " (from its saved weights)"
    return (
        f"{optimizer} (learning rate {choice.learning_rate:g}, {how}{source}), {words[regime.regime]}: batch size "
        f"{regime.batch_size}, {regime.updates_per_epoch} update(s) per epoch, {cfg.training.epochs} epochs, "
        f"seed {cfg.training.seed}, {network} on {cfg.data.source}.{edge}"
    )


def run_tags(cfg: Config, prepared: Prepared) -> dict[str, str]:
    """Tags that let scheduled and resumed runs find their own."""
    return {**trained_on(prepared), "descent.config_digest": study_digest(cfg)}


def study_digest(cfg: Config) -> str:
    """The config's digest, and with model.builder the builder's file: an edited network of the user's (a module
    or a saved .keras beside the project) is another study, whose resume must not reuse the old network's variants."""
    source = builder_source(cfg.model.builder) if cfg.model.builder else None
    if source is None or not source.is_file():
        return cfg.digest()
    return hashlib.sha256(cfg.digest().encode() + source.read_bytes()).hexdigest()[:16]


def trained_on(prepared: Prepared) -> dict[str, str]:
    """The digests of the data and the training rows, and the version of the code, of this process."""
    return {
        "descent.data_digest": prepared.dataset.digest,
        "descent.split_digest": prepared.split_digest,
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


def builder_code(cfg: Config) -> list[Path]:
    """The builder function's file, logged with the servable model's code (a saved .keras model is not code)."""
    spec = cfg.model.builder
    source = builder_source(spec) if spec and not is_saved_model(spec) else None
    return [source] if source is not None else []


def _entry(argv: list[str] | None) -> None:
    args = cli.parser("Train one optimizer x batch-size variant as one MLflow run.").parse_args(argv)
    # A learning rate typed on the command line is the one to train at: nothing to tune.
    cfg = cli.config_from(args, {"tuning.method": "none"} if args.learning_rate else None)
    result = train(cfg)
    final = result["final"]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if k.startswith("test_"))
    state = "diverged" if result["diverged"] else "finished"
    log.info("%s %s: %s (%.1f s)", result["name"], state, shown, final["train_seconds"])
    log.info("see it: %s", backend.ui_command())


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
