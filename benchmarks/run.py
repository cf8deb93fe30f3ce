"""The speed benchmark: descent's sweep side by side with its peers in one run; writes benchmarks/RESULTS.md.

python -m benchmarks.run              # every figure and target (the default grid, sweeps five times), ~30 min
python -m benchmarks.run --smoke      # a 4-variant, 1-epoch version that checks the harness (a CI test), ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
from benchmarks.report import report

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5  # each sweep, interleaved with the others: medians, on a machine others may share


def _python(module: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    """`python -m module args` in a fresh process: wall and CPU seconds, load average before, stdout."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process and its workers: every child waited for
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu, "load_before": load, "stdout": done.stdout}


def _json(stdout: str) -> dict:
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))


def descent_sweep(grid: dict, epochs: int, workers: int, tuning: str = "none") -> dict:
    """descent's own sweep as a user runs it, tracked in a fresh sqlite store: times and what it measured.

    `tuning`: tuning.method (none = each optimizer's configured learning rate, as the peers train).
    """
    import pandas as pd
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        overrides = f"sweep.workers={workers} tuning.method={tuning}"
        args = ["--data", "digits", "--epochs", str(epochs), "--fresh", "--overrides", overrides]
        args += ["--optimizers", ",".join(grid["optimizers"]), "--batch_sizes", ",".join(map(str, grid["batch_sizes"]))]
        timed = _python("pipelines.sweep", *args, env={"MLFLOW_TRACKING_URI": store}, cwd=Path(tmp))
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
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # this harness's console: its own lines only
        table = pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv", tmp))
        columns = ["variant", "status", "learning_rate", "final_val_accuracy", "trials", "tuning_seconds", "updates"]
    timed.pop("stdout")
    return timed | {
        "test_accuracy": accuracy,
        "updates_per_second_in_sweep": in_sweep,
        "comparison": table[columns].to_dict("records"),  # best first
    }


def untracked(grid: dict, epochs: int) -> dict:
    """The one-worker sweep's work without MLflow (benchmarks/untracked.py)."""
    flags = ["--epochs", str(epochs), "--optimizers", ",".join(grid["optimizers"])]
    timed = _python("benchmarks.untracked", *flags, "--batch_sizes", ",".join(map(str, grid["batch_sizes"])))
    return {**_json(timed.pop("stdout")), **timed}


def peer(grid: dict, epochs: int) -> dict:
    """The plain Keras + autolog loop (benchmarks/peer.py), tracked to a fresh sqlite store."""
    flags = ["--epochs", str(epochs), "--optimizers", ",".join(grid["optimizers"])]
    flags += ["--batch_sizes", ",".join(map(str, grid["batch_sizes"]))]
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        timed = _python("benchmarks.peer", *flags, env=env, cwd=Path(tmp))  # its artifacts in tmp/mlruns too
    return {**_json(timed.pop("stdout")), **timed}


def startup() -> dict:
    """What no sweep can avoid: a Python process importing TensorFlow and Keras (median of three)."""
    times = [_python("benchmarks.common", "--import")["seconds"] for _ in range(3)]
    return {"seconds": statistics.median(times), "all": times}


def ci_run() -> dict:
    """`.ci/run` on a fresh clone of this commit: install (pip cache warm), lint and the whole test suite."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "descent"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        load, started = os.getloadavg()[0], time.perf_counter()
        done = subprocess.run(["bash", ".ci/run"], cwd=clone, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    lines = done.stdout.splitlines()
    failed = [line[:400] for line in lines if line.startswith(("FAILED ", "ERROR "))]  # which, and pytest's why
    summary = failed + [line for line in lines if " passed" in line or " failed" in line][-1:]
    return {"seconds": seconds, "returncode": done.returncode, "load_before": load, "summary": summary}


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


def measure(smoke: bool, ci: bool) -> dict:
    """Every figure of RESULTS.md, measured now on this machine, one after the other.

    The sweeps run REPEATS times, interleaved (two workers, one worker, untracked, tuned), so that a passing load
    weighs on all of them alike; the report quotes medians. The smoke version checks the harness, not speed: one
    repeat, its stages side by side to finish sooner, no CI run (the CI runs it).
    """
    grid = {"optimizers": ["adam", "sgd"], "batch_sizes": ["full", 32]} if smoke else GRID
    epochs = 1 if smoke else 20
    flags = ["--epochs", str(epochs), "--optimizers", ",".join(grid["optimizers"])]
    flags += ["--batch_sizes", ",".join(map(str, grid["batch_sizes"]))]
    limit_args = ["--epochs", "3", "--rounds", "1"] if smoke else []
    large_args = ["--rows", "30000", "--epochs", "2"] if smoke else []
    stacked_args = ["--epochs", "2", "--rounds", "1"] if smoke else []
    sweeps: dict[str, Callable[[], dict]] = {
        "descent_2_workers": lambda: descent_sweep(grid, epochs, workers=2),
        "descent_1_worker": lambda: descent_sweep(grid, epochs, workers=1),
        "descent_untracked": lambda: untracked(grid, epochs),
        "descent_tuned": lambda: descent_sweep(grid, epochs, workers=2, tuning="grid"),
    }
    stages: dict[str, Callable[[], object]] = {
        f"{name}#{i}": stage for i in range(1 if smoke else REPEATS) for name, stage in sweeps.items()
    }
    stages |= {
        "peer": lambda: peer(grid, epochs),
        "sklearn": lambda: _json(_python("benchmarks.sklearn_mlp", *flags)["stdout"]),
        "limit": lambda: _json(_python("benchmarks.limit", *limit_args)["stdout"]),
        "startup": startup,
        "stacked": lambda: _json(_python("benchmarks.stacked", *stacked_args)["stdout"]),
        "large": lambda: _json(_python("benchmarks.large", *large_args)["stdout"]),
    }
    if ci and not smoke:
        stages["ci"] = ci_run
    results: dict = {"grid": grid, "epochs": epochs, "machine": machine(), "commit": _commit(), "smoke": smoke}
    started = os.getloadavg()
    with ThreadPoolExecutor(max_workers=len(stages) if smoke else 1) as pool:
        futures = {name: pool.submit(stage) for name, stage in stages.items()}
        done = {name: future.result() for name, future in futures.items()}
    for name in sweeps:  # every repeat, and their medians
        repeats = [done.pop(f"{name}#{i}") for i in range(1 if smoke else REPEATS)]
        results[name] = repeats[0] | {k: statistics.median(r[k] for r in repeats) for k in ("seconds", "cpu_seconds")}
        results[name]["repeats"] = [{k: r[k] for k in ("seconds", "cpu_seconds", "load_before")} for r in repeats]
    results |= done
    results["load_average"] = {"at start": started[0], "at end": os.getloadavg()[0]}
    results["measured_at"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    return results


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    """Measure everything and write the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a tiny grid and 1 epoch: checks the harness, not speed")
    p.add_argument("--no-ci", dest="ci", action="store_false", help="skip timing .ci/run on a fresh clone")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--rewrite", metavar="RESULTS.md", help="only re-render the raw figures of an earlier report")
    args = p.parse_args()
    command = "python -m benchmarks.run" + (" --smoke" if args.smoke else "")
    if args.rewrite:
        raw = json.loads(Path(args.rewrite).read_text().split("```json")[1].split("```")[0])
    else:
        raw = measure(args.smoke, args.ci)
    text = report(raw, command)
    Path(args.out).write_text(text)
    print(text.split("## Test accuracy")[0])


if __name__ == "__main__":
    main()
