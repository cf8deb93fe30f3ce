"""`sweep.executor: ray`: the sweep's variants as Ray tasks on a local 2-CPU Ray instance, logged to a team server.

The team server runs MLflow's basic-auth app: the sweep and the Ray workers sign in with credentials in their
environment, as the README's Team setup and Ray sections say.
"""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.errors import InputError
from pipelines import access, cli, ray_executor, terminal
from pipelines.config import load_config
from pipelines.prepare import prepare
from pipelines.study import sweep
from pipelines.sweep import _entry as sweep_entry
from pipelines.workers import Job, run_job
from tests.conftest import ROOT, project_env, tiny

GRID = {"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": ["full", 16], "measure.gradients": False}
NAMES = {"adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}
ON_RAY = {"sweep.executor": "ray"}
USER = "ray-sweeper"


@pytest.fixture(scope="module")
def login():
    """The sweep's login on the team server: its user name and password as MLflow's clients read them."""
    return {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(16)}


@pytest.fixture(scope="module")
def cluster(login):
    """A local Ray instance with 2 CPUs and no dashboard, shared by the module's tests; its workers have the login."""
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # Ray puts the driver's working directory on its workers' sys.path: this checkout
        for key, value in login.items():  # in the environment Ray starts its workers with, as `ray start` on a node
            patch.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False)
    # Both workers import TensorFlow while the team server starts, instead of in the first test.
    warm = ray.remote(_import_training)
    warming = [warm.remote() for _ in range(2)]
    yield ray
    ray.get(warming)
    ray.shutdown()


def _import_training():
    import pipelines.train  # noqa: F401


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory, login):
    """One basic-auth `mlflow server` on a throwaway PostgreSQL cluster for the module, with the sweep's user."""
    from tests.servers import mlflow_with_auth

    with mlflow_with_auth(tmp_path_factory.mktemp("team")) as server:
        server.add_user(USER, login["MLFLOW_TRACKING_PASSWORD"])
        yield server


@pytest.fixture
def server(postgres_server, login, tmp_path, monkeypatch):
    """The module's team server as MLFLOW_TRACKING_URI, signed in as the sweep's user, in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_server.url)
    for key, value in login.items():
        monkeypatch.setenv(key, value)
    return postgres_server


def _runs(url, result):
    """The sweep's run and its children (a list: a retried variant has two)."""
    client = MlflowClient(url)
    runs = client.search_runs([result["experiment_id"]], max_results=100)
    parent = next(r for r in runs if r.info.run_id == result["parent_run_id"])
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_a_ray_sweep_nests_the_same_runs_as_the_local_executor(cluster, server):
    on_ray = sweep(tiny(**GRID, **ON_RAY))
    local = sweep(tiny(**GRID), fresh=True)  # the same study (same digest): not fresh, it would resume on_ray
    parent, children = _runs(server.url, on_ray)
    local_parent, local_children = _runs(server.url, local)
    assert {c.info.run_name for c in children} == {c.info.run_name for c in local_children} == NAMES
    assert len(children) == 4
    assert {r.info.status for r in [parent, local_parent, *children, *local_children]} == {"FINISHED"}
    assert {o["state"] for o in on_ray["outcomes"]} == {"finished"}
    # trained by Ray workers, not in this process, on the sweep's own split
    assert {c.data.tags["mlflow.source.name"] for c in children} != {sys.argv[0]}
    assert all("ray" in c.data.tags["mlflow.source.name"] for c in children)
    assert {c.data.tags["descent.split_digest"] for c in children} == {parent.data.tags["descent.split_digest"]}
    assert parent.data.tags["descent.config_digest"] == local_parent.data.tags["descent.config_digest"]
    # the same comparison: the same variants, the same runs, the same scores
    table, local_table = on_ray["table"].set_index("variant"), local["table"].set_index("variant")
    assert set(table["run_id"]) == {c.info.run_id for c in children}
    assert sorted(table.index) == sorted(local_table.index)
    assert list(table["status"]) == ["finished"] * 4
    for name in NAMES:
        assert table.loc[name, "final_val_accuracy"] == pytest.approx(local_table.loc[name, "final_val_accuracy"])
        assert table.loc[name, "test_accuracy"] == pytest.approx(local_table.loc[name, "test_accuracy"])
    # same split, same seeds: the same training, up to float round-off between thread counts
    losses = {c.info.run_name: c.data.metrics["val_loss"] for c in children}
    assert losses == pytest.approx({c.info.run_name: c.data.metrics["val_loss"] for c in local_children}, rel=1e-3)


