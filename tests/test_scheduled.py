"""Unattended runs: locks, skips, champion/challenger, exit codes, signals, the shipped schedules."""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

from pipelines import backend, cli
from pipelines.owners import Busy
from pipelines.scheduled import _entry as scheduled_entry
from pipelines.scheduled import scheduled
from tests.conftest import ROOT, project_env, tiny, wait_for_runs

GRID = {"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16]}
TINY_OVERRIDES = (
    "data.source=iris model.hidden=[8] training.epochs=1 sweep.optimizers=[adam] sweep.batch_sizes=[full,16]"
    " sweep.workers=1"  # scheduling is under test here, not the worker pool: one process per trigger
)


def _sweeps(store):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("descent")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`descent.kind` = 'sweep'")


def test_runs_once_skips_when_unchanged_and_keeps_the_better_champion(store, caplog):
    caplog.set_level("INFO", logger="descent")
    one = {"sweep.optimizers": ["adam"], "sweep.batch_sizes": ["full"]}
    cfg = tiny(**one)
    assert scheduled(cfg) == 0
    [first] = _sweeps(store)
    tags = first.data.tags
    assert tags["descent.decision"] == "promoted to champion"
    assert tags["descent.champion_value"] == "None"  # nothing to beat the first time
    client = MlflowClient(store)
    champion = client.get_model_version_by_alias("descent", "champion")
    assert champion.tags["descent.val_metric"] == tags["descent.challenger_value"]

    assert scheduled(cfg) == 0
    assert len(_sweeps(store)) == 1
    assert "up to date: sweep" in caplog.text

    assert scheduled(cfg, force=True) == 0  # same data, same seed: equal, so not better
    second = next(s for s in _sweeps(store) if s.info.run_id != first.info.run_id)
    assert second.data.tags["descent.decision"] == "kept as challenger"
    assert second.data.tags["descent.champion_value"] == tags["descent.challenger_value"]
    assert client.get_model_version_by_alias("descent", "champion").version == champion.version
    assert int(client.get_model_version_by_alias("descent", "challenger").version) == int(champion.version) + 1

    changed = tiny(**one, **{"training.epochs": 30, "optimizers.adam.learning_rate": 0.05})  # new config: wins
    assert scheduled(changed) == 0
    third = next(s for s in _sweeps(store) if s.info.run_id not in (first.info.run_id, second.info.run_id))
    assert third.data.tags["descent.decision"] == "promoted to champion"


def test_a_trigger_whose_sweep_learned_nothing_promotes_nothing_and_says_why(store, capsys):
    # one full-batch update of Adam at its default rate leaves digits at chance: nothing to promote
    values = {"data.source": "digits", "sweep.optimizers": ["adam"], "sweep.batch_sizes": ["full"]}
    cfg = tiny(**values, **{"training.epochs": 1, "sweep.collapse_threshold": 0.1})
    assert scheduled(cfg) == 1
    [sweep] = _sweeps(store)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"descent: error: sweep {sweep.info.run_id} not promoted: no variant of the sweep learned anything "
        "(1 collapsed of 1): train longer (training.epochs) or let each variant find its learning rate "
        "(tuning.method=grid)"
    )
    assert MlflowClient(store).search_registered_models() == []


def test_an_overlapping_trigger_skips_or_waits_then_says_try_later(store, caplog):
    caplog.set_level("INFO", logger="descent")
    with FileLock(backend.lock_path("experiment-descent")):  # a holder that says nothing about itself
        assert scheduled(tiny(**GRID, **{"schedule.on_overlap": "skip"})) == 0
        with pytest.raises(Busy, match=r"another descent run holds .*experiment-descent.lock .*waited 1 s"):
            scheduled(tiny(**GRID, **{"schedule.on_overlap": "wait", "schedule.lock_timeout": 1}))  # exit 75
    assert "skipped: experiment 'descent': another descent run holds" in caplog.text
    assert _sweeps(store) == []


def test_unreachable_tracking_server_exits_75(monkeypatch, capsys):
    from pipelines.ui import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{free_port()}")
    argv = ["--overrides", "schedule.tracking_retries=2 schedule.tracking_backoff=0.1"]
    assert cli.main(scheduled_entry, argv) == 75
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"descent: error: tracking server http://\*\*\*@127\.0\.0\.1:\d+ did not answer after 2 tries: "
        r"start it or fix MLFLOW_TRACKING_URI",
        err,
    )
    assert "secret" not in err


