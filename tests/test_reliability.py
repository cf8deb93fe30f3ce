"""Faults injected on purpose (issue 19): each test breaks a sweep the way the world does, then checks the store:
every variant FINISHED at most once, nothing left RUNNING, and the summary and the exit code telling the truth."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.prepare import prepare
from pipelines.sweep import sweep
from pipelines.version import code_version
from tests.conftest import ROOT, project_env, tiny


def runs_of(store, experiment="descent"):
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def assert_store_is_true(store, experiment="descent"):
    """Nothing RUNNING, no variant FINISHED twice under one sweep, and no FINISHED run called interrupted."""
    runs = runs_of(store, experiment)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    variants = [r for r in runs if r.data.tags.get("descent.kind") == "variant"]
    finished = Counter(
        (r.data.tags["mlflow.parentRunId"], r.info.run_name) for r in variants if r.info.status == "FINISHED"
    )
    assert [key for key, n in finished.items() if n > 1] == []
    assert [r.info.run_name for r in runs if r.info.status == "FINISHED" and "descent.error" in r.data.tags] == []
    return runs


def kill_when_running(store, name, signum=signal.SIGKILL, timeout=240):
    """A thread that sends `signum` to the process training variant `name` (its run's descent.owner) once."""
    killed = []

    def watch():
        client = MlflowClient(store)
        query = f"tags.`mlflow.runName` = '{name}' and attributes.status = 'RUNNING'"
        for _ in range(int(timeout / 0.1)):
            experiment = client.get_experiment_by_name("descent")
            found = client.search_runs([experiment.experiment_id], query) if experiment else []
            owners = [r.data.tags.get("descent.owner") for r in found]
            if any(owners):
                pid = int(next(o for o in owners if o).rsplit(":", 2)[1])
                os.kill(pid, signum)
                killed.append(pid)
                return
            threading.Event().wait(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_is_tried_again_on_the_data_the_sweep_read(store, csv_file):
    cfg = tiny(**{"data.source": str(csv_file), "data.target": "kind", "training.epochs": 30})
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"workers": 2, "batch_sizes": [1, "full"]})})
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"optimizers": ["adam"]})})
    prepared = prepare(cfg)
    # The file changes after the sweep read it, before its workers start (and long before the retry's worker does).
    pd.read_csv(csv_file).head(45).to_csv(csv_file, index=False)
    thread, killed = kill_when_running(store, "adam-bs1")
    result = sweep(cfg, prepared=prepared)
    thread.join()
    assert killed, "adam-bs1 never ran"
    runs = assert_store_is_true(store)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]]
    tries = {(r.info.run_name, r.info.status): r for r in children}
    # the killed try ended FAILED with the cause, the retry on a new worker FINISHED and is the one compared
    died = tries[("adam-bs1", "FAILED")].data.tags["descent.error"]
    assert died == (
        "interrupted: its worker process died before the variant finished "
        "(a worker was killed by signal 9 (SIGKILL): out of memory?); tried again"
    )
    assert {o["name"]: o["state"] for o in result["outcomes"]} == {"adam-bs1": "finished", "adam-full": "finished"}
    table = result["table"].set_index("variant")
    assert table.loc["adam-bs1", "run_id"] == tries[("adam-bs1", "FINISHED")].info.run_id
    assert list(table["status"]) == ["finished", "finished"]
    assert "Failed: none." in result["summary"]
    # every try trained on the rows the sweep read (62 training rows), not on the 45-row file its worker could have read
    parent = MlflowClient(store).get_run(result["parent_run_id"])
    assert len(prepared.split.train) == 62  # 90 rows less 14 validation and 14 test rows
    for child in children:
        assert child.data.params["train_rows"] == "62"
        assert child.data.tags["descent.data_digest"] == parent.data.tags["descent.data_digest"]
        assert child.data.tags["descent.data_digest"] == prepared.dataset.digest
        assert child.data.tags["descent.split_digest"] == prepared.split_digest


def test_the_code_version_is_the_code_that_runs_with_or_without_git(tmp_path):
    copy = tmp_path / "descent"  # a copy without .git, as an unpacked release or a container image holds it
    for folder in ("components", "pipelines", "examples", "conf", "docs"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", copy / "README.md")
    version = code_version.__wrapped__  # not cached: the same folder is hashed again after each edit
    assert version(copy) == code_version() == version(ROOT)
    # documentation, screenshots and byte code are not code that runs: the study keeps resuming
    (copy / "README.md").write_text("edited\n")
    (copy / "docs" / "runs-table.png").write_bytes(b"regenerated")
    (copy / "pipelines" / "__pycache__").mkdir()
    (copy / "pipelines" / "__pycache__" / "sweep.cpython-311.pyc").write_bytes(b"compiled")
    assert version(copy) == code_version()
    # a new (untracked) module, an edit of one, and an edit of conf/ are other code: never resumed into
    seen = {version(copy)}
    (copy / "components" / "extra.py").write_text("SCALE = 2\n")
    seen.add(version(copy))
    (copy / "components" / "extra.py").write_text("SCALE = 3\n")
    seen.add(version(copy))
    (copy / "conf" / "default.yaml").write_text((copy / "conf" / "default.yaml").read_text() + "# edited\n")
    seen.add(version(copy))
    assert len(seen) == 4


FAST = "model.hidden=[8] tuning.method=none measure.gradients=false measure.sharpness=false"
FAST += " tracking.system_metrics=false"


def fault(name, module, *arguments):
    """The command that runs entry point `module` with fault `name` of tests/faults.py planted in it."""
    return [sys.executable, "-m", "tests.faults", name, module, *arguments]


@pytest.mark.slow
def test_a_second_sigterm_inside_the_metric_flush_loses_no_epoch(store, tmp_path):
    command = fault("sigterm-inside-flush", "pipelines.train", "--data", "iris", "--epochs", "5000", "--verbose")
    command += ["--batch_size", "1", "--overrides", FAST]
    env = project_env(store) | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    for line in proc.stdout:
        found = re.match(r"epoch (\d+)/5000:", line)
        if found:
            printed.append(int(found.group(1)))
            if len(printed) == 300:  # more than one flush has gone out and some epochs wait in the buffer
                proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, err[-2000:]
    assert "descent: terminated (SIGTERM); any open run was ended KILLED" in err
    [run] = assert_store_is_true(store)
    assert run.info.status == "KILLED"
    steps = [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(1, max(printed) + 1))  # every epoch it printed, none lost in the flush


def test_a_shutdown_that_hangs_ends_at_the_deadline_whatever_the_signals(tmp_path):
    hangs = (
        "import time\nfrom pipelines import cli\ncli.handle_signals()\ncli.shutdown_within(1)\n"
        "print('ready', flush=True)\n"
        "try:\n    time.sleep(60)\nfinally:\n"
        "    print('stopping', flush=True)\n    time.sleep(60)  # ending runs, stuck\n"
    )
    env = project_env("sqlite:///unused.db")
    proc = subprocess.Popen([sys.executable, "-c", hangs], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGINT)  # a repeat (of either kind) does not cut the shutdown short, nor extend it
    assert proc.wait(timeout=30) == 143
