"""Runs in MLflow: where they go, how they start and end, what they record (the store itself: backend.py; a run's
network and servable model: models.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from components import records
from components.data import frame_digest
from components.errors import InputError
from components.split import Split
from pipelines.backend import ensure_store, is_remote, machine_lock, redacted, tracking_uri

log = logging.getLogger("descent")
# MLflow sets its logger to INFO when imported; its per-model lines ("Validating input example
# against model signature") would bury descent's one line per variant.
logging.getLogger("mlflow").setLevel(logging.WARNING)
MAX_PARAM_LENGTH = 6000


@contextmanager
def run(
    experiment: str,
    run_name: str,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """Start, resume (`run_id`) or adopt (under `mlflow run`) a run; end it FINISHED, FAILED or KILLED.

    A run nested under `parent_run_id` (from this process or a worker's) goes in its parent's experiment,
    whatever the config says, so the UI can nest it.
    """
    mlflow.set_tracking_uri(tracking_uri())
    ensure_store()
    # `mlflow run` hands its run over in MLFLOW_RUN_ID; take it once, so that runs nested under it
    # are new runs (mlflow.start_run would otherwise resume the launched run again).
    adopted = run_id or (None if parent_run_id else os.environ.pop("MLFLOW_RUN_ID", None))
    if adopted:
        active = mlflow.start_run(run_id=adopted)
        _warn_experiment(active, experiment)
        _ADOPTED.add(active.info.run_id)
        mlflow.set_tags({**(tags or {}), "mlflow.runName": run_name})
    else:
        where = experiment_of(parent_run_id) if parent_run_id else experiment_id(experiment)
        active = mlflow.start_run(
            experiment_id=where,
            run_name=run_name,
            nested=parent_run_id is not None,
            parent_run_id=parent_run_id,
            tags=tags or {},
        )
    run_id = active.info.run_id
    try:
        yield active
    except KeyboardInterrupt:
        _write_pending(run_id)
        mlflow.end_run("KILLED")
        raise
    except BaseException as exc:
        later(tags={"descent.error": f"{type(exc).__name__}: {exc}"[:5000]})
        _write_pending(run_id)
        mlflow.end_run("FAILED")
        raise
    else:
        _write_pending(run_id)
        mlflow.end_run("FINISHED")


_ADOPTED: set[str] = set()  # runs `mlflow run` created: their -P values are params already


def later(
    params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None, tags: dict | None = None
) -> None:
    """Params, metrics and tags for the active run, written in one batch when the run ends (however it ends).

    A sqlite commit costs tens of milliseconds, as much as a small variant's training: a variant's run is
    written in a handful of batches (its creation with its tags, its metric batches, this, its end), not
    one write per call. What a failed or interrupted run queued is written all the same.
    """
    pending = _PENDING.setdefault(mlflow.active_run().info.run_id, {"params": {}, "metrics": {}, "tags": {}})
    pending["params"].update(params or {})
    pending["metrics"].update(metrics or {})
    pending["tags"].update(tags or {})


_PENDING: dict[str, dict[str, dict]] = {}


def _write_pending(run_id: str) -> None:
    pending = _PENDING.pop(run_id, None)
    if pending is None:
        return
    from mlflow.entities import Metric, Param, RunTag

    params = {k: _text(v)[:MAX_PARAM_LENGTH] for k, v in pending["params"].items()}
    if params and run_id in _ADOPTED:  # leave alone what the launching `mlflow run` recorded from -P values
        present = client().get_run(run_id).data.params
        params = {k: v for k, v in params.items() if k not in present}
    now = int(time.time() * 1000)
    write_batch(
        run_id,
        [Metric(k, float(v), now, 0) for k, v in pending["metrics"].items()],
        [Param(k, v) for k, v in params.items()],
        [RunTag(k, str(v)) for k, v in pending["tags"].items()],
    )


def write_batch(run_id: str, metrics: list, params: list | None = None, tags: list | None = None) -> None:
    """Metrics, params and tags in as few calls as MLflow allows (1,000 entries a call, 100 params, 100 tags)."""
    params, tags, c = list(params or []), list(tags or []), client()
    while metrics or params or tags:
        some_params, some_tags = params[:100], tags[:100]
        room = 1000 - len(some_params) - len(some_tags)
        c.log_batch(run_id, metrics=metrics[:room], params=some_params, tags=some_tags)
        metrics, params, tags = metrics[room:], params[100:], tags[100:]


def experiment_id(name: str) -> str:
    """The id of the experiment called `name`, created when missing; refuses deleted or unwritable ones."""
    ensure_store()
    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise InputError(
            f"experiment {name!r} is deleted: restore it (mlflow experiments restore --experiment-id "
            f"{found.experiment_id}) or set experiment: to a new name"
        )
    if found is None:
        with machine_lock(f"create-{name}"):  # two triggers creating the same experiment
            found = c.get_experiment_by_name(name)
            if found is None:
                found = c.get_experiment(c.create_experiment(name))
    _check_writable(found.artifact_location, name)
    return found.experiment_id


def _check_writable(location: str, name: str) -> None:
    parts = urlsplit(location)
    if parts.scheme not in ("", "file"):
        return  # remote artifact stores answer for themselves
    folder = Path(parts.path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(
            f"artifact location {folder} of experiment {name!r} is not writable ({exc.strerror}): "
            "fix its permissions or use another experiment"
        ) from None


def log_params(params: dict[str, Any]) -> None:
    """Log params, leaving alone those the launching `mlflow run` already recorded from -P values."""
    run_id = mlflow.active_run().info.run_id
    present = client().get_run(run_id).data.params if run_id in _ADOPTED else {}
    fresh = {k: _text(v)[:MAX_PARAM_LENGTH] for k, v in params.items() if k not in present}
    if fresh:
        mlflow.log_params(fresh)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """One call per epoch (or per summary), not one per metric."""
    mlflow.log_metrics(metrics, step=step)


class EpochMetrics:
    """Per-epoch metrics of the active run, sent in one batch at most every `interval` seconds.

    A sqlite commit costs tens of milliseconds, as much as a whole epoch of a small network; a
    variant's curves still appear in the UI while it trains, a second or so behind.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval, self.pending, self.sent = interval, [], time.monotonic()

    def add(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.sent >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            client().log_batch(mlflow.active_run().info.run_id, metrics=self.pending)
        self.pending, self.sent = [], time.monotonic()

    def __enter__(self) -> EpochMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also when training stopped with an error: what was measured is kept


def log_dataset_inputs(split: Split, name: str, source: str, digest: str) -> None:
    """Each split as an MLflow dataset input, with its context and digest."""
    for context, part in split.parts().items():
        if isinstance(part.features, np.ndarray):  # samples of array data: descent's digest, of their hashes
            samples = mlflow.data.from_numpy(
                part.features,
                source=source,
                targets=part.target.to_numpy(),
                name=f"{name}-{context}",
                digest=part.digest(),
            )
            mlflow.log_input(samples, context=context, tags={"descent.data_digest": digest})
            continue
        frame = part.features.assign(**{part.target.name: part.target})
        # descent's own digest: MLflow's default hashes the rows much more slowly (8 s for 700k rows)
        dataset = mlflow.data.from_pandas(
            frame, source=source, targets=str(part.target.name), name=f"{name}-{context}", digest=frame_digest(frame)
        )
        mlflow.log_input(dataset, context=context, tags={"descent.data_digest": digest})


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_json(data: Any, artifact_file: str) -> None:
    mlflow.log_dict(data, artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


def log_yaml(data: dict, artifact_file: str) -> None:
    mlflow.log_text(yaml.safe_dump(data, sort_keys=False), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def flush() -> None:
    """Write now what the active run has queued (`later`)."""
    _write_pending(mlflow.active_run().info.run_id)


def client() -> MlflowClient:
    return MlflowClient(tracking_uri())


def get_run(run_id: str) -> Any:
    """A run by id, or a clear error naming the id and the tracking store."""
    from mlflow.exceptions import MlflowException

    from pipelines.access import refusal

    try:
        return client().get_run(run_id)
    except MlflowException as exc:
        if refusal(exc):  # a server that refuses the login says so, not "no run"
            raise
        raise InputError(f"no run {run_id!r} in {tracking_uri()}: check the run id and MLFLOW_TRACKING_URI") from None


def find_runs(experiment_ids: list[str], tags: dict[str, str], max_results: int = 1000) -> list[Any]:
    """Runs whose tags all match, newest first."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client().search_runs(
        experiment_ids, filter_string=where, order_by=["start_time DESC"], max_results=max_results
    )


def children(parent: Any) -> list[Any]:
    """The runs nested under `parent`, oldest first."""
    found = find_runs([parent.info.experiment_id], {"mlflow.parentRunId": parent.info.run_id})
    return sorted(found, key=lambda r: r.info.start_time)


def named(parent_run_id: str, run_name: str) -> list[Any]:
    """The runs called `run_name` nested under `parent_run_id`, newest first."""
    where = experiment_of(parent_run_id)
    return find_runs([where], {"mlflow.parentRunId": parent_run_id, "mlflow.runName": run_name})


def running(parent_run_id: str, run_name: str) -> list[Any]:
    """The runs called `run_name` nested under `parent_run_id` that are still RUNNING."""
    return [r for r in named(parent_run_id, run_name) if r.info.status == "RUNNING"]


def record_failed(parent_run_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any], reason: str) -> str:
    """A FAILED run nested under `parent_run_id`, with its reason: for what failed before it had a run of its own."""
    from mlflow.entities import Param

    c = client()
    tags = {**tags, "mlflow.parentRunId": parent_run_id, "descent.error": reason[:5000]}
    run_id = c.create_run(experiment_of(parent_run_id), run_name=run_name, tags=tags).info.run_id
    c.log_batch(run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    c.set_terminated(run_id, "FAILED")
    return run_id


def experiment_of(run_id: str) -> str:
    """The experiment of a run, asked once per process (a run never moves)."""
    if run_id not in _EXPERIMENT_OF:
        _EXPERIMENT_OF[run_id] = get_run(run_id).info.experiment_id
    return _EXPERIMENT_OF[run_id]


_EXPERIMENT_OF: dict[str, str] = {}


def metric_frame(run_id: str, keys: list[str], step: str = "epoch") -> pd.DataFrame:
    """Metrics of a run as one frame, one row per step (the epoch, or the updates for validation checks)."""
    c = client()
    points = {key: [(m.step, m.value) for m in c.get_metric_history(run_id, key)] for key in keys}
    return records.points_frame(points, step)


def mark_failed(run_id: str, reason: str, params: dict[str, Any] | None = None) -> None:
    """End a run that its process can no longer end (killed, crashed) as FAILED, with the reason; its nested
    runs (learning-rate trials) that are still RUNNING too. Only ever called once that process is gone."""
    end_run(run_id, "FAILED", reason, params)


def end_run(run_id: str, status: str, reason: str, params: dict[str, Any] | None = None) -> None:
    """End a run of a process that is gone with `status` and the reason, and its nested runs still RUNNING.

    `params`: those of them the run lacks are written first (a variant's process writes its params when the run
    ends: one it could not end has none, and the comparison names a variant by them).
    """
    from mlflow.entities import Param

    c = client()
    run = c.get_run(run_id)
    missing = {k: v for k, v in (params or {}).items() if k not in run.data.params}
    if missing:
        c.log_batch(run_id, params=[Param(k, _text(v)) for k, v in missing.items()])
    for trial in find_runs([run.info.experiment_id], {"mlflow.parentRunId": run_id}):
        if trial.info.status == "RUNNING":
            c.set_tag(trial.info.run_id, "descent.error", reason)
            c.set_terminated(trial.info.run_id, status)
    c.set_tag(run_id, "descent.error", reason)
    c.set_terminated(run_id, status)


def log_folder_to(run_id: str, folder: Path, artifact_path: str) -> None:
    client().log_artifacts(run_id, str(folder), artifact_path)


def move_under(run_id: str, parent_run_id: str) -> None:
    """Nest a run under another parent (a resumed sweep's new run)."""
    client().set_tag(run_id, "mlflow.parentRunId", parent_run_id)


def delete_tag(run_id: str, key: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # not there
        client().delete_tag(run_id, key)


def set_tags_on(run_id: str, tags: dict[str, str]) -> None:
    """Set tags on any run, in one write (up to 100 tags): a crash leaves all of them or none."""
    from mlflow.entities import RunTag

    write_batch(run_id, [], tags=[RunTag(k, str(v)) for k, v in tags.items()])


def runs_page(experiment_id: str) -> str:
    """The URL of an experiment's runs table (where a sweep's parent expands to its variants)."""
    base = redacted(tracking_uri()).rstrip("/") if is_remote() else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs"


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _warn_experiment(active: Any, wanted: str) -> None:
    actual = client().get_experiment(active.info.experiment_id).name
    if actual != wanted:
        print(
            f"descent: note: `mlflow run` put this run in experiment {actual!r}, config names {wanted!r}; "
            f"pass --experiment-name {wanted} to mlflow run to use it",
            file=sys.stderr,
        )
