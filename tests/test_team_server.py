"""A team's set-up for real: a sweep logs to `mlflow server` on PostgreSQL; runs land in the database, nested."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.study import sweep
from tests.conftest import tiny

pytestmark = pytest.mark.slow
GRID = {"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16], "measure.gradients": False}
NAMES = {"adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}


def test_a_sweep_logs_every_variant_nested_to_the_postgres_backed_server(team_server, tmp_path):
    result = sweep(tiny(**GRID))
    parent_id = result["parent_run_id"]
    client = MlflowClient(team_server.url)
    runs = {r.info.run_id: r for r in client.search_runs([result["experiment_id"]], max_results=100)}
    children = {i: r for i, r in runs.items() if i != parent_id}
    assert parent_id in runs and len(children) == 4
    assert {r.info.run_name for r in children.values()} == NAMES
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert {r.data.tags.get("mlflow.parentRunId") for r in children.values()} == {parent_id}
    assert "mlflow.parentRunId" not in runs[parent_id].data.tags

    # the runs are rows of PostgreSQL's `runs` table, nested there too, with their per-epoch metrics
    query = team_server.postgres.query
    assert dict(query("SELECT run_uuid, status FROM runs", team_server.database)) == dict.fromkeys(runs, "FINISHED")
    nested = query("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId'", team_server.database)
    assert dict(nested) == dict.fromkeys(children, parent_id)
    logged = query("SELECT DISTINCT run_uuid FROM metrics WHERE key = 'val_loss' AND step = 2", team_server.database)
    assert {row[0] for row in logged} == set(children)

    # artifacts go through the server into its --artifacts-destination, and come back through it
    assert client.get_experiment(result["experiment_id"]).artifact_location.startswith("mlflow-artifacts:")
    table = pd.read_csv(client.download_artifacts(parent_id, "comparison/comparison.csv", str(tmp_path)))
    assert set(table["variant"]) == NAMES and set(table["run_id"]) == set(children)
    stored = [p for p in team_server.artifacts.rglob("comparison.csv") if parent_id in p.parts]
    assert len(stored) == 1
    assert pd.read_csv(stored[0]).equals(table)
    # nothing was written to a local store beside the server
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
