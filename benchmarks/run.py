"""The speed benchmark: descent's sweep side by side with its peers in one run; writes benchmarks/RESULTS.md.

python -m benchmarks.run              # the default grid (28 variants x 20 epochs on digits), ~30 min
python -m benchmarks.run --smoke      # a 4-variant, 1-epoch version (the CI test), ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import GRID
from benchmarks.tuned import tuning_section, tuning_targets

ROOT = Path(__file__).resolve().parent.parent


def _python(module: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    """Run `python -m module args` in a fresh process; (wall seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def _json(stdout: str) -> dict:
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))


def descent_sweep(grid: dict, epochs: int, workers: int, tuning: str = "none") -> dict:
    """descent's own sweep, as a user runs it, tracked in a fresh sqlite store; wall time and test accuracy.

    `tuning`: tuning.method (none = each optimizer's configured learning rate, as the peers train).
    """
    import pandas as pd
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        overrides = f"sweep.workers={workers} tuning.method={tuning}"
        args = ["--data", "digits", "--epochs", str(epochs), "--fresh", "--overrides", overrides]
        args += ["--optimizers", ",".join(grid["optimizers"]), "--batch_sizes", ",".join(map(str, grid["batch_sizes"]))]
        seconds, _ = _python("pipelines.sweep", *args, env={"MLFLOW_TRACKING_URI": store}, cwd=Path(tmp))
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("descent").experiment_id
        runs = client.search_runs([experiment], "tags.`descent.kind` = 'variant'")
        accuracy = {r.info.run_name: r.data.metrics.get("test_accuracy", float("nan")) for r in runs}
        in_sweep = {
            f"bs{size}": statistics.median(
                r.data.metrics["updates_per_second"]
                for r in runs
                if r.data.params["batch_size"] == str(size) and "updates_per_second" in r.data.metrics
            )
            for size in (1, 32)
            if any(r.data.params["batch_size"] == str(size) for r in runs)
        }
        [parent] = client.search_runs([experiment], "tags.`descent.kind` = 'sweep'")
        table = pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv", tmp))
        columns = ["variant", "status", "learning_rate", "final_val_accuracy", "trials", "tuning_seconds"]
    return {
        "seconds": seconds,
        "test_accuracy": accuracy,
        "updates_per_second_in_sweep": in_sweep,
        "comparison": table[columns].to_dict("records"),  # best first
    }


def machine() -> dict:
    """Facts about this machine a reader needs to weigh the figures."""
    import psutil
    import tensorflow as tf

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "system": platform.platform(),
    }


