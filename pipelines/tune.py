"""Choose a variant's learning rate (tuning.method) on its validation rows, each learning-rate trial a nested run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.compare import RANKING
from components.train import FitResult, Trainer
from components.tuning import (
    Trial,
    log_grid,
    range_test_choice,
    range_test_rates,
    range_test_smoothed,
    scaled_rate,
    successive_halving,
)
from pipelines import cli
from pipelines.config import Config


@dataclass(frozen=True)
class Chosen:
    """A learning rate chosen elsewhere: by a first seed's search, or scaled from a reference batch size."""

    learning_rate: float
    by: str  # grid | range_test | scaled | config
    note: str = ""  # where it came from, e.g. "tuned on seed 0 (run <id>)"


@dataclass
class Choice:
    """What choosing cost and gave: the learning rate, and the chosen training when the search already ran it."""

    learning_rate: float
    by: str
    fit: FitResult | None = None
    trials: int = 0
    seconds: float = 0.0
    at_edge: bool = False
    note: str = ""
    plots: list[Path] = field(default_factory=list)


def choose(
    cfg: Config,
    trainer: Trainer,
    name: str,
    run_id: str,
    configured: float,
    chosen: Chosen | None = None,
    units: Callable[[dict], dict] = dict,
    resume_from: str | None = None,
) -> Choice:
    """The variant's learning rate by cfg.tuning.method (`chosen` wins when given); trials nest under `run_id`.

    `units` turns a trial's recorded metrics into the units the variant reports (a regression target's own).
    `resume_from`: an interrupted run of this variant, whose finished trials are reused, not run again.
    """
    if chosen is not None:
        return Choice(chosen.learning_rate, chosen.by, note=chosen.note)
    from pipelines.trials import Trials  # MLflow: imported only where trials are tracked

    method = cfg.tuning.method
    if method == "grid":
        with Trials(run_id, name, units, resume_from) as trials:
            return _grid(cfg, trainer, trials, configured)
    if method == "range_test":
        return _range_test(cfg, trainer, name, Trials(run_id, name))
    if method == "scaled":
        tu = cfg.tuning
        lr = scaled_rate(configured, _batch(tu.reference_batch_size, trainer), trainer.batch_size, tu.scaling)
        note = f"{tu.scaling} scaling from the configured {configured:g} at batch size {tu.reference_batch_size}"
        return Choice(lr, "scaled", note=note)
    return Choice(configured, "config")


def _grid(cfg: Config, trainer: Trainer, trials: Any, configured: float) -> Choice:
    tu, epochs = cfg.tuning, cfg.training.epochs
    key, higher = RANKING[trainer.task]
    runs: dict[float, FitResult] = {}
    earlier = trials.earlier()  # stopped-early trials of an interrupted try of this variant: not run again
    started = time.perf_counter()

    def score(lr: float, epoch: int) -> tuple[float, float]:
        if lr not in runs and lr in earlier:  # training is deterministic: the same scores again
            recorded = earlier[lr]
            if recorded is None:  # it diverged
                return math.nan, math.nan
            if len(recorded) >= epoch:
                last = recorded[epoch - 1]
                return last.get(key, math.nan), last.get("val_loss", math.nan)
        if lr not in runs:
            runs[lr] = trainer.start(lr)
            trials.open(lr)
        run = runs[lr]
        trainer.train(run, epoch, lambda *_: cli.check_stop())  # signals, and the study's heartbeat, every epoch
        if run.diverged:
            return math.nan, math.nan
        last = trials.units(run.history[-1])  # the units of recorded trials: a regression target's own
        return last.get(key, math.nan), last.get("val_loss", math.nan)

    def stop(trial: Trial) -> None:  # its run ends now: a resumed search can reuse it, its weights are freed
        lr = trial.learning_rate
        if lr in runs:
            trials.close(lr, runs[lr], stopped_early=True, chosen=False)
            trainer.release(runs[lr])
        else:
            trials.adopt(lr)

    grid = log_grid(configured, tu.grid)
    search = successive_halving(grid, epochs, score, higher, tu.halving_rate, tu.rungs, tu.extensions, stop)
    for trial in search.trials:
        lr = trial.learning_rate
        if not trial.stopped_early:
            trials.close(lr, runs[lr], stopped_early=False, chosen=lr == search.chosen)
            if lr != search.chosen:
                trainer.release(runs[lr])
    fit = runs[search.chosen]
    own = sum(h["epoch_seconds"] for h in fit.history)
    return Choice(
        search.chosen,
        "grid",
        fit=fit,
        trials=len(search.trials),
        seconds=max(0.0, time.perf_counter() - started - own),
        at_edge=search.at_edge,
    )


def _range_test(cfg: Config, trainer: Trainer, name: str, trials: Any) -> Choice:
    tu = cfg.tuning
    started = time.perf_counter()
    rates = range_test_rates(tu.range_start, tu.range_stop, tu.range_updates)
    losses = trainer.range_test(rates)
    lr = range_test_choice(rates, losses)
    trials.range_test(rates, losses, lr)
    plot = _range_plot(rates, losses, lr, name)
    return Choice(lr, "range_test", trials=1, seconds=time.perf_counter() - started, plots=[plot])


def _range_plot(rates: np.ndarray, losses: np.ndarray, chosen: float, name: str) -> Path:
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    smooth = range_test_smoothed(losses)
    shown = slice(0, min(len(rates), len(smooth) + 5))  # a few updates past the blow-up, not its whole height
    ax.plot(rates[shown], losses[shown], linewidth=0.8, alpha=0.5, label="training loss of each update")
    ax.plot(rates[: len(smooth)], smooth, linewidth=1.8, label="smoothed (centred moving average)")
    ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen: {chosen:.3g} (steepest fall)")
    if len(smooth):
        ax.set_ylim(0.9 * smooth.min(), 1.3 * max(smooth.max(), smooth[0]))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale), raised every update")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate range test of {name} (Smith 2017)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    path = Path(tempfile.mkdtemp()) / "lr_range_test.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _batch(size: int | str, trainer: Trainer) -> int:
    return trainer.n if size == "full" else int(size)
