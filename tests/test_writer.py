"""The tracking writer process (pipelines/writer.py): a sweep records through it exactly what it records itself, its
process never loads MLflow, nothing sent is lost when that process dies, and a failed write is an error it sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from components.errors import InputError
from pipelines import cli, tracking, writer
from tests.conftest import project_env

# The sweep's command, in a process that says at its end whether it loaded MLflow.
SWEEP = (
    "import sys; from pipelines import cli, sweep; code = cli.main(sweep._entry, sys.argv[1:]); "
    "print('MLFLOW LOADED:', 'mlflow' in sys.modules); sys.exit(code)"
)


def _sweep(folder: Path, use_writer: bool) -> tuple[str, str]:
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    overrides = "sweep.workers=1 tuning.method=none model.hidden=[8] sweep.collapse_threshold=null"
    overrides += f" tracking.writer={str(use_writer).lower()}"
    args = ["--data", "iris", "--epochs", "2", "--fresh", "--optimizers", "adam,sgd", "--batch_sizes", "full,16"]
    done = subprocess.run(
        [sys.executable, "-c", SWEEP, *args, "--overrides", overrides],
        cwd=folder,
        env=project_env(uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return uri, done.stdout


def _records(uri: str) -> dict[str, dict]:
    """What each run of the store holds, by run name: status, the names of its params, metrics, tags and files,
    its dataset inputs, and whether it has a servable model. What the best variant's servable model adds to its run
    (a tag, its model_config as a param, its network.keras) is left out of the names: a tie on 2 epochs may rank
    another variant best."""
    c = MlflowClient(uri)
    experiment = c.get_experiment_by_name("descent").experiment_id

    def files(run_id: str, path: str | None = None) -> list[str]:
        found = []
        for f in c.list_artifacts(run_id, path):
            found += files(run_id, f.path) if f.is_dir else [f.path]
        return found

    records = {}
    for r in c.search_runs([experiment]):
        datasets = [d.dataset for d in r.inputs.dataset_inputs]
        inputs = [(d.name, d.digest, d.schema, d.profile) for d in datasets]
        records[r.info.run_name] = {
            "status": r.info.status,
            "params": sorted(k for k in r.data.params if k != "imports"),
            "metrics": sorted(r.data.metrics),
            "system_metrics": any(k.startswith("system/") for k in r.data.metrics),
            "tags": sorted(k for k in r.data.tags if k != "descent.model_uri"),
            "files": sorted(f for f in files(r.info.run_id) if not f.startswith(("model", "network/network"))),
            "inputs": inputs,
            "servable": "descent.model_uri" in r.data.tags,
        }
    return records


@pytest.mark.slow
def test_a_sweep_records_the_same_through_its_writer_and_its_process_never_loads_mlflow(tmp_path):
    through, out_through = _sweep(tmp_path / "writer", use_writer=True)
    itself, out_itself = _sweep(tmp_path / "itself", use_writer=False)
    assert "MLFLOW LOADED: False" in out_through
    assert "MLFLOW LOADED: True" in out_itself
    written, own = _records(through), _records(itself)
    assert set(written) == {"sweep-iris", "adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}
    assert set(written) == set(own)
    for name, record in own.items():
        for field, value in record.items():
            assert field == "servable" or written[name][field] == value, f"{name}: {field}"
    assert all(r["status"] == "FINISHED" and r["system_metrics"] for n, r in written.items() if n != "sweep-iris")
    assert sum(r["servable"] for r in written.values()) == sum(r["servable"] for r in own.values()) == 1
    for uri in (through, itself):  # the servable model is filed under the sweep's experiment, not MLflow's Default
        c = MlflowClient(uri)
        assert len(c.search_logged_models([c.get_experiment_by_name("descent").experiment_id])) == 1
        assert c.search_logged_models(["0"]) == []
    assert len(written["sweep-iris"]["inputs"]) == 3


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_what_was_sent_is_written_when_the_sweeps_process_is_killed(store, tmp_path):
    script = (
        "import os, signal, sys, time\n"
        "from pipelines import cli, tracking, writer\n"
        "w = writer.start(sys.argv[1])\n"
        "run_id = w.create_run(tracking.experiment_id('descent'), 'doomed', {'descent.kind': 'variant'}, "
        "int(time.time() * 1000))\n"
        "w.log_batch(run_id, [('loss', 0.5, 0, 1)], {'optimizer': 'adam'}, {'descent.note': 'sent'})\n"
        "print(run_id, w.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, store], env=project_env(store), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    run_id, pid = done.stdout.split()
    deadline = time.monotonic() + 60
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(pid)), "the writer outlived the process it wrote for"
    run = MlflowClient(store).get_run(run_id)  # the id the killed process made is the run's id
    assert run.info.run_name == "doomed" and run.info.status == "RUNNING"  # nobody ended it: the next sweep will
    assert run.data.metrics == {"loss": 0.5}
    assert run.data.params == {"optimizer": "adam"}
    assert run.data.tags["descent.note"] == "sent"


def test_a_failed_write_is_raised_at_the_next_read_and_at_the_close_and_a_missing_run_is_bad_input(store):
    w = writer.start(store)
    try:
        experiment = tracking.experiment_id("descent")  # through the writer
        assert tracking.store() is w
        w.log_batch("0" * 32, [("loss", 1.0, 0, 0)])  # no such run: the write fails in the writer
        with pytest.raises(writer.TrackingError, match="log_batch: .*0{32}"):
            w.experiment(experiment)
        assert w.experiment(experiment).name == "descent"  # the writer goes on
        with pytest.raises(InputError, match="no run '1{32}'"):
            tracking.get_run("1" * 32)
    finally:
        with pytest.raises(writer.TrackingError, match="log_batch: .*0{32}"):  # a run may lack it: said again
            writer.close()
    assert tracking.store() is not w


def test_a_failed_write_that_no_read_reported_fails_the_command(store, capsys):
    w = writer.start(store)
    tracking.experiment_id("descent")
    w.log_batch("0" * 32, [("loss", 1.0, 0, 0)])  # the command's last write fails; nothing reads after it
    assert cli._close_writer(cli.EXIT_OK) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("descent: error: a write to the tracking store failed: log_batch: ") and err.count("\n") == 1


def test_the_writer_ignores_the_signals_that_stop_the_sweep(store):
    try:
        w = writer.start(store)
        experiment = tracking.experiment_id("descent")
        for signum in (signal.SIGTERM, signal.SIGINT):  # systemd and Ctrl+C signal the whole process group
            os.kill(w.process.pid, signum)
        time.sleep(0.5)
        run_id = w.create_run(experiment, "after-the-signals", {}, int(time.time() * 1000))
        w.end(run_id, "KILLED")  # how the sweep's process ends its runs when stopped
        assert w.get_run(run_id).info.status == "KILLED"
    finally:
        writer.close()
    assert w.process.poll() == 0
