"""What a person sees: a real sweep in a real `mlflow server`, looked at in headless Chromium."""

import pytest
from mlflow.tracking import MlflowClient

from pipelines.sweep import sweep
from pipelines.ui import capture_sweep, free_port, mlflow_server
from tests.conftest import ROOT, tiny

pytestmark = pytest.mark.slow
SCREENSHOTS = ROOT / "outputs" / "ui-screenshots"


def test_every_variant_is_visible_in_the_mlflow_ui(store):
    cfg = tiny(**{"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16]})
    result = sweep(cfg)
    client = MlflowClient(store)
    children = client.search_runs(
        [result["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'"
    )
    names = sorted(c.info.run_name for c in children)
    assert len(names) == 4

    with mlflow_server(store, free_port()) as url:
        seen = capture_sweep(url, result["experiment_id"], result["parent_run_id"], names, SCREENSHOTS)

    assert sorted(seen.children_visible) == names, "a variant's run is missing from the expanded sweep"
    assert {"loss", "val_loss", "val_accuracy", "epoch_seconds", "updates"} <= set(seen.chart_titles)
    assert {"comparison.csv", "summary.md", "val_loss_by_update.png", "test_metric.png"} <= set(seen.artifacts)
    assert [s.name for s in seen.screenshots] == ["runs-table.png", "runs-charts.png", "sweep-artifacts.png"]
    for shot in seen.screenshots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
