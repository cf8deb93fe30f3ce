"""End to end as a user runs it: `mlflow run` on the project, `mlflow models predict` on its model."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from tests.conftest import ROOT, project_env

pytestmark = pytest.mark.slow


@pytest.fixture
def experiment(store, tmp_path):
    """The experiment `mlflow run --experiment-name descent` fills, its artifacts kept in tmp_path."""
    return MlflowClient(store).create_experiment("descent", artifact_location=str(tmp_path / "artifacts"))


def mlflow_run(store, entry, *params):
    command = ["mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local", "--experiment-name", "descent"]
    for p in params:
        command += ["-P", p]
    return subprocess.run(command, env=project_env(store), capture_output=True, text=True, timeout=300)


def runs(store, experiment):
    return MlflowClient(store).search_runs([experiment])


def test_mlflow_run_train_then_serve_raw_rows(store, experiment, tmp_path):
    done = mlflow_run(store, "train", "data=iris", "epochs=2", "optimizer=sgd", "batch_size=16", "learning_rate=1e-2")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(store, experiment)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd-bs16"
    p = run.data.params
    assert (p["optimizer"], p["batch_size"], p["epochs"], p["regime"], p["seed"]) == (
        "sgd",
        "16",
        "2",
        "minibatch",
        "0",
    )
    assert float(p["learning_rate"]) == 0.01
    steps = [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "val_loss")]
    assert steps == [1, 2]
    assert "sgd-bs16 finished: test_accuracy=" in done.stdout

    rows = tmp_path / "rows.csv"
    load_iris(as_frame=True).data.head(4).to_csv(rows, index=False)
    predicted = predict(store, run.data.tags["descent.model_uri"], rows, "csv", tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert predicted.stdout.count('"prediction"') == 4


def test_mlflow_run_a_builder_on_images_then_serve_a_json_array(store, experiment, tmp_path):
    import json

    from pipelines.prepare import prepare
    from tests.conftest import tiny

    overrides = "overrides=model.builder=examples/digits_cnn.py:build tuning.method=none"  # as the README has it
    done = mlflow_run(store, "train", "data=digits_images", "epochs=2", "optimizer=adam", "batch_size=32", overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(store, experiment)
    assert (run.info.status, run.data.params["model.builder"]) == ("FINISHED", "examples/digits_cnn.py:build")

    samples = prepare(tiny(**{"data.source": "digits_images"})).split.test.features[:4]
    payload = tmp_path / "samples.json"
    payload.write_text(json.dumps({"inputs": samples.tolist()}))
    predicted = predict(store, run.data.tags["descent.model_uri"], payload, "json", tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "type hint" not in predicted.stderr  # MLflow warns about predict's type hint unless it is a DataFrame
    labels = [row["prediction"] for row in json.loads(predicted.stdout)["predictions"]]
    assert len(labels) == 4 and set(labels) <= set(range(10))


def test_mlflow_run_split(store, experiment):
    done = mlflow_run(store, "split", "data=wine")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(store, experiment)
    assert (run.info.status, run.info.run_name) == ("FINISHED", "split-wine")
    assert run.data.metrics["rows_in_two_splits"] == 0
    assert "split_report.json" in {a.path for a in MlflowClient(store).list_artifacts(run.info.run_id)}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["data=iris", "optimizer=adamm"], "descent: error: unknown optimizer 'adamm': choose one of sgd, momentum"),
        (["data=nowhere.csv", "target=y"], "descent: error: data file not found: nowhere.csv"),
    ],
)
def test_bad_input_fails_the_run_with_one_line(store, experiment, params, message):
    done = mlflow_run(store, "train", *params)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    [run] = runs(store, experiment)
    assert run.info.status == "FAILED"
    assert message.removeprefix("descent: error: ") in run.data.tags["descent.error"]


def test_entry_point_exit_code_is_2_without_mlflow_run(store):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--data", "iris", "--learning_rate", "0"],
        env=project_env(store),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "descent: error: config value training.learning_rate=0 is invalid: input should be greater than 0"
    )


def test_mlflow_run_main_sweeps_and_compare_rebuilds(store, experiment):
    done = mlflow_run(
        store,
        "main",
        "data=iris",
        "epochs=2",
        "optimizers=adam,sgd",
        "batch_sizes=full,16",
        "overrides=model.hidden=[8]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store)
    [parent] = client.search_runs([experiment], "tags.`descent.kind` = 'sweep'")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == ["adam-bs16", "adam-full", "sgd-bs16", "sgd-full"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert "Best variant:" in done.stdout
    assert f"/#/experiments/{experiment}/runs" in done.stdout

    rebuilt = mlflow_run(store, "compare", f"sweep={parent.info.run_id}")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "Best variant:" in rebuilt.stdout


def predict(store: str, model_uri: str, path: Path, kind: str, cwd: Path) -> subprocess.CompletedProcess:
    """`mlflow models predict` on the rows in `path` (csv or json), as the README shows it."""
    return subprocess.run(
        ["mlflow", "models", "predict", "-m", model_uri, "-i", str(path), "-t", kind, "--env-manager", "local"],
        env=project_env(store),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
