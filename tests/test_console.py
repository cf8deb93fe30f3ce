"""Quiet by default: a sweep's console shows descent's own lines only; the rest is in logs/ on the run, or shown
with --verbose.

What counts as descent's line, precisely:
- stdout: the sweep's progress (`N runs on W worker processes`,
  `[i/n] <variant>: <metric> <value>, learning rate <lr> (<how chosen>), <s> s  ETA <t>`),
  the summary (each line is a line of the run's comparison/summary.md), `Variants, best first ...`, the table of
  variants (its header, and one row per variant, starting with the variant's name), and the closing hints
  (`see the variants side by side: ...`, `then open http...`); a train run's `<variant> finished: ...` and
  `see it: ...`; blank lines.
- stderr: lines that start with `descent: ` (`error:`, `warning:`, `note:`). tqdm's bar needs a terminal.
- under `mlflow run`, also the launcher's own lines (`<date> <time> INFO mlflow.<module>: ...`), which the `mlflow`
  command prints before descent's process starts and after it ends.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, project_env

pytestmark = pytest.mark.slow

STDOUT = [
    r"\d+ runs on \d+ worker processes",
    r"\[\d+/\d+\] [\w.-]+( \(diverged\))?: val_(accuracy|mae) [\d.]+, learning rate [\d.e+-]+ \(\w+\), "
    r"[\d.e+-]+ s  ETA [\d:]+",
    r"Variants, best first \(ranked on the final validation metric\):",
    r"see the variants side by side: .+",
    r"then open http://\S+ and expand run \w+",
    r"or open it grouped by \w+: http://\S+",
    r"[\w.-]+ (finished|diverged): test_\w+=.+ \([\d.]+ s\)",
    r"see it: .+",
    r"",
]
STDERR = [r"descent: (error|warning|note): .+"]
LAUNCHER = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.[\w.]+: .+"
TENSORFLOW = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "cuda")
MLFLOW_NOISE = ("An input example was not provided", "color_warning(")
TABLE_HEADER = r"\s*variant\s+status\s+lr\s+val_accuracy\s+test_accuracy\s+seconds\s+updates\s+seconds_to_target"


def not_descents(out: str, err: str, summary: str = "", variants: tuple = (), launcher: bool = False) -> list[str]:
    """The lines of stdout and stderr that descent did not write (see the module docstring)."""
    summary_lines = set(summary.splitlines())
    table = [TABLE_HEADER] + [rf"\s*{re.escape(v)}\s+.+" for v in variants]
    strange = [line for line in out.splitlines() if line not in summary_lines and not _matches(line, STDOUT + table)]
    allowed = STDERR + ([LAUNCHER] if launcher else [])
    return strange + [line for line in err.splitlines() if not _matches(line, allowed)]


def _matches(line: str, patterns: list[str]) -> bool:
    return any(re.fullmatch(p, line) for p in patterns)


@pytest.fixture
def rows(tmp_path):
    """Iris as a user's CSV, with a column left empty: the one warning a person should see."""
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    path = tmp_path / "iris.csv"
    frame.assign(notes=np.nan).to_csv(path, index=False)
    return path


def _sweep_run(store):
    client = MlflowClient(store)
    [parent] = client.search_runs(
        [client.get_experiment_by_name("descent").experiment_id], "tags.`descent.kind` = 'sweep'"
    )
    return client, parent


def _artifact(client, run_id, path, folder):
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


def _logs(client, run_id, folder):
    names = [a.path for a in client.list_artifacts(run_id, "logs")]
    folder.mkdir(exist_ok=True)
    return {n.removeprefix("logs/"): _artifact(client, run_id, n, folder) for n in names}


