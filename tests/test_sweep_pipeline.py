import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import pipelines.train as train_pipeline
from components.data import load_dataset
from components.errors import InputError
from pipelines import cli, fitting, models
from pipelines.compare import compare
from pipelines.study import sweep
from pipelines.sweep import _entry as sweep_entry
from tests.conftest import project_env, tiny, wait_for_runs

GRID = {"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16]}
NAMES = {"adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}


def _children(store, parent_id):
    client = MlflowClient(store)
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=100
    )


def test_sweep_nests_every_variant_and_compares_them(store):
    result = sweep(tiny(**GRID))
    client = MlflowClient(store)
    parent = client.get_run(result["parent_run_id"])
    children = _children(store, parent.info.run_id)
    assert {c.info.run_name for c in children} == NAMES
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    # every variant trained on exactly the same rows, from the same initial weights (same seed)
    assert len({c.data.tags["descent.split_digest"] for c in children}) == 1
    assert {c.data.tags["descent.split_digest"] for c in children} == {parent.data.tags["descent.split_digest"]}
    assert {c.data.params["seed"] for c in children} == {"0"}
    for child in children:
        assert child.data.tags["descent.sweep_id"] == parent.info.run_id
        assert child.data.tags["descent.config_digest"] == parent.data.tags["descent.config_digest"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [1, 2]
    full = next(c for c in children if c.info.run_name == "sgd-full")
    assert (full.data.params["regime"], full.data.metrics["total_updates"]) == ("batch", 2)
    # the comparison on the parent agrees with the runs
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {f"comparison/{n}" for n in ("comparison.csv", "summary.md", "val_loss_by_epoch.png")} <= files
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv"))
    assert set(table["variant"]) == NAMES
    for _, row in table.iterrows():
        child = next(c for c in children if c.info.run_name == row["variant"])
        assert row["test_accuracy"] == pytest.approx(child.data.metrics["test_accuracy"])
        assert row["updates"] == child.data.metrics["total_updates"]
    assert parent.data.tags["descent.best_run_id"] == table.iloc[0]["run_id"]
    assert "split_report.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.params["sweep.optimizers"] == '["adam", "sgd"]'


def test_diverged_and_failed_variants_do_not_stop_the_sweep(store, monkeypatch):
    real_trainer = fitting.make_trainer

    def trainer_or_break(cfg, prepared, hyper, batch_size):
        if cfg.training.optimizer == "adam" and batch_size == 16:
            raise RuntimeError("simulated out-of-memory")
        return real_trainer(cfg, prepared, hyper, batch_size)

    monkeypatch.setattr(fitting, "make_trainer", trainer_or_break)
    cfg = tiny(**GRID, **{"optimizers.sgd.learning_rate": 1e9, "training.epochs": 5})
    result = sweep(cfg)
    children = {c.info.run_name: c for c in _children(store, result["parent_run_id"])}
    assert children["adam-bs16"].info.status == "FAILED"
    assert children["adam-bs16"].data.tags["descent.error"] == "RuntimeError: simulated out-of-memory"
    for name in ("sgd-full", "sgd-bs16"):
        assert children[name].info.status == "FINISHED"
        assert children[name].data.tags["descent.diverged"] == "true"
    assert children["adam-full"].info.status == "FINISHED"
    diverged_line = next(line for line in result["summary"].splitlines() if line.startswith("Diverged"))
    assert "sgd-full" in diverged_line and "sgd-bs16" in diverged_line
    assert "Failed: adam-bs16." in result["summary"]
    assert result["table"].iloc[0]["variant"] == "adam-full"


def test_rerun_reuses_finished_variants_and_fresh_starts_over(store):
    cfg = tiny(**{"sweep.optimizers": ["sgd"], "sweep.batch_sizes": ["full", 16]})
    first = sweep(cfg)
    again = sweep(cfg)
    assert again["parent_run_id"] == first["parent_run_id"]
    assert set(again["reused"]) == {"sgd-full", "sgd-bs16"} and again["outcomes"] == []
    assert len(_children(store, first["parent_run_id"])) == 2
    fresh = sweep(cfg, fresh=True)
    assert fresh["parent_run_id"] != first["parent_run_id"]
    assert len(_children(store, fresh["parent_run_id"])) == 2


def test_compare_rebuilds_from_tracked_runs(store):
    result = sweep(tiny(**GRID))
    rebuilt = compare(MlflowClient(store).get_run(result["parent_run_id"]))
    # the sweep compared from memory what the rebuild reads back from the store: the very same table
    pd.testing.assert_frame_equal(result["table"], rebuilt["table"])
    table = rebuilt["table"].set_index("variant")
    for outcome in result["outcomes"]:  # what training returned in memory, against what was read back
        trained = outcome["result"]
        assert table.loc[outcome["name"], "final_val_accuracy"] == pytest.approx(trained["history"][-1]["val_accuracy"])
        assert table.loc[outcome["name"], "test_accuracy"] == pytest.approx(trained["final"]["test_accuracy"])
        assert table.loc[outcome["name"], "run_id"] == trained["run_id"]
    assert rebuilt["summary"] == result["summary"]


def test_only_the_best_variant_gets_a_servable_model_unless_all(store):
    import mlflow

    result = sweep(tiny(**GRID, **{"sweep.collapse_threshold": None}))
    client = MlflowClient(store)
    children = {c.info.run_name: c for c in _children(store, result["parent_run_id"])}
    best = result["table"].iloc[0]
    with_model = {name for name, c in children.items() if "descent.model_uri" in c.data.tags}
    assert with_model == {best["variant"]}
    assert children[best["variant"]].data.tags["descent.model_uri"] == result["model_uri"]
    for name, child in children.items():  # every variant keeps its weights; the best one's network and model too
        kept = [a.path for a in client.list_artifacts(child.info.run_id, "network")]
        assert kept == (["network/network.keras", "network/weights.npz"] if name == best["variant"] else kept[-1:])
        assert kept[-1] == "network/weights.npz"
    rows = load_dataset("iris").features.head(5)
    predictions = mlflow.pyfunc.load_model(result["model_uri"]).predict(rows)["prediction"]
    network = models.load_network(best["run_id"])
    expected = load_dataset("iris").target.sort_values().unique()[network.predict(_inputs(rows), verbose=0).argmax(1)]
    assert list(predictions) == list(expected)
    everything = sweep(tiny(**GRID, **{"tracking.log_models": "all"}), fresh=True)
    children = _children(store, everything["parent_run_id"])
    assert all("descent.model_uri" in c.data.tags for c in children)


def test_every_variants_kept_weights_score_what_it_logged_and_networks_all_keeps_keras_files(store):
    from components.train import LOSSES, evaluate
    from pipelines.fitting import untrained_network
    from pipelines.prepare import prepare

    cfg = tiny(**GRID, **{"sweep.collapse_threshold": None})
    result = sweep(cfg)
    prepared = prepare(cfg)
    pre, test = prepared.preprocessor, prepared.split.test
    x, y = pre.transform(test.features), pre.encode_target(test.target)
    for outcome in result["outcomes"]:  # a variant's weights.npz is the network it scored its test rows with
        trained = outcome["result"]
        network = models.network_from_weights(trained["run_id"], lambda: untrained_network(cfg, prepared))
        network.compile(loss=LOSSES["classification"])
        scores = evaluate(network, x, y)
        assert scores["loss"] == pytest.approx(trained["final"]["test_loss"], rel=1e-5)
        assert scores["accuracy"] == pytest.approx(trained["final"]["test_accuracy"])
    networks = sweep(tiny(**GRID, **{"tracking.log_networks": "all"}), fresh=True)
    client = MlflowClient(store)
    for child in _children(store, networks["parent_run_id"]):
        assert [a.path for a in client.list_artifacts(child.info.run_id, "network")] == ["network/network.keras"]


def _inputs(rows):
    from pipelines.prepare import prepare

    return prepare(tiny()).preprocessor.transform(rows)


def test_a_sweep_where_nothing_finishes_exits_1(store, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no luck")

    monkeypatch.setattr(fitting, "make_trainer", broken)
    argv = ["--data", "iris", "--epochs", "1", "--optimizers", "adam", "--batch_sizes", "full,16"]
    argv += ["--overrides", "sweep.workers=1"]  # in-process, where the broken fit is patched in
    assert cli.main(sweep_entry, argv) == 1
    assert "descent: error: no variant of the sweep finished" in capsys.readouterr().err


def test_a_sweep_where_no_variant_learned_anything_says_so_and_what_to_do(store, capsys, caplog):
    # one full-batch update of Adam at its default rate leaves digits at chance: collapsed, a result (exit 0)
    argv = ["--data", "digits", "--epochs", "1", "--optimizers", "adam", "--batch_sizes", "full"]
    argv += ["--overrides", "sweep.workers=1 tuning.method=none"]
    assert cli.main(sweep_entry, argv) == 0
    out, err = capsys.readouterr()
    assert "adam-full collapsed" in out and "descent: error" not in err
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "descent: warning: no variant of the sweep learned anything (1 collapsed of 1): train longer "
        "(training.epochs) or let each variant find its learning rate (tuning.method=grid)"
    ]


def test_compare_refuses_a_run_that_is_not_a_sweep(store, tiny_cfg):
    result = train_pipeline.train(tiny_cfg)
    with pytest.raises(InputError, match="is not a descent sweep"):
        compare(MlflowClient(store).get_run(result["run_id"]))


def test_unknown_activation_is_bad_input_before_any_run(store):
    with pytest.raises(InputError, match="unknown activation 'relux'"):
        sweep(tiny(**GRID, **{"model.activation": "relux"}))
    assert MlflowClient(store).search_experiments(filter_string="name = 'descent'") == []


@pytest.mark.slow
def test_killed_sweep_resumes_and_records_each_variant_once(store, tmp_path):
    command = [sys.executable, "-m", "pipelines.sweep", "--data", "iris", "--epochs", "30"]
    command += ["--optimizers", "adam,sgd", "--batch_sizes", "1,full", "--overrides", "model.hidden=[8]"]
    env = project_env(store)
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = wait_for_runs(store, "tags.`descent.kind` = 'variant' and attributes.status = 'FINISHED'")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert finished, "no variant finished before the deadline"
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming sweep:" in done.stdout
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name("descent").experiment_id
    variants = client.search_runs([experiment_id], "tags.`descent.kind` = 'variant'")
    ok = [r.info.run_name for r in variants if r.info.status == "FINISHED"]
    assert sorted(ok) == sorted(["adam-bs1", "adam-full", "sgd-bs1", "sgd-full"])  # each exactly once
    # the variant the kill interrupted: never left RUNNING (its worker ends it KILLED, or the resume FAILED)
    assert all(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in variants)
    sweeps = client.search_runs([experiment_id], "tags.`descent.kind` = 'sweep'")
    assert [s.info.status for s in sweeps] == ["FINISHED"]
    # the interrupted run stays under the sweep as FAILED, but the comparison counts each variant once
    table = pd.read_csv(client.download_artifacts(sweeps[0].info.run_id, "comparison/comparison.csv"))
    assert sorted(table["variant"]) == sorted(ok)
    assert "Failed: none." in sweeps[0].data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_seeds_on_two_worker_processes_nest_every_run_and_compare_them(store):
    cfg = tiny(**{"sweep.optimizers": ["adam"], "sweep.batch_sizes": ["full", 16]})
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"seeds": [0, 1], "workers": 2})})
    result = sweep(cfg)
    children = _children(store, result["parent_run_id"])
    names = {"adam-full-seed0", "adam-full-seed1", "adam-bs16-seed0", "adam-bs16-seed1"}
    assert {c.info.run_name for c in children} == names
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["seed"] for c in children} == {"0", "1"}
    assert {c.data.tags["descent.variant"] for c in children} == {"adam-full", "adam-bs16"}
    # both workers trained on the sweep's own split, not on one of their own making
    parent = MlflowClient(store).get_run(result["parent_run_id"])
    assert {c.data.tags["descent.split_digest"] for c in children} == {parent.data.tags["descent.split_digest"]}
    assert "Across seeds" in result["summary"]
    assert "The study notes' claims, measured on this data" in result["summary"]
    # two processes did the work: the sweep's own and one worker process
    assert len({c.data.tags["descent.process"] for c in children}) == 2


