"""What a person sees: a real sweep in a real `mlflow server`, looked at in headless Chromium."""

import pytest
from mlflow.tracking import MlflowClient

from pipelines.browser import capture_grouped, capture_sweep
from pipelines.grouping import hint
from pipelines.study import sweep
from pipelines.ui import free_port, mlflow_server
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


def test_group_by_variant_and_by_optimizer_draws_one_line_per_group(store):
    cfg = tiny(**{"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16], "sweep.seeds": [0, 1]})
    result = sweep(cfg)
    client = MlflowClient(store)
    children = client.search_runs(
        [result["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'"
    )
    for child in children:  # the tags the UI's Group by offers
        tags, params = child.data.tags, child.data.params
        assert (tags["optimizer"], tags["batch_size"]) == (params["optimizer"], params["batch_size"])
        assert tags["variant"] == child.info.run_name.rsplit("-seed", 1)[0]
        assert tags["batch_regime"] == {"batch": "batch", "minibatch": "mini-batch"}[params["regime"]]
    variants = {"adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}
    link = hint(result["experiment_id"], result["parent_run_id"], cfg.sweep.seeds).splitlines()[0]
    assert link.startswith("or open it grouped by optimizer: http://127.0.0.1:5000/#/experiments/")

    with mlflow_server(store, free_port()) as url:
        seen = capture_grouped(url, result["experiment_id"], ["variant", "optimizer"], SCREENSHOTS, link=link)

    # one group per variant (its two seeds), one per optimizer; the chart draws one line per group, and one for the
    # sweep's own run, which has no such tag ("Unassigned")
    assert sorted(seen["variant"].groups) == sorted(variants)
    assert sorted(seen["variant"].lines) == sorted([*variants, "Unassigned"])
    assert sorted(seen["optimizer"].groups) == ["adam", "sgd"]
    assert sorted(seen["optimizer"].lines) == ["Unassigned", "adam", "sgd"]
    assert sorted(seen["link"].groups) == ["adam", "sgd"]  # the printed link opens the same grouping
    assert set(seen["link"].lines) >= {"adam", "sgd"}
    for grouped in seen.values():
        assert grouped.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
