"""Faults injected on purpose (issue 19): each test breaks a sweep the way the world does, then checks the store:
every variant FINISHED at most once, nothing left RUNNING, and the summary and the exit code telling the truth."""

import contextlib
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
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import pipelines.train as train_pipeline
from pipelines import backend, cli
from pipelines.prepare import prepare
from pipelines.scheduled import _entry as scheduled_entry
from pipelines.study import sweep
from pipelines.sweep import _entry as sweep_entry
from pipelines.version import code_version
from tests.conftest import ROOT, project_env, tiny, wait_for_runs


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
        backend.ensure_store(store)  # the sweep may be making a new store's schema: under its lock, not beside it
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
    # the dead try is named by its params (its worker never wrote them), as the comparison reads a variant
    params = tries[("adam-bs1", "FAILED")].data.params
    assert (params["optimizer"], params["batch_size"], params["seed"]) == ("adam", "1", "0")
    # the sweep's own process trained adam-full; the retry went to a new worker, whose death the sweep survives
    processes = {name: r.data.tags["descent.process"] for (name, status), r in tries.items() if status == "FINISHED"}
    assert processes["adam-full"] == str(os.getpid()) != processes["adam-bs1"]
    table = result["table"].set_index("variant")
    assert table.loc["adam-bs1", "run_id"] == tries[("adam-bs1", "FINISHED")].info.run_id
    assert list(table["status"]) == ["finished", "finished"]
    assert "Failed: none." in result["summary"]
    # every try trained on the rows the sweep read (62 training rows), not on the 45-row file its worker could have read
    parent = MlflowClient(store).get_run(result["parent_run_id"])
    assert len(prepared.split.train) == 62  # 90 rows less 14 validation and 14 test rows
    for child in children:  # (a try killed before it logged its params has only its tags)
        assert child.data.params.get("train_rows", "62") == "62"
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
        "try:\n    print('ready', flush=True)\n    time.sleep(60)\nfinally:\n"
        "    print('stopping', flush=True)\n    time.sleep(60)  # ending runs, stuck\n"
    )
    env = project_env("sqlite:///unused.db")
    proc = subprocess.Popen([sys.executable, "-c", hangs], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGINT)  # a repeat (of either kind) does not cut the shutdown short, nor extend it
    assert proc.wait(timeout=30) == 143


ONE = "data.source=iris model.hidden=[8] training.epochs=1 sweep.optimizers=[adam] sweep.batch_sizes=[full]"
ONE += " sweep.workers=1 sweep.collapse_threshold=null tuning.method=none measure.sharpness=false"
ONE += " tracking.system_metrics=false"
HOLDER = """
import sys, time
from pipelines import cli, locks
with locks.hold("experiment-descent", 0, 3600, 1):
    print("held", flush=True)
    while sys.stdin.readline():  # progress, each time the test says so
        cli._LAST_BEAT[0] = float("-inf")
        cli.beat()
    time.sleep(600)  # then silent: hung
"""


def trigger(*overrides):
    return cli.main(scheduled_entry, ["--overrides", " ".join([ONE, *overrides])])


@pytest.mark.slow
def test_a_trigger_never_exits_0_while_the_study_it_skips_is_not_progressing(store, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="descent")
    env = project_env(store)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    holder.stdin.write("\n")
    holder.stdin.flush()
    # a live holder: skipped while it has held the lock for less than lock_timeout, else "try again later"
    assert trigger("schedule.on_overlap=skip") == cli.EXIT_OK
    assert "skipped: experiment 'descent': another descent run holds" in caplog.text
    assert trigger("schedule.lock_timeout=1") == cli.EXIT_UNAVAILABLE
    assert re.search(
        r"descent: error: another descent run holds \S+experiment-descent.lock \(process \d+ on this "
        r"machine, for \d+ s, last progress \d+ s ago\): waited 1 s",
        capsys.readouterr().err,
    )
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert trigger("schedule.on_overlap=skip schedule.lock_timeout=1") == cli.EXIT_UNAVAILABLE
    # a hung holder (silent for longer than stale_after) is stopped and its lock taken over: the study runs
    holder.stdin.close()
    assert trigger("schedule.stale_after=2") == cli.EXIT_OK
    assert holder.wait(timeout=60) == -signal.SIGTERM
    runs = assert_store_is_true(store)
    [parent] = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    assert parent.data.tags["descent.decision"] == "promoted to champion"


