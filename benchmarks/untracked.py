"""descent's sweep without its tracking edge: the same components, variants and measurements, no MLflow.

Used to measure what tracking costs (runs, metrics, artifacts, models); prints one JSON line.
"""

from __future__ import annotations

import json
import time

from benchmarks.common import grid_arguments


def main() -> None:
    """Train every variant of the grid in this process exactly as a one-worker sweep does, minus MLflow."""
    args = grid_arguments(__doc__)
    started = time.perf_counter()
    import keras
    import numpy as np

    from components.model import build_model
    from components.optimizers import batch_regime, make_optimizer
    from components.sweep import expand_sweep
    from components.train import compile_model, evaluate, fit_variant
    from pipelines.config import load_config
    from pipelines.fitting import gradient_probe
    from pipelines.prepare import prepare

    cfg = load_config(values={"training.epochs": args.epochs})
    prepared = prepare(cfg)
    pre, test, n = prepared.preprocessor, prepared.split.test, len(prepared.arrays.y_train)
    variants = expand_sweep(args.optimizers.split(","), args.batch_sizes.split(","), n)
    accuracy = {}
    for v in variants:
        keras.backend.clear_session()
        model = build_model(pre.n_features, pre.n_outputs, "classification", **cfg.model.model_dump(), seed=0)
        compile_model(model, make_optimizer(v.optimizer, cfg.hyperparameters(v.optimizer)), "classification")
        probe = gradient_probe(cfg, prepared)
        probe.on_measure = lambda epoch, record: None
        size = batch_regime(v.batch_size, n).batch_size
        fit_variant(model, prepared.arrays, size, args.epochs, callbacks=[probe], seed=0, sample=prepared.sample)
        scores = evaluate(model, pre.transform(test.features), pre.encode_target(test.target))
        accuracy[v.name(n)] = float(np.float64(scores["accuracy"]))
    print(json.dumps({"seconds": time.perf_counter() - started, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
