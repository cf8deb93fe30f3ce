"""One tiny config every test starts from, a throwaway MLflow store (or team server) per test that needs one,
and a guard that the suite leaves the clone's own tracking store (mlflow.db, mlruns/, mlartifacts/) untouched."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Config, load_config

if TYPE_CHECKING:
    from tests.servers import TeamServer

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "data.source": "iris",
    "model.hidden": [8],
    "training.epochs": 2,
    "training.batch_size": 16,
    "sweep.workers": 1,  # in-process; the worker pool has tests of its own
    "tuning.method": "none",  # the configured learning rates; tests/test_tuning*.py tune for real
    "sweep.collapse_threshold": None,  # 2 epochs teach little; tests/test_tuning*.py check the rule
}


# The user's own store in this clone: tests use temporary stores and artifact roots, never these.
OWN_STORE = ("mlflow.db", "mlruns", "mlartifacts")


def store_snapshot(root: Path) -> dict[str, str]:
    """Every file of the tracking store under `root`: relative path -> size and modification time.

    A write to a file changes its modification time; reading a user's multi-GB mlflow.db to hash it would not add more.
    """
    files = {}
    for name in OWN_STORE:
        top = root / name
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            stat = path.stat()
            files[str(path.relative_to(root))] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return files


def store_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What changed between two snapshots, one line per file: added, removed or changed."""
    lines = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    lines += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    lines += [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return lines


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker process gets its own temporary folder: descent's machine-wide locks live in
    the temporary folder, and one worker's test must not wait for (or skip because of) another worker's run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        import tempfile

        folder = Path(tempfile.gettempdir()) / f"descent-tests-{worker}"
        folder.mkdir(exist_ok=True)
        os.environ["TMPDIR"] = str(folder)  # for the processes tests start too
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SNAPSHOT] = store_snapshot(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    changes = store_changes(session.config.stash[_SNAPSHOT], store_snapshot(ROOT))
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        shown = "\n  ".join(changes[:20]) + (f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else "")
        message = f"the test suite changed this clone's own tracking store ({ROOT}):\n  {shown}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"ERROR: {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SNAPSHOT = pytest.StashKey[dict]()


@pytest.fixture
def tiny_cfg() -> Config:
    """Iris, one hidden layer of 8 units, 2 epochs, no learning-rate search: trains in about a second."""
    return load_config(values=TINY)


def tiny(**values: object) -> Config:
    """The tiny config with more dotted keys set, e.g. tiny(**{"training.optimizer": "sgd"})."""
    return load_config(values=TINY | values)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite tracking store (and artifact root) in a temporary working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


@pytest.fixture
def team_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TeamServer]:
    """A real `mlflow server` on a throwaway PostgreSQL database, set as MLFLOW_TRACKING_URI (tests/servers.py)."""
    from tests.servers import mlflow_on_postgres  # here, not at the top: it imports MLflow and the UI helpers

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    with mlflow_on_postgres(tmp_path / "artifacts") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        yield server


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """A small mixed-type CSV: numbers with gaps, a category, a text target with three classes."""
    rng = np.random.default_rng(0)
    n = 90
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 3, n).round(2),
            "weight": rng.integers(1, 100, n).astype(float),
            "colour": rng.choice(["red", "green", "blue"], n),
            "kind": np.repeat(["a", "b", "c"], n // 3),
        }
    )
    frame.loc[[3, 17, 40], "size"] = np.nan
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return path


def wait_for_runs(store: str, filter_string: str, timeout: float = 180) -> list:
    """Poll the store until runs of experiment 'descent' match `filter_string`; [] after `timeout`."""
    import time

    from mlflow.tracking import MlflowClient

    from pipelines.backend import ensure_store

    ensure_store(store)  # a new sqlite store's schema under descent's lock: made by two processes at once, it breaks
    client = MlflowClient(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("descent")
        if experiment is not None:
            found = client.search_runs([experiment.experiment_id], filter_string)
            if found:
                return found
        time.sleep(0.2)
    return []


def project_env(uri: str) -> dict[str, str]:
    """Environment for a subprocess of the project: this interpreter first on PATH, the temp store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = str(ROOT)
    return env
