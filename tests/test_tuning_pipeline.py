import math
import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipelines.study import sweep
from tests.conftest import project_env, tiny, wait_for_runs

# SGD at 1e-6 learns nothing on iris in a few epochs; a grid that reaches 0.1 finds a rate that learns.
STUCK = {"sweep.optimizers": ["sgd"], "sweep.batch_sizes": [16], "optimizers.sgd.learning_rate": 1e-6}
STUCK |= {"training.epochs": 6, "tuning.grid": [1, 1000, 100000], "tuning.extensions": 0}
STUCK |= {"sweep.collapse_threshold": 0.1}


def _runs(store, parent_id):
    client = MlflowClient(store)
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], max_results=1000)


def _under(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_tuning_turns_a_collapsed_variant_into_a_learning_one_without_looking_at_test_rows(store):
    untuned = sweep(tiny(**STUCK))
    row = untuned["table"].iloc[0]
    assert (row["status"], row["learning_rate"], row["lr_chosen_by"]) == ("collapsed", 1e-6, "config")
    assert "Collapsed (finished but learned nothing" in untuned["summary"] and "sgd-bs16." in untuned["summary"]

    tuned = sweep(tiny(**STUCK, **{"tuning.method": "grid"}))
    row = tuned["table"].iloc[0]
    assert row["status"] == "finished" and row["val_skill"] > 0.5
    assert (row["learning_rate"], row["lr_chosen_by"], row["trials"]) == (0.1, "grid", 3)
    assert row["tuning_seconds"] > 0 and bool(row["lr_at_edge"])  # 0.1 is the top of a grid that may not grow

    runs = _runs(store, tuned["parent_run_id"])
    [variant] = _under(runs, tuned["parent_run_id"])
    assert variant.data.params["learning_rate"] == "0.1"
    assert variant.data.tags["descent.lr_chosen_by"] == "grid"
    assert "test_accuracy" in variant.data.metrics
    trials = _under(runs, variant.info.run_id)
    assert sorted(t.info.run_name for t in trials) == ["sgd-bs16-lr0.001", "sgd-bs16-lr0.1", "sgd-bs16-lr1e-06"]
    assert all(t.info.status == "FINISHED" and t.data.tags["descent.kind"] == "trial" for t in trials)
    assert all(not any(k.startswith("test_") for k in t.data.metrics) for t in trials)  # trials never see test rows
    chosen = {t.data.params["learning_rate"]: t.data.tags["descent.chosen"] for t in trials}
    assert chosen == {"1e-06": "false", "0.001": "false", "0.1": "true"}
    stopped = {t.data.params["learning_rate"]: t.data.tags["descent.stopped_early"] for t in trials}
    assert stopped == {"1e-06": "true", "0.001": "true", "0.1": "false"}  # rungs at 1, 2 and 6 epochs
    assert {t.data.tags["descent.diverged"] for t in trials} == {"false"}
    client = MlflowClient(store)
    # the variant's per-epoch curves are the chosen trial's, epoch by epoch
    best = next(t for t in trials if t.data.tags["descent.chosen"] == "true")
    ours = [m.value for m in client.get_metric_history(variant.info.run_id, "val_loss")]
    theirs = [m.value for m in client.get_metric_history(best.info.run_id, "val_loss")]
    assert len(ours) == 6 and ours == pytest.approx(theirs)
    # validation checked after 1, 2, 4, 8 updates (7 per epoch here), then at each epoch's end
    steps = [m.step for m in client.get_metric_history(variant.info.run_id, "by_update/val_accuracy")]
    assert steps[:6] == [1, 2, 4, 7, 8, 14]


def test_a_diverged_trial_is_tagged_and_never_chosen(store):
    wild = {"sweep.optimizers": ["sgd"], "sweep.batch_sizes": [16], "optimizers.sgd.learning_rate": 1e9}
    wild |= {"tuning.method": "grid", "tuning.grid": [1e-9, 1], "tuning.extensions": 0}
    result = sweep(tiny(**wild))
    assert result["table"].iloc[0]["learning_rate"] == 1.0
    runs = _runs(store, result["parent_run_id"])
    [variant] = _under(runs, result["parent_run_id"])
    diverged = {
        t.data.params["learning_rate"]: t.data.tags["descent.diverged"] for t in _under(runs, variant.info.run_id)
    }
    assert diverged == {"1.0": "false", "1000000000.0": "true"}


def test_seeds_tune_once_and_a_resumed_sweep_reruns_no_trial(store):
    cfg = tiny(**{"sweep.optimizers": ["adam"], "sweep.batch_sizes": [16], "sweep.seeds": [0, 1]})
    cfg = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"method": "grid", "grid": [0.3, 1, 3]})})
    result = sweep(cfg)
    runs = _runs(store, result["parent_run_id"])
    variants = {r.info.run_name: r for r in _under(runs, result["parent_run_id"])}
    assert set(variants) == {"adam-bs16-seed0", "adam-bs16-seed1"}
    first, second = variants["adam-bs16-seed0"], variants["adam-bs16-seed1"]
    assert len(_under(runs, first.info.run_id)) >= 3 and _under(runs, second.info.run_id) == []
    assert first.data.params["learning_rate"] == second.data.params["learning_rate"]
    assert second.data.tags["descent.lr_chosen_by"] == "grid"
    assert "tuned on adam-bs16-seed0" in second.data.tags["mlflow.note.content"]
    assert "**Best variant: adam-bs16** (mean over 2 seeds)" in result["summary"]

    again = sweep(cfg)
    assert again["outcomes"] == [] and set(again["reused"]) == set(variants)
    assert len(_runs(store, result["parent_run_id"])) == len(runs)  # no new run, trials included


