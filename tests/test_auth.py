"""A team server behind MLflow's basic-auth app: who may do what, and one clear line when the server says no."""

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from pipelines import access, cli, tracking
from pipelines import compare as compare_entry
from pipelines import scheduled as scheduled_entry
from pipelines import split as split_entry
from pipelines import study as study_module
from pipelines import sweep as sweep_entry
from pipelines import train as train_entry
from pipelines import ui as ui_entry
from tests.conftest import ROOT, project_env

pytestmark = pytest.mark.slow
PEOPLE = ("alice", "bob")  # alice starts the studies; bob only reads them
SCHEDULER = "descent-scheduler"
TINY = "data.source=iris model.hidden=[8] training.epochs=2 sweep.workers=1 measure.gradients=false tuning.method=none"
TINY += " sweep.collapse_threshold=null"  # two epochs at the configured rates teach iris little
GRID = "sweep.optimizers=[adam,sgd] sweep.batch_sizes=[full,16]"
LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """One basic-auth team server on PostgreSQL for the module, with a user per person and one for the scheduler."""
    from tests.servers import mlflow_with_auth

    with mlflow_with_auth(tmp_path_factory.mktemp("auth")) as server:
        make_users_as_the_readme_says(server)
        yield server


def make_users_as_the_readme_says(server):
    """Run the README's user set-up (the admin's `python - <<'EOF'` block) as written; each password on stdin."""
    code = (ROOT / "README.md").read_text().split("python - <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    users = [*PEOPLE, SCHEDULER]
    assert f"for user in {json.dumps(users)}:" in code
    passwords = {user: secrets.token_urlsafe(16) for user in users}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=project_env(server.url) | server.login("admin"),
        input="".join(f"{p}\n" for p in passwords.values()),  # getpass reads stdin where there is no terminal
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    server.passwords.update(passwords)


@pytest.fixture
def server(auth_server, tmp_path, monkeypatch):
    """The module's server as MLFLOW_TRACKING_URI, nobody signed in, in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", *LOGIN):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    return auth_server


def study(server, name, model=None, scheduler_may_promote=True):
    """Alice's experiment `name` (and registered model); the scheduler gets EDIT on them as the README says."""
    with server.as_user("alice"):
        client = MlflowClient(server.url)
        experiment = client.create_experiment(name)
        if model:
            client.create_registered_model(model)
    server.grant(SCHEDULER, "experiment", experiment, "EDIT")
    if model and scheduler_may_promote:
        server.grant(SCHEDULER, "registered_model", model, "EDIT")
    return experiment


def runs_of(server, experiment):
    with server.as_user("alice"):
        return MlflowClient(server.url).search_runs([experiment], max_results=100)


def nothing_running(server):
    return server.postgres.query("SELECT run_uuid FROM runs WHERE status = 'RUNNING'", server.database) == []


def stored_text(server):
    """Every row of every table of the tracking database, and every artifact file, as text."""
    tables = server.postgres.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", server.database
    )
    rows = [
        str(row) for (table,) in tables for row in server.postgres.query(f'SELECT * FROM "{table}"', server.database)
    ]
    files = [p.read_bytes().decode("latin-1") for p in server.artifacts.rglob("*") if p.is_file()]
    return "\n".join(rows + files)


def test_anonymous_requests_are_refused_and_no_secret_is_on_a_command_line(server):
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=("bob", "not-his-password"), timeout=10).status_code == 401
    assert requests.get(search, auth=("bob", server.passwords["bob"]), timeout=10).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # what `scheduled` polls
    # the README's commands gave the scheduler EDIT on the study's experiment and registered model
    from mlflow.server import get_app_client

    with server.as_user("admin"):
        auth, study = get_app_client("basic-auth", tracking_uri=server.url), MlflowClient(server.url)
        experiment = study.get_experiment_by_name("descent").experiment_id
        assert auth.get_user_permission(SCHEDULER, "experiment", experiment).permission == "EDIT"
        assert auth.get_user_permission(SCHEDULER, "registered_model", "descent").permission == "EDIT"
        assert auth.get_user_permission("bob", "experiment", experiment).permission == "READ"
    # the admin's password, the database's and the Flask key are in the server's environment, not its arguments
    commands = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            commands.append(cmdline.read_bytes().decode(errors="replace"))
        except OSError:
            continue
    assert any("basic-auth" in c for c in commands)
    assert not [c for c in commands if server.passwords["admin"] in c]