def measure(smoke: bool) -> dict:
    """Every figure of RESULTS.md, measured now on this machine, one after the other.

    The smoke version checks the harness, not speed: it runs its stages side by side to finish sooner.
    """
    grid = {"optimizers": ["adam", "sgd"], "batch_sizes": ["full", 32]} if smoke else GRID
    epochs = 1 if smoke else 20
    flags = ["--epochs", str(epochs), "--optimizers", ",".join(grid["optimizers"])]
    flags += ["--batch_sizes", ",".join(map(str, grid["batch_sizes"]))]
    limit_args = ["--epochs", "3", "--rounds", "1"] if smoke else []
    large_args = ["--rows", "30000", "--epochs", "2"] if smoke else []
    stages = {
        "descent_2_workers": lambda: descent_sweep(grid, epochs, workers=2),
        "descent_tuned": lambda: descent_sweep(grid, epochs, workers=2, tuning="grid"),
        "descent_1_worker": lambda: descent_sweep(grid, epochs, workers=1),
        "descent_untracked": lambda: _timed("benchmarks.untracked", *flags),
        "peer": lambda: _timed("benchmarks.peer", *flags, fresh_store=True),
        "sklearn": lambda: _json(_python("benchmarks.sklearn_mlp", *flags)[1]),
        "limit": lambda: _json(_python("benchmarks.limit", *limit_args)[1]),
        "large": lambda: _json(_python("benchmarks.large", *large_args)[1]),
    }
    results: dict = {"grid": grid, "epochs": epochs, "machine": machine(), "commit": _commit()}
    with ThreadPoolExecutor(max_workers=len(stages) if smoke else 1) as pool:
        futures = {name: pool.submit(stage) for name, stage in stages.items()}
        results.update({name: future.result() for name, future in futures.items()})
    results["measured_at"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    return results


def _timed(module: str, *args: str, fresh_store: bool = False) -> dict:
    """A peer's JSON line plus the wall seconds of its whole process; `fresh_store`: track to a new sqlite file."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"} if fresh_store else None
        seconds, out = _python(module, *args, env=env, cwd=Path(tmp) if fresh_store else None)
    return _json(out) | {"wall_seconds": seconds}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def mean(values: dict) -> float:
    return statistics.fmean(values.values())


def report(r: dict, command: str) -> str:
    """RESULTS.md: every figure, the ratios, each target met or not."""
    d2, d1, untracked, peer, sk, lim = (
        r[k] for k in ("descent_2_workers", "descent_1_worker", "descent_untracked", "peer", "sklearn", "limit")
    )
    n = len(d2["test_accuracy"])
    speedup = peer["wall_seconds"] / d2["seconds"]
    acc_gap = (mean(d2["test_accuracy"]) - mean(peer["test_accuracy"])) * 100
    tracking = (d1["seconds"] - untracked["wall_seconds"]) / d1["seconds"]
    scaling = d1["seconds"] / d2["seconds"]
    bs1 = lim["descent_steps_per_second_bs1"] / lim["limit_steps_per_second_bs1"]
    bs32 = lim["descent_steps_per_second_bs32"] / lim["limit_steps_per_second_bs32"]
    sk_epoch = sk["seconds"]["adam-bs32"] / sk["epochs"]  # the same optimizer as descent's figure (Adam)
    ours_epoch = lim["descent_epoch_seconds_bs32"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    m = r["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {r['measured_at']} at commit {r['commit']} in one run of `{command}`, every figure on the same",
        f"machine one after the other: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GiB, {m['gpus']} GPU(s),",
        f"Python {m['python']}, TensorFlow {m['tensorflow']}, {m['system']}.",
        f"Grid: {', '.join(r['grid']['optimizers'])} x batch sizes {', '.join(map(str, r['grid']['batch_sizes']))}"
        f" ({n} variants), {r['epochs']} epochs, digits (descent's split: 1,257 training rows).",
        "Wall times include starting Python and importing TensorFlow, as a user waits for them.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| default sweep >= 6x faster than the plain Keras + autolog loop | {speedup:.2f}x "
        f"({d2['seconds']:.0f} s vs {peer['wall_seconds']:.0f} s) | {verdict(speedup >= 6)} |",
        f"| mean test accuracy within 1 point of the loop's | {acc_gap:+.2f} points "
        f"({mean(d2['test_accuracy']):.4f} vs {mean(peer['test_accuracy']):.4f}) | {verdict(abs(acc_gap) <= 1)} |",
        f"| batch-1 throughput >= 80% of the compiled-epoch limit | {bs1:.0%} "
        f"({lim['descent_steps_per_second_bs1']:,.0f} vs {lim['limit_steps_per_second_bs1']:,.0f} updates/s) "
        f"| {verdict(bs1 >= 0.8)} |",
        f"| batch-32 throughput >= 70% of the limit | {bs32:.0%} "
        f"({lim['descent_steps_per_second_bs32']:,.0f} vs {lim['limit_steps_per_second_bs32']:,.0f} updates/s) "
        f"| {verdict(bs32 >= 0.7)} |",
        f"| batch 32, Adam: seconds per epoch (after the first) <= scikit-learn's MLPClassifier | "
        f"{ours_epoch * 1000:.1f} ms "
        f"vs {sk_epoch * 1000:.1f} ms | {verdict(ours_epoch <= sk_epoch)} |",
        f"| tracking <= 5% of sweep time (one worker, tracked vs the same sweep untracked) | {tracking:.1%} "
        f"({d1['seconds']:.0f} s vs {untracked['wall_seconds']:.0f} s) | {verdict(tracking <= 0.05)} |",
        f"| two workers on two cores >= 1.6x one worker | {scaling:.2f}x "
        f"({d1['seconds']:.0f} s vs {d2['seconds']:.0f} s) | {verdict(scaling >= 1.6)} |",
        *large_targets(r["large"], verdict),
        *tuning_targets(r, verdict),
        "",
        "How each is measured: sweep times are wall seconds of `python -m pipelines.sweep` on a fresh sqlite store",
        "(store creation included), the peer's of `python -m benchmarks.peer`; throughputs are updates per second",
        "of epochs 2 onwards, descent's `fit_variant` and the bare loop alternating in one process",
        "(`benchmarks/limit.py`); tracking is the one-worker sweep against `benchmarks/untracked.py`, the same",
        "variants, probes and evaluations through the same components without MLflow. What tracking adds per",
        "variant: creating the run, its params and tags, metric batches, and logging the servable model (network,",
        "preprocessor, code, signature); per sweep: creating a new store's schema, the dataset inputs, and the",
        "comparison (reading every run back, five plots). Large data: peak RSS is the kernel's `ru_maxrss` of the",
        "sweep process (`benchmarks/large.py`).",
        "",
        "One-time compile cost per variant (the first epoch's extra seconds: tracing and compiling the epoch):",
        f"descent {lim['descent_compile_seconds_bs1']:.2f} s at batch size 1, "
        f"{lim['descent_compile_seconds_bs32']:.2f} s at 32; the bare limit loop "
        f"{lim['limit_compile_seconds_bs1']:.2f} s and {lim['limit_compile_seconds_bs32']:.2f} s.",
        "Throughput inside the two-worker sweep (each worker on one core, gradient measurements on):",
        ", ".join(f"{k} {v:,.0f} updates/s" for k, v in d2["updates_per_second_in_sweep"].items()) + ".",
        "",
        "## Test accuracy per variant",
        "",
        "| variant | descent | Keras + autolog loop | scikit-learn MLPClassifier | sklearn seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(d2["test_accuracy"]):
        skl = sk["test_accuracy"].get(name)
        skl_s = sk["seconds"].get(name)
        lines.append(
            f"| {name} | {d2['test_accuracy'][name]:.4f} | {peer['test_accuracy'].get(name, float('nan')):.4f} | "
            + (f"{skl:.4f} | {skl_s:.2f} |" if skl is not None else "– | – |")
        )
    lines += ["", *large_section(r["large"]), "", *tuning_section(r)]
    lines += ["", "## Raw figures", "", "```json", json.dumps(r, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def large_targets(large: dict, verdict: Callable[[bool], str]) -> list[str]:
    """The two large-data targets, on the largest file measured."""
    base = large["baseline_20000_rows"]["peak_rss_mb"]
    sizes = sorted((k for k in large if k.isdigit()), key=int)
    big, small = large[sizes[-1]], large[sizes[0]]
    ratio = big["peak_rss_mb"] / big["feature_matrix_mb"]
    above = (big["peak_rss_mb"] - base) / big["feature_matrix_mb"]
    rows = int(sizes[-1]) / int(sizes[0])
    grow = big["epoch_seconds"]["adam-bs256"] / small["epoch_seconds"]["adam-bs256"]
    return [
        f"| {int(sizes[-1]):,} rows: peak RSS <= 3x the float32 feature matrix | {ratio:.1f}x in all; "
        f"{above:.1f}x above the {base:,.0f} MB a small sweep's process needs | {verdict(ratio <= 3)} |",
        f"| time per epoch grows linearly with rows | {grow:.1f}x for {rows:.0f}x the rows | "
        f"{verdict(grow <= rows * 1.2)} |",
    ]


def large_section(large: dict) -> list[str]:
    """Peak memory and seconds per epoch as the generated Parquet file grows."""
    large = dict(large)
    base = large.pop("baseline_20000_rows")
    lines = [
        "## Large data: N rows x 50 float32 features from Parquet, 2-variant sweep (adam, batch 256 and 4096)",
        "",
        f"A process that imports TensorFlow and MLflow and sweeps 20,000 rows peaks at {base['peak_rss_mb']:,.0f} MB "
        "(the baseline below).",
        "",
        "| rows | feature matrix (float32) | peak RSS | above baseline | above baseline / matrix | "
        "seconds per epoch (bs 256) | seconds per epoch (bs 4096) | sweep wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rows, m in large.items():
        above = m["peak_rss_mb"] - base["peak_rss_mb"]
        lines.append(
            f"| {int(rows):,} | {m['feature_matrix_mb']:.0f} MB | {m['peak_rss_mb']:,.0f} MB | {above:,.0f} MB | "
            f"{above / m['feature_matrix_mb']:.1f}x | {m['epoch_seconds'].get('adam-bs256', float('nan')):.2f} | "
            f"{m['epoch_seconds'].get('adam-bs4096', float('nan')):.2f} | {m['wall_seconds']:.0f} s |"
        )
    sizes = sorted(large, key=int)
    if len(sizes) >= 2:
        a, b = large[sizes[0]], large[sizes[-1]]
        grow = b["epoch_seconds"]["adam-bs256"] / a["epoch_seconds"]["adam-bs256"]
        lines += [
            "",
            f"From {int(sizes[0]):,} to {int(sizes[-1]):,} rows ({int(sizes[-1]) / int(sizes[0]):.0f}x) the time per "
            f"epoch at batch size 256 grows {grow:.1f}x (linear would be {int(sizes[-1]) / int(sizes[0]):.0f}x).",
        ]
    return lines


def main() -> None:
    """Measure everything and write the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a tiny grid and 1 epoch: checks the harness, not speed")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--rewrite", metavar="RESULTS.md", help="only re-render the raw figures of an earlier report")
    args = p.parse_args()
    command = "python -m benchmarks.run" + (" --smoke" if args.smoke else "")
    if args.rewrite:
        raw = json.loads(Path(args.rewrite).read_text().split("```json")[1].split("```")[0])
    else:
        raw = measure(args.smoke)
    text = report(raw, command)
    Path(args.out).write_text(text)
    print(text.split("## Test accuracy")[0])


if __name__ == "__main__":
    main()
