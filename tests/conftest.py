"""One tiny config every test starts from, and a throwaway MLflow store (or team server) per test that needs one."""

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
