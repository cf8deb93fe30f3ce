import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.data import load_dataset
from pipelines import fitting
from pipelines.split import split
from pipelines.train import train
from tests.conftest import tiny


def _run(store, run_id):
    return MlflowClient(store).get_run(run_id)


def test_train_records_one_complete_run(store, tiny_cfg):
    import mlflow

    result = train(tiny_cfg)
    run = _run(store, result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "adam-bs16"
    p = run.data.params
    assert (p["optimizer"], p["batch_size"], p["epochs"], p["seed"], p["regime"]) == (
        "adam",
        "16",
        "2",
        "0",
        "minibatch",
    )
    assert float(p["learning_rate"]) == 0.001
    assert p["model.api"] == "sequential" and p["data.source"] == "iris" and p["beta_1"] == "0.9"
    client = MlflowClient(store)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds", "updates"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    for key in ("grad_norm/hidden_1/kernel", "grad_norm/output/bias", "update_norm/output/bias"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
        assert all(m.value > 0 for m in history), key
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "noise_scale"))
    updates = [m.value for m in client.get_metric_history(run.info.run_id, "updates")]
    assert updates == [7, 14]  # 104 training rows at batch 16: ceil(104 / 16) = 7 per epoch
    assert {"test_accuracy", "test_loss", "train_seconds", "total_updates", "process_peak_memory_mb"} <= set(
        run.data.metrics
    )
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "validation", "test"}
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"iris-train", "iris-validation", "iris-test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"split_report.json", "config.yaml"} <= artifacts
    tags = run.data.tags
    assert tags["descent.data_digest"] == load_dataset("iris").digest
    assert tags["descent.config_digest"] == tiny_cfg.digest()
    assert tags["descent.model_uri"] == result["model_uri"]

    model = mlflow.pyfunc.load_model(result["model_uri"])
    raw = load_dataset("iris").features.head(6)
    predictions = model.predict(raw)
    assert set(predictions["prediction"]) <= {0, 1, 2}
    assert len(predictions) == 6


def test_model_serves_raw_rows_with_text_and_gaps(store, csv_file):
    import mlflow
    import pandas as pd

    cfg = tiny(**{"data.source": str(csv_file), "data.target": "kind", "training.epochs": 1})
    result = train(cfg)
    rows = pd.read_csv(csv_file).drop(columns=["kind"]).head(5)
    rows.loc[0, "size"] = np.nan
    predictions = mlflow.pyfunc.load_model(result["model_uri"]).predict(rows)
    assert set(predictions["prediction"]) <= {"a", "b", "c"}


def test_regression_variant(store):
    result = train(tiny(**{"data.source": "diabetes", "training.batch_size": "full", "training.optimizer": "sgd"}))
    run = _run(store, result["run_id"])
    assert run.info.run_name == "sgd-full"
    assert run.data.params["regime"] == "batch"
    assert "test_mae" in run.data.metrics
    assert run.data.metrics["total_updates"] == 2  # full batch: one update per epoch
    # the target is standardised for training, but metrics and predictions are in its own units
    target = load_dataset("diabetes").target
    assert 0.2 * target.std() < run.data.metrics["test_mae"] < 2 * target.std()
    import mlflow

    predictions = mlflow.pyfunc.load_model(result["model_uri"]).predict(load_dataset("diabetes").features.head(20))
    assert abs(predictions["prediction"].mean() - target.mean()) < target.std()


def test_a_failure_inside_the_run_ends_it_failed(store, tiny_cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(fitting, "make_trainer", broken)
    with pytest.raises(RuntimeError):
        train(tiny_cfg)
    runs = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("descent").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["descent.error"] == "RuntimeError: the disk is full"


def test_split_records_its_report(store, tiny_cfg):
    report = split(tiny_cfg)
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("descent").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows_in_two_splits"] == 0
    assert run.data.metrics["train_rows"] == report["rows"]["train"]
    path = client.download_artifacts(run.info.run_id, "split_report.json")
    with open(path) as handle:
        assert json.load(handle)["rows"] == report["rows"]


def test_same_config_and_seed_give_identical_runs(store):
    cfg = tiny(**{"training.epochs": 3})
    a, b = train(cfg), train(cfg)
    client = MlflowClient(store)
    run_a, run_b = client.get_run(a["run_id"]), client.get_run(b["run_id"])
    assert run_a.data.tags["descent.split_digest"] == run_b.data.tags["descent.split_digest"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "updates"):
        history_a = [m.value for m in client.get_metric_history(a["run_id"], key)]
        history_b = [m.value for m in client.get_metric_history(b["run_id"], key)]
        assert history_a == history_b, key
    assert run_a.data.metrics["test_loss"] == run_b.data.metrics["test_loss"]


def test_how_a_file_was_read_is_recorded_on_the_run(store, tmp_path):
    rows = load_dataset("iris").features.assign(label=load_dataset("iris").target.map({0: "sétosa", 1: "b", 2: "c"}))
    path = tmp_path / "iris.csv.gz"
    import gzip

    path.write_bytes(gzip.compress(rows.to_csv(index=False, sep=";").encode("cp1252")))
    cfg = tiny(**{"data.source": str(path), "data.target": "label", "training.epochs": 1})
    run = _run(store, train(cfg)["run_id"])
    read = {k: v for k, v in run.data.params.items() if k.startswith("data.read.")}
    assert read == {
        "data.read.format": "csv",
        "data.read.encoding": "cp1252",
        "data.read.separator": "semicolon",
        "data.read.compression": "gzip",
    }
    assert run.data.params["data.encoding"] == "None"  # nothing configured: detected
