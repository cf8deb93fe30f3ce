"""The gradient probe on digits: what it adds to a variant's time, and how well repeated noise scales agree.

Cost: the default network (64-128-64-10, Adam) trained for `--epochs` epochs by descent's own loop with and
without the probe descent attaches (`pipelines.fitting.gradient_probe`), alternating, `--rounds` times; the
difference of the fastest runs is the probe's cost per variant (its one-time tracing included). Agreement: after
the `--at` epochs of batch-32 training, the noise scale measured exactly and `--repeats` times by two_batch, each
with its own random batches. TensorFlow gets `--threads` threads (1 = a worker's share of two cores). Prints one
JSON line. Runs on older checkouts too (cost only), to measure before against after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5, help="timed trainings per batch size, with and without probe")
    p.add_argument("--batch_sizes", default="32,full")
    p.add_argument("--at", default="0,5,20", help="epochs of training after which to measure agreement")
    p.add_argument("--repeats", type=int, default=20, help="two_batch measurements per epoch in --at")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overrides", default="", help="config overrides, e.g. 'measure.noise_small_batch=16'")
    args = p.parse_args()

    from pipelines.workers import use_cores

    use_cores(args.threads)
    import keras

    from components.model import build_model
    from components.optimizers import batch_regime, make_optimizer
    from components.train import compile_model, fit_variant
    from pipelines.config import load_config
    from pipelines.fitting import gradient_probe
    from pipelines.prepare import prepare

    cfg = load_config(overrides=args.overrides, values={"training.epochs": args.epochs})
    prepared = prepare(cfg)
    pre, n = prepared.preprocessor, len(prepared.arrays.y_train)

    def model() -> keras.Model:
        keras.backend.clear_session()
        m = build_model(pre.n_features, pre.n_outputs, "classification", **cfg.model.model_dump(), seed=0)
        return compile_model(m, make_optimizer("adam", cfg.hyperparameters("adam")), "classification")

    report: dict = {"train_rows": n, "epochs": args.epochs, "cost": {}}
    for size in args.batch_sizes.split(","):
        batch = batch_regime(size if size == "full" else int(size), n).batch_size
        seconds: dict[str, list[float]] = {"without probe": [], "with probe": []}
        for _ in range(args.rounds):
            for key in seconds:
                probes = [gradient_probe(cfg, prepared)] if key == "with probe" else []
                network = model()
                started = time.perf_counter()
                fit_variant(network, prepared.arrays, batch, args.epochs, callbacks=probes, seed=0)
                seconds[key].append(time.perf_counter() - started)
        fastest, times = {k: min(v) for k, v in seconds.items()}, seconds.items()
        added = fastest["with probe"] - fastest["without probe"]
        report["cost"][f"batch {size}"] = {
            **{f"{k} (fastest, median s)": [round(min(v), 3), round(statistics.median(v), 3)] for k, v in times},
            "probe s per variant": round(added, 3),
            "probe ms per epoch": round(1000 * added / args.epochs, 2),
        }
    probe = gradient_probe(cfg, prepared)
    if hasattr(probe, "measure_noise"):  # checkouts before the exact method measure cost only
        report["agreement"] = _agreement(args, cfg, prepared, model(), probe)
    print(json.dumps(report))


def _agreement(args: argparse.Namespace, cfg: object, prepared: object, network: object, probe: object) -> dict:
    """Exact against repeated two_batch measurements of the noise scale along one batch-32 training."""
    import numpy as np

    from components.train import fit_variant

    out, done = {"small batch": probe.small, "draws": probe.draws}, 0
    for at in sorted(int(a) for a in args.at.split(",")):
        if at > done:
            fit_variant(network, prepared.arrays, 32, at - done, seed=done)
            done = at
        probe.set_model(network)
        exact = probe.measure_noise(exact=True).value
        estimates = []
        for seed in range(args.repeats):
            probe.rng = np.random.default_rng(1000 + seed)
            estimates.append(probe.measure_noise(exact=False))
        values = [e.value for e in estimates]
        out[f"epoch {at}"] = {
            "exact": round(exact, 1),
            "two_batch min, max": [round(min(values), 1), round(max(values), 1)],
            "largest deviation from exact": round(max(abs(v / exact - 1) for v in values), 4),
            "sd of estimates / exact": round(statistics.stdev(values) / exact, 4),
            "mean noise_scale_se / exact": round(statistics.mean(e.se for e in estimates) / exact, 4),
        }
    return out


if __name__ == "__main__":
    main()