def test_range_test_and_scaled_rates(store):
    grid = {"sweep.optimizers": ["sgd"], "sweep.batch_sizes": [1, 16, "full"], "training.epochs": 2}
    ranged = sweep(tiny(**grid, **{"tuning.method": "range_test", "tuning.range_updates": 30}))
    client = MlflowClient(store)
    runs = _runs(store, ranged["parent_run_id"])
    for variant in _under(runs, ranged["parent_run_id"]):
        assert variant.data.tags["descent.lr_chosen_by"] == "range_test"
        assert "lr_range_test.png" in {a.path for a in client.list_artifacts(variant.info.run_id)}
        [trial] = _under(runs, variant.info.run_id)
        assert trial.info.run_name == variant.info.run_name + "-range-test"
        assert len(client.get_metric_history(trial.info.run_id, "range_test/learning_rate")) == 30
        assert 1e-6 <= float(variant.data.params["learning_rate"]) <= 10

    scaled = {"tuning.method": "scaled", "tuning.reference_batch_size": 16, "tuning.scaling": "linear"}
    table = sweep(tiny(**grid, **scaled))["table"].set_index("batch_size")
    n_train = 105
    assert table.loc[16, "learning_rate"] == 0.01  # the configured rate, at the reference batch size
    assert table.loc[1, "learning_rate"] == pytest.approx(0.01 / 16, rel=1e-2)
    assert table.loc[n_train, "learning_rate"] == pytest.approx(0.01 * n_train / 16, rel=1e-2)
    assert set(table["lr_chosen_by"]) == {"scaled"}

    tuned_reference = sweep(tiny(**grid, **scaled, **{"tuning.reference": "grid", "tuning.grid": [1, 10]}))
    table = tuned_reference["table"].set_index("batch_size")
    assert table.loc[16, "lr_chosen_by"] == "grid" and table.loc[16, "trials"] >= 2
    reference = table.loc[16, "learning_rate"]
    assert table.loc[1, "lr_chosen_by"] == "scaled" and table.loc[1, "trials"] == 0
    assert table.loc[1, "learning_rate"] == pytest.approx(reference / 16, rel=1e-2)
    assert math.isfinite(table.loc[n_train, "learning_rate"])


@pytest.mark.slow
def test_a_sweep_killed_while_tuning_resumes_without_running_finished_trials_again(store, tmp_path):
    command = [sys.executable, "-m", "pipelines.sweep", "--data", "iris", "--epochs", "300", "--optimizers", "sgd"]
    command += ["--batch_sizes", "1", "--overrides", "model.hidden=[8] tuning.grid=[0.001,1,1000] tuning.extensions=0"]
    env = project_env(store)
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # rungs after 33, 100 and 300 epochs: two of the three trials stop at the first, then one trains on
    stopped = wait_for_runs(store, "tags.`descent.stopped_early` = 'true' and attributes.status = 'FINISHED'")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert stopped, "no trial stopped before the deadline"
    client = MlflowClient(store)
    query = "tags.`descent.stopped_early` = 'true' and attributes.status = 'FINISHED'"
    finished_before = {r.info.run_id for r in client.search_runs([stopped[0].info.experiment_id], query)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    experiment = client.get_experiment_by_name("descent").experiment_id
    variants = client.search_runs([experiment], "tags.`descent.kind` = 'variant'")
    [finished] = [v for v in variants if v.info.status == "FINISHED"]
    assert [v.info.status for v in variants if v.info.run_id != finished.info.run_id] == ["FAILED"]
    trials = client.search_runs([experiment], "tags.`descent.kind` = 'trial'")
    mine = [t for t in trials if t.data.tags["mlflow.parentRunId"] == finished.info.run_id]
    assert sorted(float(t.data.params["learning_rate"]) for t in mine) == [1e-05, 0.01, 10.0]  # x 0.01 x1 x1000
    assert [t.data.tags["descent.stopped_early"] for t in mine].count("true") == 2
    assert finished_before <= {t.info.run_id for t in mine}  # moved here, not trained again
    assert all(t.info.status == "FINISHED" for t in mine)
    ours = {t.info.run_id for t in mine}
    assert {t.info.status for t in trials if t.info.run_id not in ours} <= {"FAILED"}  # the survivor's first try