def test_a_sweep_prints_only_descents_lines_and_keeps_the_rest_in_its_logs(store, tmp_path, rows):
    command = [sys.executable, "-m", "pipelines.sweep", "--data", str(rows), "--target", "species", "--epochs", "1"]
    command += ["--optimizers", "adam", "--batch_sizes", "full,16", "--overrides", "model.hidden=[8] sweep.workers=2"]
    done = subprocess.run(command, cwd=tmp_path, env=project_env(store), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent = _sweep_run(store)
    summary = _artifact(client, parent.info.run_id, "comparison/summary.md", tmp_path)
    assert "2 runs on 2 worker processes" in done.stdout  # the workers' console is checked too
    assert not_descents(done.stdout, done.stderr, summary, ("adam-full", "adam-bs16")) == []
    assert done.stderr.splitlines() == [
        f"descent: warning: feature column 'notes' of {rows} is entirely missing: it is left out; fill it or drop it"
    ]
    logs = _logs(client, parent.info.run_id, tmp_path / "logs")
    workers = [name for name in logs if name.startswith("worker-")]
    assert "sweep.log" in logs and len(workers) == 1  # the sweep's own process is the other worker
    assert any(word in logs["sweep.log"] for word in TENSORFLOW)
    assert all(any(word in logs[w] for word in TENSORFLOW) for w in workers)
    assert sum(log.count(MLFLOW_NOISE[0]) for log in logs.values()) == 1  # one servable model: the best variant's


def test_verbose_shows_everything_and_the_default_does_not(store, tmp_path):
    command = [sys.executable, "-m", "pipelines.train", "--data", "iris", "--epochs", "2", "--batch_size", "full"]
    env = project_env(store)
    quiet = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    loud = subprocess.run(command + ["--verbose"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert not_descents(quiet.stdout, quiet.stderr) == []
    assert quiet.stderr == ""
    assert any(word in loud.stderr for word in TENSORFLOW)
    assert all(noise in loud.stderr for noise in MLFLOW_NOISE)
    assert re.search(r"^epoch 2/2: loss ", loud.stdout, re.MULTILINE)  # training.verbose: one line per epoch


def test_what_a_run_leaves_in_the_users_clone_is_ignored_by_git(store, tmp_path):
    # README's first command runs in the clone: the store, its lock and its artifacts land there, and must not show
    # as new files in `git status` (the project's own .gitignore, in a repository where the run happened)
    command = [sys.executable, "-m", "pipelines.train", "--data", "iris", "--epochs", "1", "--batch_size", "full"]
    done = subprocess.run(command, cwd=tmp_path, env=project_env(store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "mlflow.db.lock").exists() and (tmp_path / "mlruns").is_dir()  # what there is to ignore
    shutil.copy(ROOT / ".gitignore", tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    status = ["git", "status", "--porcelain", "--untracked-files=all"]
    assert subprocess.run(status, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines() == [
        "?? .gitignore"
    ]


def test_mlflow_run_prints_only_descents_and_the_launchers_lines(store, tmp_path):
    client = MlflowClient(store)
    client.create_experiment("descent", artifact_location=str(tmp_path / "artifacts"))
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "descent"]
    for param in ("data=iris", "epochs=1", "optimizers=sgd", "batch_sizes=full,16", "overrides=model.hidden=[8]"):
        command += ["-P", param]
    done = subprocess.run(command, env=project_env(store), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parent = _sweep_run(store)
    summary = _artifact(client, parent.info.run_id, "comparison/summary.md", tmp_path)
    assert not_descents(done.stdout, done.stderr, summary, ("sgd-full", "sgd-bs16"), launcher=True) == []
    assert "Best variant:" in done.stdout
    assert {"sweep.log"} <= set(_logs(client, parent.info.run_id, tmp_path / "logs"))


def test_the_definition_of_descents_lines_can_fail():
    out = "[1/2] adam-bs16: val_accuracy 0.9000, learning rate 0.003 (grid), 0.3 s  ETA 00:01\nsee it: descent-ui\n"
    noise = "I0000 00:00:1795950449.844874    6609 cudart_stub.cc:31] Could not find cuda drivers"
    assert not_descents(out, "descent: warning: x\n") == []
    assert not_descents(out + "Epoch 1/2\n", noise + "\n") == ["Epoch 1/2", noise]
    assert not_descents("", "2026/11/29 11:25:43 INFO mlflow.projects: === Run succeeded ===\n", launcher=True) == []
    assert not_descents("", "2026/11/29 11:25:43 INFO mlflow.projects: === Run succeeded ===\n") != []
    assert not_descents("| a | b |\n", "", summary="| a | b |\n") == []