@pytest.mark.slow
def test_the_sweeps_own_process_trains_on_its_share_of_the_cores(store):
    # TensorFlow fixes its thread pools when it first runs: the sweep sets its share before it builds a network,
    # as each worker process does, so that its own process and the workers never ask for more cores than there are.
    code = """
import os
import tensorflow as tf
from pipelines.study import sweep
from tests.conftest import tiny
cfg = tiny(**{"sweep.optimizers": ["adam"], "sweep.batch_sizes": ["full", 16]})
sweep(cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"workers": 2})}))
print(tf.config.threading.get_intra_op_parallelism_threads(), max(1, (os.cpu_count() or 1) // 2))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=project_env(store), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    threads, share = done.stdout.split()[-2:]
    assert threads == share


def test_the_terminal_table_shows_a_dash_where_there_is_no_value():
    from pipelines.sweep import terminal_table

    table = pd.DataFrame(
        {
            "variant": ["adam-bs32", "sgd-full"],
            "status": ["finished", "finished"],
            "learning_rate": [0.003, 0.01],
            "final_val_accuracy": [0.98148, 0.19630],
            "test_accuracy": [0.95926, 0.15556],
            "train_seconds": [0.03, 0.0092],
            "updates": [200.0, 20.0],
            "seconds_to_target": [0.0081, float("nan")],  # sgd-full never reached the target
        }
    )
    lines = terminal_table(table, "classification").splitlines()
    assert lines[0].split() == [
        "variant",
        "status",
        "lr",
        "val_accuracy",
        "test_accuracy",
        "seconds",
        "updates",
        "seconds_to_target",
    ]
    assert lines[1].split() == ["adam-bs32", "finished", "0.003", "0.9815", "0.9593", "0.0300", "200.0", "0.0081"]
    assert lines[2].split()[-1] == "-" and "NaN" not in "\n".join(lines)
