"""The large-data path: generated N-row x 50-feature Parquet files through a 2-variant sweep.

Reports peak resident memory against the float32 feature matrix, and seconds per epoch, as rows grow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 50


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """A classification table: 50 float32 features, a binary target that depends on a few of them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.5, size=rows) > 0).astype(np.int8)
    table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURES)}, "y": y})
    pq.write_table(table, path)


def run_sweep(path: Path, epochs: int, store: str) -> dict:
    """One 2-variant sweep in a fresh process: its peak RSS (from the kernel) and wall seconds."""
    command = [sys.executable, "-m", "pipelines.sweep", "--data", str(path), "--target", "y", "--fresh"]
    command += ["--epochs", str(epochs), "--optimizers", "adam", "--batch_sizes", "256,4096"]
    command += ["--overrides", "sweep.workers=1 tuning.method=none"]  # memory, not the learning-rate search
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": store}
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=path.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"sweep on {path.name} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_seconds": seconds}


def epoch_seconds(store: str) -> dict:
    """Median seconds per epoch (after the first) of each variant of the newest sweep in `store`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("descent").experiment_id
    newest = client.search_runs([experiment], "tags.`descent.kind` = 'sweep'", max_results=1)[0].info.run_id
    out = {}
    for run in client.search_runs(
        [experiment], f"tags.`descent.sweep_id` = '{newest}' and tags.`descent.kind` = 'variant'"
    ):
        history = client.get_metric_history(run.info.run_id, "epoch_train_seconds")
        steady = [m.value for m in sorted(history, key=lambda m: m.step)][1:] or [history[0].value]
        out[run.info.run_name] = statistics.median(steady)
    return out


def main() -> None:
    """Generate each size, sweep it, print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", default="100000,300000,1000000")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline = folder / "tiny.parquet"
        generate(baseline, 20000)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        results["baseline_20000_rows"] = run_sweep(baseline, 1, store)
        for rows in (int(r) for r in args.rows.split(",")):
            path = folder / f"rows-{rows}.parquet"
            generate(path, rows)
            measured = run_sweep(path, args.epochs, store)
            measured["feature_matrix_mb"] = rows * FEATURES * 4 / 2**20
            measured["epoch_seconds"] = epoch_seconds(store)
            results[str(rows)] = measured
            path.unlink()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
