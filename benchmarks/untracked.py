"""descent's one-worker sweep without its tracking edge: the same variants in the same order, the same training,
probes, evaluations, sharpness and comparison (table, summary, plots), through the same code, and no MLflow.

Used to measure what tracking costs (MLflow's import, the store, runs, metrics, artifacts, the best variant's
servable model). Prints one JSON line; refuses to report if MLflow was imported after all.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import grid_arguments


def main() -> None:
    """Train every variant of the grid in this process exactly as `sweep.workers=1` does, minus MLflow."""
    args = grid_arguments(__doc__)
    started = time.perf_counter()
    from components.compare import VariantRecord, comparison_table, plot_comparison, summary_markdown, target_value
    from components.optimizers import batch_regime
    from components.records import result_frames
    from components.sweep import expand_sweep
    from pipelines.config import load_config
    from pipelines.fitting import fit
    from pipelines.prepare import prepare
    from pipelines.tune import Choice

    values = {"training.epochs": args.epochs, "tuning.method": "none", "sweep.workers": 1}
    values |= {"sweep.optimizers": args.optimizers.split(","), "sweep.batch_sizes": args.batch_sizes.split(",")}
    cfg = load_config(values={k: v for k, v in values.items()})
    prepared = prepare(cfg)
    task, n = prepared.split.task, len(prepared.split.train)
    variants = expand_sweep(cfg.sweep.optimizers, cfg.sweep.batch_sizes, n)
    variants.sort(key=lambda v: -batch_regime(v.batch_size, n).updates_per_epoch)  # as plan_jobs orders them
    records, accuracy = [], {}
    for v in variants:
        training = cfg.training.model_copy(update={"optimizer": v.optimizer, "batch_size": v.batch_size})
        variant = cfg.model_copy(update={"training": training})
        hyper, regime = variant.hyperparameters(v.optimizer), batch_regime(v.batch_size, n)
        result = fit(
            variant, prepared, hyper, regime, lambda _, lr=hyper["learning_rate"]: Choice(lr, "config"), Sink()
        )
        name = v.name(n)
        history, checks = result_frames(result["history"], result["checks"])
        params = {"optimizer": v.optimizer, "batch_size": regime.batch_size, "regime": regime.regime, "seed": 0}
        params |= {"learning_rate": hyper["learning_rate"], "val_rows": len(prepared.split.validation)}
        params |= {"test_rows": len(prepared.split.test)}
        records.append(
            VariantRecord(
                name=name,
                run_id="",
                status="FINISHED",
                params={k: str(value) for k, value in params.items()},
                history=history,
                final=result["final"],
                diverged=result["diverged"],
                group=name,
                checks=checks,
                tags={"descent.lr_chosen_by": "config", "descent.lr_at_edge": "false"},
            )
        )
        accuracy[name] = result["final"].get("test_accuracy", float("nan"))
    target = target_value(records, task, cfg.sweep.target, cfg.sweep.target_fraction)
    table = comparison_table(records, task, target, cfg.sweep.collapse_threshold)
    summary = summary_markdown(table, task, target, f"Sweep: {len(records)} variants")
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "comparison.csv", index=False)
        (Path(tmp) / "summary.md").write_text(summary)
        plot_comparison(records, table, task, Path(tmp))
    if "mlflow" in sys.modules:
        raise SystemExit("benchmarks.untracked imported MLflow: it would not measure the sweep without tracking")
    print(json.dumps({"seconds": time.perf_counter() - started, "test_accuracy": accuracy}))


class Sink:
    """Where the tracked sweep sends each epoch's metrics to MLflow: here, nowhere."""

    def add(self, metrics: dict[str, float], step: int) -> None:
        pass


if __name__ == "__main__":
    main()