@pytest.mark.slow
def test_four_overlapping_triggers_on_a_fresh_sqlite_store(store, tmp_path):
    env = project_env(store) | {"DESCENT_OVERRIDES": TINY_OVERRIDES}
    command = [sys.executable, "-m", "pipelines.scheduled"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-1500:] for o in outputs]
    text = "".join(out + err for out, err in outputs)
    assert "database is locked" not in text
    assert text.count("up to date: sweep") == 3
    client = MlflowClient(store)
    assert len(_sweeps(store)) == 1
    default = client.get_experiment_by_name("Default")
    assert default is None or client.search_runs([default.experiment_id]) == []


@pytest.mark.slow
@pytest.mark.parametrize("to", ["the sweep", "its process group"])
def test_sigterm_ends_every_open_run_killed(store, tmp_path, to):
    command = [sys.executable, "-m", "pipelines.sweep", "--data", "iris", "--epochs", "300"]
    command += ["--optimizers", "adam", "--batch_sizes", "1,full"]
    env = project_env(store)
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait_for_runs(store, "tags.`descent.kind` = 'variant'", timeout=120):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"no variant started; the sweep's stderr:\n{proc.communicate()[1][-3000:]}")
    # systemd's stop and Ctrl+C signal the whole group: each worker gets SIGTERM twice (the sweep sends its own)
    os.killpg(proc.pid, signal.SIGTERM) if to == "its process group" else os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "descent: terminated (SIGTERM); any open run was ended KILLED" in err
    client = MlflowClient(store)  # made now: a client makes a new store's schema at once, beside the sweep's
    runs = client.search_runs([client.get_experiment_by_name("descent").experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    variants = [r for r in runs if r.data.tags.get("descent.kind") == "variant"]
    assert [r.info.status for r in sweeps] == ["KILLED"]
    # each worker process got SIGTERM too: whatever was training ended KILLED, nothing is left RUNNING
    assert "KILLED" in {r.info.status for r in variants}, [
        (r.info.status, r.data.tags.get("descent.error")) for r in variants
    ]
    assert {r.info.status for r in variants} <= {"KILLED", "FINISHED"}


def _command(path, pattern):
    for line in (ROOT / "deploy" / path).read_text().splitlines():
        found = re.match(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError(f"no command in deploy/{path}")


@pytest.mark.slow
def test_the_shipped_cron_and_systemd_commands_run(store, tmp_path):
    # The commands `cd` into the clone: the experiment's artifacts must not land in the clone's own ./mlruns.
    MlflowClient(store).create_experiment("descent", artifact_location=str(tmp_path / "artifacts"))
    env = project_env(store) | {"DESCENT_HOME": str(ROOT), "DESCENT_LOG": str(tmp_path / "cron.log")}
    env["DESCENT_OVERRIDES"] = TINY_OVERRIDES
    cron = _command("descent.crontab", r"^[\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+ (.+)$")
    done = subprocess.run(["/bin/sh", "-c", cron], cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, (tmp_path / "cron.log").read_text()[-2000:]
    assert "promoted to champion" in (tmp_path / "cron.log").read_text()
    assert len(_sweeps(store)) == 1

    service = shlex.split(_command("descent.service", r"^ExecStart=(.+)$"))
    done = subprocess.run(service, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "up to date: sweep" in done.stdout  # same data, config and code: the timer's run does nothing


def test_lock_files_can_be_shared_by_every_user_of_the_machine(tmp_path, monkeypatch):
    import stat
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with backend.machine_lock("experiment-x"):
        path = Path(backend.lock_path("experiment-x"))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o1777  # like /tmp: anyone adds, only owners remove
        assert stat.S_IMODE(path.stat().st_mode) == 0o666


@pytest.mark.slow
def test_a_builder_sweep_runs_scheduled_and_its_champion_takes_images(store):
    import mlflow

    from pipelines.prepare import prepare

    images = {"data.source": "digits_images", "model.builder": f"{ROOT / 'examples' / 'digits_cnn.py'}:build"}
    cfg = tiny(**images, **{"sweep.optimizers": ["adam"], "sweep.batch_sizes": [64], "training.epochs": 3})
    assert scheduled(cfg) == 0
    [sweep] = _sweeps(store)
    assert sweep.data.tags["descent.decision"] == "promoted to champion"
    test = prepare(cfg).split.test
    predicted = mlflow.pyfunc.load_model("models:/descent@champion").predict(test.features)["prediction"]
    accuracy = (predicted.to_numpy() == test.target.to_numpy()).mean()
    assert accuracy == pytest.approx(
        float(MlflowClient(store).get_run(sweep.data.tags["descent.best_run_id"]).data.metrics["test_accuracy"])
    )
    assert accuracy > 0.5  # chance is 0.1
