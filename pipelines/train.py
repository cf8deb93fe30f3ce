"""Entry point `train`: one optimizer x batch-size variant, end to end, as one tracked MLflow run."""

from __future__ import annotations

import hashlib
import logging
import math
import resource
import sys
from pathlib import Path

import keras

from components.builder import builder_source, check_builder, is_saved_model, network_summary
from components.errors import InputError
from components.measure import GradientProbe
from components.model import build_model, check_activation
from components.optimizers import BatchRegime, batch_regime, check_optimizer, make_optimizer
from components.sharpness import SharpnessProbe, SharpnessSettings, measure_sharpness
from components.train import LOSSES, FitResult, Trainer, compile_model, evaluate
from pipelines import cli, owners, system_metrics, tracking
from pipelines.config import Config, flatten
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
        **group_tags(t.optimizer, regime, variant),
        **(tags or {}),
        **trained_on(prepared),  # the rows this process was given and the code it runs, whatever the sweep's say
        "descent.owner": str(owners.me()),  # its run is only ever called interrupted once this process is gone
    }
    with tracking.run(cfg.experiment, name, tags=tags, parent_run_id=parent_run_id) as active:
        system_metrics.record(cfg.tracking, active.info.run_id)  # until the run ends
        tracking.log_params(variant_params(cfg, hyper, regime, prepared))
        if parent_run_id is None:
            log_data_record(cfg, prepared)
            log_network(cfg)  # the network's summary: below, as every variant run logs it
        result = _fit(cfg, prepared, hyper, regime, name, active.info.run_id, chosen, resume_from)
        choice = result.pop("choice")
        tracking.log_params({"learning_rate": choice.learning_rate})
        tracking.log_metrics(result["final"])
        tracking.set_tags(
            {
                "descent.lr_chosen_by": choice.by,
                "descent.lr_at_edge": str(choice.at_edge).lower(),
                "mlflow.note.content": describe_variant(t.optimizer, hyper, regime, cfg, choice),
            }
        )
        for plot in choice.plots:
            tracking.log_file(plot)
        if result["diverged"]:
            tracking.set_tags({"descent.diverged": "true"})
        else:
            result["model_uri"] = tracking.log_servable_model(
                prepared.preprocessor, result.pop("network"), prepared.example, _builder_code(cfg)
            )
            tracking.set_tags({"descent.model_uri": result["model_uri"]})
        result.pop("network", None)
        result.update(name=name, variant=variant, run_id=active.info.run_id, experiment_id=active.info.experiment_id)
        result.update(learning_rate=choice.learning_rate, lr_chosen_by=choice.by)
    return result


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


def build_network(cfg: Config, prepared: Prepared, seed: int) -> keras.Model:
    """The network for the data (the user's, or the dense one of model.hidden), its initial weights drawn from `seed`.

    Every variant of one seed gets the same initial weights, whatever was built before it in the process.
    """
    pre = prepared.preprocessor
    keras.backend.clear_session()  # a sweep builds many models in one process: start each from a clean graph
    return build_model(
        pre.input_shape,
        pre.n_outputs,
        prepared.split.task,
        **cfg.model.model_dump(),
        seed=seed,
        input_stats=pre.input_stats,
    )


def make_trainer(cfg: Config, prepared: Prepared, hyper: dict, batch_size: int) -> Trainer:
    """The variant's network, compiled with its optimizer, ready to train one or more learning rates."""
    t = cfg.training
    model = build_network(cfg, prepared, t.seed)
    compile_model(model, make_optimizer(t.optimizer, hyper), prepared.split.task)
    probes = [_gradient_probe(cfg, prepared)] if cfg.measure.gradients else []
    if cfg.measure.sharpness_per_epoch:
        settings = SharpnessSettings.from_measure(cfg.measure, seed=t.seed)
        probes.append(SharpnessProbe(LOSSES[prepared.split.task], *prepared.sample, settings))
    return Trainer(model, prepared.arrays, batch_size, callbacks=probes, seed=t.seed, sample=prepared.sample)


def _fit(
    cfg: Config,
    prepared: Prepared,
    hyper: dict,
    regime: BatchRegime,
    name: str,
    run_id: str,
    chosen: Chosen | None,
    resume_from: str | None,
) -> dict:
    t, pre = cfg.training, prepared.preprocessor
    trainer = make_trainer(cfg, prepared, hyper, regime.batch_size)
    tracking.log_text(network_summary(trainer.model), "network_summary.txt")

    def show(epoch: int, metrics: dict[str, float]) -> None:
        shown = pre.in_target_units(metrics)
        sink.add(shown, step=epoch)
        if t.verbose:
            log.info("epoch %d/%d: %s", epoch, t.epochs, ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        show(epoch, metrics)
        cli.check_stop()

    with tracking.EpochMetrics() as sink:
        configured = hyper["learning_rate"]
        choice = choose(cfg, trainer, name, run_id, configured, chosen, pre.in_target_units, resume_from)
        fit = choice.fit
        if fit is None:
            fit = trainer.train(trainer.start(choice.learning_rate), t.epochs, on_epoch)
        else:  # the search trained the chosen learning rate for every epoch already
            for epoch, record in enumerate(fit.history, start=1):
                show(epoch, record)
        trainer.use(fit)
        for check in fit.checks:
            shown = {f"by_update/{k}": v for k, v in pre.in_target_units(check).items() if k != "updates"}
            sink.add(shown, step=int(check["updates"]))
    fit.history = [pre.in_target_units(h) for h in fit.history]
    final = _final(prepared, trainer, fit)
    if cfg.measure.sharpness and not fit.diverged:  # of the loss as trained (a regression target standardised)
        settings = SharpnessSettings.from_measure(cfg.measure, seed=t.seed)
        sharpness = measure_sharpness(trainer.model, LOSSES[prepared.split.task], *prepared.sample, settings)
        final.update({k: v for k, v in sharpness.items() if math.isfinite(v)})
    final.update(tuning_seconds=choice.seconds, tuning_trials=float(choice.trials))
    return {
        "final": final,
        "diverged": fit.diverged,
        "history": fit.history,
        "network": trainer.model,
        "choice": choice,
    }


def _final(prepared: Prepared, trainer: Trainer, fit: FitResult) -> dict[str, float]:
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


def _gradient_probe(cfg: Config, prepared: Prepared) -> GradientProbe:
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


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _builder_code(cfg: Config) -> list[Path]:
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
    log.info("see it: %s", tracking.ui_command())


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