@pytest.mark.slow
def test_a_ray_node_without_the_password_is_one_line_naming_the_variables(cluster, server):
    client = MlflowClient(server.url)
    parent = client.create_run(client.create_experiment("no-login-on-ray"), run_name="sweep-iris")
    job = Job(tiny(**GRID), "adam-full", parent.info.run_id, {})
    # a node whose `ray start` environment lacks the right password: one task with that environment
    wrong = {"env_vars": {"MLFLOW_TRACKING_PASSWORD": "not-the-password"}}
    ref = cluster.remote(ray_executor._attempt).options(runtime_env=wrong).remote(job, None, server.url, 1, run_job)
    outcome = ray_executor._outcome(cluster, ref, job)
    assert outcome["state"] == "failed"
    assert "/api/2.0/mlflow/runs/get failed with error code 401 != 200" in outcome["error"]
    with pytest.raises(access.AccessRefused) as refused:
        next(access.stop_at_refusal(iter([outcome]), on_ray=True))
    assert str(refused.value) == (
        f"variant adam-full: tracking server {server.url} did not accept user '{USER}' (401: wrong user name or "
        "password): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your login on that server "
        "(a Ray task signs in with the credentials in its node's `ray start` environment)"
    )
    assert [r.info.run_id for r in client.search_runs([parent.info.experiment_id])] == [parent.info.run_id]
    client.set_terminated(parent.info.run_id)


def test_a_builder_sweep_on_ray_reads_the_builder_where_the_sweep_does(cluster, server, tmp_path):
    import mlflow

    # A relative path, read from the sweep's folder: the workers run in another (ROOT), which lacks nets/.
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "cnn.py").write_text((ROOT / "examples" / "digits_cnn.py").read_text())
    images = {"data.source": "digits_images", "model.builder": "nets/cnn.py:build", "sweep.batch_sizes": [64]}
    result = sweep(tiny(**GRID | ON_RAY | images))
    parent, children = _runs(server.url, result)
    assert sorted(c.info.run_name for c in children) == ["adam-bs64", "sgd-bs64"]
    errors = [c.data.tags.get("descent.error") for c in children]
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}, errors
    assert all("ray" in c.data.tags["mlflow.source.name"] for c in children)
    client = MlflowClient(server.url)
    for child in children:
        summary = Path(client.download_artifacts(child.info.run_id, "network_summary.txt")).read_text()
        assert "conv_1 (Conv2D)" in summary
    model = mlflow.pyfunc.load_model(result["model_uri"])  # the best variant's, with the builder's code
    assert len(model.predict(prepare(tiny(**images)).split.test.features[:4])) == 4


def _marker(parent_run_id, name):
    return Path(tempfile.gettempdir()) / f"descent-test-crashed-{parent_run_id}-{name}"


def crash(job, prepared=None):
    """Run on a Ray worker in place of run_job: adam-full's first try and every try of sgd-full die mid-training."""
    marker = _marker(job.parent_run_id, job.name)
    if job.name == "sgd-full" or (job.name == "adam-full" and not marker.exists()):
        marker.touch()
        import pipelines.fitting

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would: no cleanup

        pipelines.fitting.make_trainer = die
    return run_job(job, prepared)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_run_ends_failed(cluster, server, monkeypatch):
    monkeypatch.setattr(ray_executor, "run_job", crash)
    cfg = tiny(**GRID | ON_RAY | {"sweep.batch_sizes": ["full"], "ray.max_retries": 1, "experiment": "faults"})
    result = sweep(cfg)
    for name in ("adam-full", "sgd-full"):
        _marker(result["parent_run_id"], name).unlink()
    parent, children = _runs(server.url, result)
    tries = sorted((c.info.run_name, c.info.status) for c in children)
    assert tries == [("adam-full", "FAILED"), ("adam-full", "FINISHED"), ("sgd-full", "FAILED"), ("sgd-full", "FAILED")]
    runs = {(c.info.run_name, c.info.status): c for c in children}
    # adam-full: the killed try's run ended FAILED, the retry's run FINISHED and is the one compared
    killed = runs[("adam-full", "FAILED")]
    assert killed.data.tags["descent.error"].startswith("interrupted: its worker process died")
    table = result["table"].set_index("variant")
    assert table.loc["adam-full", "run_id"] == runs[("adam-full", "FINISHED")].info.run_id
    # sgd-full died on every try (1 + max_retries): a failed outcome, its runs FAILED, the sweep went on
    outcomes = {o["name"]: o for o in result["outcomes"]}
    assert outcomes["adam-full"]["state"] == "finished"
    assert outcomes["sgd-full"]["state"] == "failed"
    assert "WorkerCrashedError" in outcomes["sgd-full"]["error"]
    assert {c.info.status for c in children if c.info.run_name == "sgd-full"} == {"FAILED"}
    assert table.loc["sgd-full", "status"] == "failed"
    assert parent.info.status == "FINISHED"


