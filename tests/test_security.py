"""Nothing secret is recorded: a password in the tracking URI stays out of params, tags, artifacts and output."""

import inspect
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipelines.ui import free_port, mlflow_server
from tests.conftest import project_env

pytestmark = pytest.mark.slow


def test_servers_bind_to_loopback_by_default():
    assert inspect.signature(mlflow_server).parameters["host"].default == "127.0.0.1"


def test_a_password_in_the_tracking_uri_is_never_recorded(store, tmp_path):
    with mlflow_server(store, free_port()) as url:
        secret_uri = url.replace("http://", "http://alice:s3cr3t-pw@")
        env = project_env(secret_uri) | {"DESCENT_API_TOKEN": "tok-s3cr3t"}
        command = [sys.executable, "-m", "pipelines.train", "--data", "iris", "--epochs", "1", "--batch_size", "full"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("descent").experiment_id])
        [run] = [r for r in runs if r.data.tags.get("descent.kind") != "trial"]  # the variant; the rest its trials
        assert len(runs) > 1
        recorded = [done.stdout, done.stderr]
        for each in runs:
            recorded += [*each.data.params.values(), *each.data.tags.values()]
        for name in ("config.yaml", "split_report.json"):
            path = client.download_artifacts(run.info.run_id, name, str(tmp_path))
            with open(path) as handle:
                recorded.append(handle.read())
    assert len(recorded) == sum(len(r.data.params) + len(r.data.tags) for r in runs) + 4
    assert not [text for text in recorded if "s3cr3t" in text]
