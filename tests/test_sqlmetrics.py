"""Metric points written in one statement (pipelines/sqlmetrics.py) are stored exactly as MLflow's own log_batch
stores them: every point, NaN and infinities, the latest value per key, repeats, MLflow's errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines.sqlmetrics import insert_metrics, sql_store
from pipelines.store import Direct
from tests.servers import postgres_cluster

NOW = 1_700_000_000_000
# Batches as a sweep sends them, and the cases MLflow's store orders or cleans: a key's steps out of order across
# batches and within one (the latest is the greatest step, not the last sent), one step logged twice with different
# timestamps, a point twice in one batch, NaN and both infinities, a key only in a later batch.
BATCHES = [
    [("loss", 2.0, NOW, 0), ("acc", 0.1, NOW, 0), ("loss", 1.5, NOW + 5, 1), ("acc", 0.2, NOW + 5, 1)],
    [("loss", 9.0, NOW + 9, 0), ("loss", 9.0, NOW + 9, 0), ("noise", math.nan, NOW + 9, 3), ("acc", 0.3, NOW + 7, 1)],
    [("big", math.inf, NOW + 11, 4), ("small", -math.inf, NOW + 11, 4), ("loss", 1.25, NOW + 12, 2)],
    [("noise", 0.5, NOW + 13, 2), ("acc", 0.25, NOW + 2, 1), ("lr", 0.1, NOW + 13, 5), ("lr", 0.2, NOW + 14, 4)],
]


def _stored(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    """Every stored point by key, and the run's latest value per key (NaN as a string: NaN != NaN)."""
    run = client.get_run(run_id)
    history = {
        key: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }
    return history, {k: repr(v) for k, v in run.data.metrics.items()}


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_uri(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new SQL tracking store: a sqlite file, or a database of a throwaway PostgreSQL cluster."""
    monkeypatch.chdir(tmp_path)  # where the experiments' artifacts would go
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    with postgres_cluster() as postgres:
        yield postgres.create_database("metrics", "descent")


def test_points_written_in_one_statement_are_stored_as_mlflow_stores_them(sql_uri):
    direct, client = Direct(sql_uri), MlflowClient(sql_uri)
    assert direct.sql is not None, "a SQL store takes the one-statement path"
    experiment = client.create_experiment("same")
    ours, theirs = (client.create_run(experiment).info.run_id for _ in range(2))
    for batch in BATCHES:
        assert insert_metrics(direct.sql, ours, batch), "no point of these was stored before"
        client.log_batch(theirs, metrics=[_metric(p) for p in batch])
    assert _stored(client, ours) == _stored(client, theirs)
    history, latest = _stored(client, ours)
    assert latest == {
        "loss": "1.25",
        "acc": "0.3",
        "noise": "nan",
        "big": "1.7976931348623157e+308",
        "small": "-1.7976931348623157e+308",
        "lr": "0.1",
    }
    assert [step for step, *_ in history["loss"]] == [0, 0, 1, 2]  # the point sent twice in one batch once


def test_a_batch_that_repeats_a_stored_point_is_written_by_mlflow_without_the_repeat(store):
    direct, client = Direct(store), MlflowClient(store)
    experiment = client.create_experiment("repeat")
    run_id = client.create_run(experiment).info.run_id
    direct.log_batch(run_id, BATCHES[0])
    again = [*BATCHES[0][:2], ("loss", 1.0, NOW + 20, 2)]  # two points stored already, one new
    assert not insert_metrics(direct.sql, run_id, again), "the repeat is MLflow's to skip"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1], "nothing of it was written"
    direct.log_batch(run_id, again)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 2.0), (1, 1.5), (2, 1.0)]
    assert client.get_run(run_id).data.metrics["loss"] == 1.0


def test_a_bad_point_or_a_deleted_run_is_mlflows_own_error_and_nothing_is_written(store):
    direct, client = Direct(store), MlflowClient(store)
    experiment = client.create_experiment("errors")
    run_id = client.create_run(experiment).info.run_id
    bad = [("loss", 1.0, NOW, 0), ("loss", 2.0, -1, 1)]
    with pytest.raises(MlflowException) as ours:
        direct.log_batch(run_id, bad)
    with pytest.raises(MlflowException) as theirs:
        client.log_batch(run_id, metrics=[_metric(p) for p in bad[1:]])
    assert "Timestamp must be a nonnegative long" in str(ours.value)
    assert str(ours.value).replace("metrics[1]", "metrics[0]") == str(theirs.value)
    assert client.get_metric_history(run_id, "loss") == []
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        direct.log_batch(run_id, BATCHES[0])


def test_a_store_behind_a_server_takes_mlflows_own_path():
    assert sql_store(MlflowClient("http://127.0.0.1:9")) is None


def _metric(point: tuple) -> object:
    from mlflow.entities import Metric

    key, value, timestamp, step = point
    return Metric(key, value, timestamp, step)