@pytest.mark.slow
def test_two_identical_sweeps_started_apart_train_each_variant_once(store, tmp_path):
    arguments = ["--optimizers", "adam,sgd", "--batch_sizes", "full,16", "--overrides", ONE]
    go = tmp_path / "go"
    env = project_env(store) | {"PYTHONUNBUFFERED": "1", "DESCENT_TEST_GO": str(go)}
    pipe = {"cwd": tmp_path, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    # the first sweep is slow: it waits after its first variant until the test says go
    first = subprocess.Popen(fault("pause-after-first-variant", "pipelines.sweep", *arguments), **pipe)
    assert wait_for_runs(store, "tags.`descent.kind` = 'variant' and attributes.status = 'FINISHED'")
    second = subprocess.Popen([sys.executable, "-m", "pipelines.sweep", *arguments], **pipe)
    said = [second.stdout.readline()]
    assert said[0].startswith("waiting: another descent run holds "), second.stderr.read()[-2000:]
    assert "(process" in said[0] and "on this machine" in said[0]
    go.touch()
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-2000:] for _, err in outputs]
    # the second trained nothing: it resumed the first, every variant already finished
    assert "resuming sweep: 4 variant(s) already finished are reused" in outputs[1][0]
    runs = assert_store_is_true(store)
    [parent] = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    variants = [r for r in runs if r.data.tags.get("descent.kind") == "variant"]
    assert sorted((r.info.run_name, r.info.status) for r in variants) == [
        (name, "FINISHED") for name in ("adam-bs16", "adam-full", "sgd-bs16", "sgd-full")
    ]
    assert parent.info.status == "FINISHED" and "Failed: none." in parent.data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_a_resume_killed_while_moving_the_finished_variants_loses_none(store, tmp_path, monkeypatch):
    argv = ["--optimizers", "adam,sgd", "--batch_sizes", "full", "--overrides", ONE]
    assert cli.main(sweep_entry, argv) == cli.EXIT_OK  # the first sweep, run directly: both variants finish
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("descent").experiment_id
    [first] = client.search_runs([experiment], "tags.`descent.kind` = 'sweep'")
    # `mlflow run` makes a new run and hands it over (MLFLOW_RUN_ID); killed after it moved one variant there
    launched = client.create_run(experiment, run_name="launched").info.run_id
    env = project_env(store) | {"MLFLOW_RUN_ID": launched}
    killed = subprocess.run(fault("kill-after-first-move", "pipelines.sweep", *argv), cwd=tmp_path, env=env)
    assert killed.returncode == -signal.SIGKILL
    assert len(client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{launched}'")) == 1
    # the next `mlflow run` finds both finished variants, wherever the kill left them, and trains none
    again = client.create_run(experiment, run_name="launched").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", again)
    assert cli.main(sweep_entry, argv) == cli.EXIT_OK
    runs = assert_store_is_true(store)
    variants = [r for r in runs if r.data.tags.get("descent.kind") == "variant"]
    assert sorted((r.info.run_name, r.info.status, r.data.tags["mlflow.parentRunId"]) for r in variants) == [
        ("adam-full", "FINISHED", again),
        ("sgd-full", "FINISHED", again),
    ]
    sweeps = {r.info.run_id: r for r in runs if r.info.run_id in (first.info.run_id, launched, again)}
    assert sweeps[launched].info.status == "FAILED"  # its process is gone: interrupted, resumed in the next
    assert sweeps[launched].data.tags["descent.error"] == f"interrupted; resumed in run {again}"
    assert {sweeps[r].data.tags["descent.resumed_in"] for r in (first.info.run_id, launched)} == {again}
    assert sweeps[again].data.tags["descent.kind"] == "sweep" and sweeps[again].info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["kill-after-register", "kill-after-alias"])