def test_ray_with_a_local_sqlite_store_is_refused_before_any_run(store, tmp_path, capsys):
    with pytest.raises(InputError, match="needs a tracking server that every Ray worker reaches") as err:
        sweep(tiny(**GRID, **ON_RAY))
    assert "mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000" in str(err.value)
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in str(err.value)
    assert not (tmp_path / "mlflow.db").exists()
    argv = ["--data", "iris", "--optimizers", "adam", "--batch_sizes", "full", "--overrides", "sweep.executor=ray"]
    assert cli.main(sweep_entry, argv) == cli.EXIT_BAD_INPUT
    assert "needs a tracking server" in capsys.readouterr().err


def test_ray_missing_is_bad_input_naming_the_extra(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InputError, match=r"needs Ray, which is not installed: pip install -e '\.\[ray\]'"):
        sweep(tiny(**GRID, **ON_RAY))


class FakeRay:
    def __init__(self, running=False, refuse=False):
        self.running, self.refuse, self.calls = running, refuse, []

    def is_initialized(self):
        return self.running

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.refuse:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")
        self.running = True

    def cluster_resources(self):
        return {"CPU": 2.0}


def test_connect_starts_a_light_local_instance_or_joins_the_address_given():
    local = FakeRay()
    assert ray_executor._connect(local, None) is True  # started here: the sweep shuts it down after
    assert local.calls == [{"address": None, "include_dashboard": False, **terminal.ray_options()}]
    assert terminal.ray_options() == {"log_to_driver": True}  # not quiet in a test
    joined = FakeRay()
    assert ray_executor._connect(joined, "10.0.0.5:6379") is True
    assert joined.calls[0]["address"] == "10.0.0.5:6379"
    running = FakeRay(running=True)
    assert ray_executor._connect(running, "10.0.0.5:6379") is False and running.calls == []
    with pytest.raises(InputError, match=r"cannot reach the Ray cluster at 10.0.0.5:6379 .*ray start --head"):
        ray_executor._connect(FakeRay(refuse=True), "10.0.0.5:6379")


def test_the_executor_is_how_a_study_runs_not_what_it_is():
    base = load_config()
    elsewhere = load_config(values={"sweep.executor": "ray", "ray.address": "auto", "ray.cpus_per_variant": 4})
    assert elsewhere.digest() == base.digest()  # a study resumes on Ray where it stopped on local workers
    for bad in ("sweep.executor=dask", "ray.cpus_per_variant=0", "ray.max_retries=-1"):
        with pytest.raises(InputError, match="is invalid"):
            load_config(overrides=bad)


@pytest.mark.slow
def test_sigterm_to_a_ray_sweep_exits_143_and_ends_every_run_killed(cluster, server, login):
    # A sweep of its own (a Ray driver that joins the module's cluster), stopped as systemd or Kubernetes would.
    env = project_env(server.url) | login | {"RAY_ADDRESS": cluster.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "pipelines.sweep", "--data", "iris", "--epochs", "3000"]
    command += ["--optimizers", "adam", "--batch_sizes", "1,full", "--overrides"]
    command += ["sweep.executor=ray experiment=ray-sigterm model.hidden=[8] tuning.method=none measure.gradients=false"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(server.url)
    for _ in range(1200):  # until adam-bs1 trains on a Ray worker (its 312,000 updates outlast the test; adam-full
        # may finish in the meantime, or wait for a free CPU)
        experiment = client.get_experiment_by_name("ray-sigterm")
        query = "tags.`descent.kind` = 'variant' and attributes.status = 'RUNNING' and attributes.run_name = 'adam-bs1'"
        if experiment is not None and client.search_runs([experiment.experiment_id], query):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-2000:]
    assert "descent: terminated (SIGTERM); any open run was ended KILLED" in err
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs if r.data.tags.get("descent.kind") == "sweep"] == ["KILLED"]
    variants = [r for r in runs if r.data.tags.get("descent.kind") == "variant"]
    assert "KILLED" in {r.info.status for r in variants}
    assert {r.info.status for r in variants} <= {"KILLED", "FINISHED"}  # none left RUNNING, none FAILED