def test_the_schedulers_sweep_finishes_nested_promotes_and_records_no_password(server):
    experiment = study(server, "nightly", model="nightly")
    overrides = f"{TINY} {GRID} experiment=nightly schedule.model_name=nightly"
    env = project_env(server.url) | server.login(SCHEDULER)
    command = [sys.executable, "-m", "pipelines.scheduled", "--overrides", overrides]
    done = subprocess.run(command, cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(server, experiment)
    [parent] = [r for r in runs if r.data.tags.get("descent.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.info.run_name for c in children} == {"adam-full", "adam-bs16", "sgd-full", "sgd-bs16"}
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.user"] for r in runs} == {SCHEDULER}
    assert parent.data.tags["descent.decision"] == "promoted to champion"
    with server.as_user("bob"):  # everyone may read the champion
        champion = MlflowClient(server.url).get_model_version_by_alias("nightly", "champion")
    assert champion.run_id in {c.info.run_id for c in children}
    # the scheduler's password: nowhere in what descent printed, nor in any row or artifact the server stored
    stored = stored_text(server)
    assert parent.info.run_id in stored and "comparison.csv" in stored  # the search covers the sweep's records
    password = server.passwords[SCHEDULER]
    assert password not in done.stdout + done.stderr
    assert password not in stored
    assert nothing_running(server)


def _expected(server, login):
    names = f"set {LOGIN[0]} and {LOGIN[1]} to your login on that server"
    if login is None:
        return f"tracking server {server.url} needs a user name and password (401) and got none: {names}"
    if login == "wrong":
        refused = f"did not accept user {SCHEDULER!r} (401: wrong user name or password)"
        return f"tracking server {server.url} {refused}: {names}"
    return (
        f"tracking server {server.url} refused user 'bob' (403 on /api/2.0/mlflow/runs/create): writing runs to "
        "experiment 'refusals' needs EDIT on it: ask an admin of the server to grant it (README: Team setup)"
    )


ENTRIES = {
    "main": (sweep_entry._entry, []),
    "train": (train_entry._entry, ["--batch_size", "full"]),
    "split": (split_entry._entry, []),
    "scheduled": (scheduled_entry._entry, []),
    "compare": (compare_entry._entry, []),
    "ui": (ui_entry._entry, []),
}
READERS = ("compare", "ui")  # bob may read: these two are refused only without a valid login
CASES = [(e, login) for e in ENTRIES for login in (None, "wrong", "bob") if not (login == "bob" and e in READERS)]


@pytest.fixture(scope="module")
def refusals(auth_server):
    """An experiment of alice's that the scheduler was not given; bob may read it (default READ), not write."""
    return study(auth_server, "refusals")


@pytest.mark.parametrize(("entry", "login"), CASES)
def test_no_wrong_or_read_only_login_is_one_line_and_exit_2_with_nothing_running(
    server, refusals, monkeypatch, capsys, caplog, entry, login
):
    password = {None: None, "wrong": "not-the-schedulers-password", "bob": server.passwords["bob"]}[login]
    if login is not None:
        monkeypatch.setenv(LOGIN[0], "bob" if login == "bob" else SCHEDULER)
        monkeypatch.setenv(LOGIN[1], password)
    function, argv = ENTRIES[entry]
    overrides = f"{TINY} sweep.optimizers=[adam] sweep.batch_sizes=[full] experiment=refusals"
    assert cli.main(function, [*argv, "--overrides", overrides]) == cli.EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert err == f"descent: error: {_expected(server, login)}\n"
    assert runs_of(server, refusals) == []
    assert nothing_running(server)
    if password:
        assert password not in out + err + caplog.text


def test_a_cron_trigger_without_a_login_exits_2_with_one_line(server, refusals):
    env = project_env(server.url)
    command = [sys.executable, "-m", "pipelines.scheduled", "--overrides", f"{TINY} experiment=refusals"]
    done = subprocess.run(command, cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"descent: error: {_expected(server, None)}"
    assert runs_of(server, refusals) == []


def test_mlflow_run_without_a_login_fails_in_the_launcher_before_descent_starts(server, refusals):
    env = project_env(server.url)
    command = ["mlflow", "run", str(ROOT), "-e", "split", "--env-manager", "local", "--experiment-name", "refusals"]
    done = subprocess.run(command, cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1  # MLflow's own answer: a traceback, as the README says
    assert "/api/2.0/mlflow/experiments/get-by-name failed with error code 401 != 200" in done.stderr
    assert "descent: error" not in done.stderr
    assert runs_of(server, refusals) == []


def test_a_sweep_that_cannot_be_promoted_keeps_its_runs_and_the_next_trigger_promotes(server, monkeypatch, capsys):
    experiment = study(server, "unpromoted", model="unpromoted", scheduler_may_promote=False)
    for key, value in server.login(SCHEDULER).items():
        monkeypatch.setenv(key, value)
    argv = ["--overrides", f"{TINY} {GRID} experiment=unpromoted schedule.model_name=unpromoted"]
    assert cli.main(scheduled_entry._entry, argv) == cli.EXIT_BAD_INPUT
    [parent] = [r for r in runs_of(server, experiment) if r.data.tags.get("descent.kind") == "sweep"]
    refused = (
        f"tracking server {server.url} refused user {SCHEDULER!r} (403 on /api/2.0/mlflow/model-versions/create): "
        "registering or aliasing a version of registered model 'unpromoted' needs EDIT on it: "
        "ask an admin of the server to grant it (README: Team setup)"
    )
    err = capsys.readouterr().err  # after MLflow's own "Registered model 'unpromoted' already exists. ..."
    assert err.splitlines()[-1] == (
        f"descent: error: sweep {parent.info.run_id} finished and keeps its runs, "
        f"but its best model was not promoted: {refused}"
    )
    runs = runs_of(server, experiment)
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert parent.data.tags["descent.decision"] == f"not promoted: {refused}"
    assert "descent.scheduled" not in parent.data.tags  # not done: the next trigger tries again

    server.grant(SCHEDULER, "registered_model", "unpromoted", "EDIT")
    assert cli.main(scheduled_entry._entry, argv) == cli.EXIT_OK
    again = runs_of(server, experiment)
    assert {r.info.run_id for r in again} == {r.info.run_id for r in runs}  # resumed: every variant reused
    resumed = tracking.get_run(parent.info.run_id).data.tags
    assert resumed["descent.decision"] == "promoted to champion" and resumed["descent.scheduled"] == "done"


def test_a_worker_the_server_refuses_stops_the_sweep_and_leaves_nothing_running(server, monkeypatch, capsys):
    experiment = study(server, "workers")
    for key, value in server.login(SCHEDULER).items():
        monkeypatch.setenv(key, value)
    real = study_module._run_variants

    def as_bob(*args, **kwargs):
        # The workers (the sweep's own process among them) sign in as bob (READ only): as if the server stopped
        # letting the sweep write once its run was made.
        with server.as_user("bob"):
            return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "_run_variants", as_bob)
    argv = ["--overrides", f"{TINY} {GRID} sweep.workers=2 experiment=workers"]
    assert cli.main(sweep_entry._entry, argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("descent: error: variant ") and err.count("\n") == 1
    assert (
        f"tracking server {server.url} refused user 'bob' (403 on /api/2.0/mlflow/runs/create): "
        "writing runs to experiment 'workers' needs EDIT on it"
    ) in err
    [parent] = runs_of(server, experiment)  # no variant run was created
    assert parent.info.status == "FAILED"
    assert parent.data.tags["descent.error"].startswith("AccessRefused: variant ")
    assert nothing_running(server)


def test_refused_artifact_transfers_are_explained_too(server, monkeypatch):
    experiment = study(server, "artifacts")
    with server.as_user("alice"):
        run = MlflowClient(server.url).create_run(experiment)
        MlflowClient(server.url).log_text(run.info.run_id, "alice's", "note.txt")
        MlflowClient(server.url).set_terminated(run.info.run_id)
    for key, value in server.login("bob").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(requests.HTTPError) as refused:  # MLflow's artifact client raises requests' own error
        MlflowClient(server.url).log_text(run.info.run_id, "bob's", "note.txt")
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run.info.run_id}/artifacts/note.txt"
    access.note(experiment="artifacts")  # as every entry point does with its config's experiment
    assert access.refusal(refused.value) == (
        f"tracking server {server.url} refused user 'bob' (403 on {path}): writing runs to experiment "
        "'artifacts' needs EDIT on it: ask an admin of the server to grant it (README: Team setup)"
    )