def test_a_promotion_killed_midway_is_finished_once_by_the_next_trigger(store, tmp_path, point):
    env = project_env(store) | {"DESCENT_OVERRIDES": ONE}
    killed = subprocess.run(fault(point, "pipelines.scheduled"), cwd=tmp_path, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert trigger() == cli.EXIT_OK
    client = MlflowClient(store)
    [version] = client.search_model_versions("name = 'descent'")  # registered once, not again
    assert client.get_model_version_by_alias("descent", "champion").version == version.version
    with pytest.raises(MlflowException):  # not compared with itself and kept as its own challenger
        client.get_model_version_by_alias("descent", "challenger")
    runs = assert_store_is_true(store)
    [parent] = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    assert version.tags["descent.run_id"] == parent.data.tags["descent.best_run_id"]
    tags = parent.data.tags
    assert (tags["descent.decision"], tags["descent.champion_value"]) == ("promoted to champion", "None")
    assert (tags["descent.scheduled"], tags["descent.model_version"]) == ("done", f"descent/{version.version}")


def test_a_variant_that_fails_before_its_run_exists_is_failed_in_the_comparison(store, monkeypatch, capsys):
    real = train_pipeline.check_tuning

    def broken(cfg, prepared):
        if cfg.training.batch_size == 16:
            raise RuntimeError("no room for this variant")
        real(cfg, prepared)

    monkeypatch.setattr(train_pipeline, "check_tuning", broken)  # raises in the worker before any run starts
    argv = ["--optimizers", "adam", "--batch_sizes", "full,16", "--overrides", ONE]
    assert cli.main(sweep_entry, argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "descent: error: 1 variant(s) failed: adam-bs16: see each run's descent.error" in err
    runs = assert_store_is_true(store)
    [failed] = [r for r in runs if r.info.run_name == "adam-bs16"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["descent.error"] == "RuntimeError: no room for this variant"
    assert failed.data.params["batch_size"] == "16"
    [parent] = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    assert "Failed: adam-bs16." in parent.data.tags["mlflow.note.content"]
    table = pd.read_csv(MlflowClient(store).download_artifacts(parent.info.run_id, "comparison/comparison.csv"))
    assert dict(zip(table["variant"], table["status"], strict=True)) == {"adam-full": "finished", "adam-bs16": "failed"}
    # tolerated: exit 0; the same command tried the failed variant again (reusing the finished one)
    assert cli.main(sweep_entry, [*argv[:-1], ONE + " sweep.tolerate_failures=true"]) == cli.EXIT_OK
    assert [r.info.status for r in runs_of(store) if r.info.run_name == "adam-bs16"] == ["FAILED", "FAILED"]


def _stop_inside_c_code() -> SystemError:
    """What TensorFlow raises when SIGTERM's Terminated is raised while its C code calls back into numpy."""
    try:
        try:
            raise cli.Terminated()
        except cli.Terminated as stop:
            raise SystemError("<built-in method __array__> returned a result with an exception set") from stop
    except SystemError as wrapped:
        return wrapped


def _stop_inside_cpp_code() -> RuntimeError:
    """What TensorFlow's pybind11 bindings raised (seen in a variant's descent.error) when SIGTERM's Terminated was
    raised while its C++ code was raising an error of its own: the stop is named in the text, not the cause."""
    return RuntimeError(
        "pybind11::error_already_set: MISMATCH of original and normalized active exception types: ORIGINAL "
        "InvalidArgumentError REPLACED BY Terminated: <EMPTY MESSAGE>\n\nAt:\n  /work/main/pipelines/cli.py(195): stop"
    )


def _stop_swallowed_by_tracing() -> ValueError:
    """What TensorFlow raised (seen in a variant's descent.error) when SIGTERM's Terminated was raised while it
    traced the epoch: its own error, with no trace of the stop. The handler ran in this process first."""
    with contextlib.suppress(cli.Terminated):  # swallowed inside the library
        cli.stop(signal.SIGTERM, None)  # what the SIGTERM handler does
    return ValueError("Could not pack sequence. Structure had 6 atoms, but flat_sequence had 5 items.")


@pytest.fixture
def no_stop_yet(monkeypatch):
    """This process's stop state, fresh, and put back after the test (a stop is once per process)."""
    monkeypatch.setattr(cli, "_FIRST", [])
    monkeypatch.setattr(cli, "_STOP", threading.Event())
    monkeypatch.setattr(cli, "_DEADLINE", [])


@pytest.mark.parametrize("wrapped", [_stop_inside_c_code, _stop_inside_cpp_code, _stop_swallowed_by_tracing])
def test_a_stop_that_a_library_turned_into_its_own_error_ends_the_run_killed_and_exits_143(
    store, capsys, no_stop_yet, wrapped
):
    from pipelines import tracking

    assert cli.stop_inside(ValueError("broken")) is None  # no stop has arrived: an error is an error
    assert cli.stop_inside(RuntimeError("ORIGINAL InvalidArgumentError REPLACED BY ValueError: x")) is None
    ctrl_c = RuntimeError("MISMATCH ... ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt: <EMPTY MESSAGE>")
    stopped = cli.stop_inside(ctrl_c)
    assert isinstance(stopped, KeyboardInterrupt) and not isinstance(stopped, cli.Terminated)
    assert isinstance(cli.stop_inside(wrapped()), cli.Terminated)
    opened = []

    def entry(argv):
        with tracking.run("descent", "stopped-in-c", tags={}) as run:
            opened.append(run.run_id)
            raise wrapped()

    assert cli.main(entry, []) == 143  # as SIGTERM anywhere else; it was exit 1 and a SystemError traceback
    assert "descent: terminated (SIGTERM); any open run was ended KILLED" in capsys.readouterr().err
    run = MlflowClient(store).get_run(opened[0])
    assert run.info.status == "KILLED" and "descent.error" not in run.data.tags
