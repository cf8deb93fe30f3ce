"""Runs in MLflow: where they go, how they start and end, what they record (the store itself: backend.py and
store.py; a run's network and servable model: models.py).

Every record goes through `store()`: MLflow's client in this process, or the writer process when this process has
one (pipelines/writer.py), so that a sweep's process trains while its records are written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import yaml

from components import records
from components.data import frame_digest
from components.errors import InputError
from components.split import Split
from pipelines import cli, writer
from pipelines.backend import is_remote, machine_lock, redacted, tracking_uri

log = logging.getLogger("descent")
# MLflow sets its logger to INFO when imported; its per-model lines ("Validating input example
# against model signature") would bury descent's one line per variant.
logging.getLogger("mlflow").setLevel(logging.WARNING)
MAX_PARAM_LENGTH = 6000
SAMPLE_ROWS = 1000  # rows of a dataset input sent to MLflow for its schema (its profile counts every row)


def store() -> Any:
    """This process's tracking store: its writer process if it has one for the current URI, else MLflow's client."""
    uri = tracking_uri()
    found = writer.active(uri)
    if found is not None:
        return found
    from pipelines.store import direct

    return direct(uri)


def client() -> Any:
    """MLflow's own client for the current store (the model registry, which the writer does not serve)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


@dataclass(frozen=True)
class Opened:
    """A run this process has open: `.info.run_id` and `.info.experiment_id`, as MLflow's active run has them."""

    run_id: str
    experiment_id: str

    @property
    def info(self) -> Opened:
        return self


@contextmanager
def run(
    experiment: str,
    run_name: str,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[Opened]:
    """Start, resume (`run_id`) or adopt (under `mlflow run`) a run; end it FINISHED, FAILED or KILLED.

    A run nested under `parent_run_id` (from this process or a worker's) goes in its parent's experiment,
    whatever the config says, so the UI can nest it. Runs started here carry MLflow's context tags (user,
    source, git commit), as mlflow.start_run gives them.
    """
    s = store()
    # `mlflow run` hands its run over in MLFLOW_RUN_ID; take it once, so that runs nested under it
    # are new runs.
    adopted = run_id or (None if parent_run_id else os.environ.pop("MLFLOW_RUN_ID", None))
    if adopted:
        found = get_run(adopted)
        s.reopen(adopted)
        _warn_experiment(found.info.experiment_id, experiment)
        _ADOPTED.add(adopted)
        s.log_batch(adopted, tags={**(tags or {}), "mlflow.runName": run_name})
        opened = Opened(adopted, found.info.experiment_id)
    else:
        where = experiment_of(parent_run_id) if parent_run_id else experiment_id(experiment)
        labels = {**(tags or {}), **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
        made = s.create_run(where, run_name, labels, int(time.time() * 1000), context=True)
        opened = Opened(made, where)
    _EXPERIMENT_OF[opened.run_id] = opened.experiment_id  # its nested runs need not ask the store
    _ACTIVE.append(opened)
    try:
        yield opened
    except BaseException as exc:
        stopped = cli.stop_inside(exc)  # Ctrl+C or SIGTERM, also when a library's C code made it its own error
        if stopped is not None:
            _end(opened, "KILLED")
            if stopped is exc:
                raise
            raise stopped from None
        later(tags={"descent.error": f"{type(exc).__name__}: {exc}"[:5000]})
        _end(opened, "FAILED")
        raise
    else:
        _end(opened, "FINISHED")


def _end(opened: Opened, status: str) -> None:
    try:
        with cli.signals_deferred():  # a stop arriving now ends nothing half-way: the run's records, then its end
            _write_pending(opened.run_id)
            store().end(opened.run_id, status)
        _LAST[:] = [opened.run_id]
    finally:
        _ACTIVE.remove(opened)


def settle() -> None:
    """Return once every record this process sent is in the store (for another process that reads it next)."""
    store().settle()


_ACTIVE: list[Opened] = []  # the runs this process has open, innermost last
_LAST: list[str] = []  # the run this process ended last
_ADOPTED: set[str] = set()  # runs `mlflow run` created: their -P values are params already


def active() -> Opened:
    """The innermost run this process has open."""
    if not _ACTIVE:
        raise RuntimeError("no run is open in this process")
    return _ACTIVE[-1]


def last_run_id() -> str | None:
    """The run this process ended last (where its log files go)."""
    return _LAST[0] if _LAST else None


def later(
    params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None, tags: dict | None = None
) -> None:
    """Params, metrics and tags for the active run, written in one batch when the run ends (however it ends).

    A sqlite commit costs tens of milliseconds, as much as a small variant's training: a variant's run is
    written in a handful of batches (its creation with its tags, its metric batches, this, its end), not
    one write per call. What a failed or interrupted run queued is written all the same.
    """
    pending = _PENDING.setdefault(active().run_id, {"params": {}, "metrics": {}, "tags": {}})
    pending["params"].update(params or {})
    pending["metrics"].update(metrics or {})
    pending["tags"].update(tags or {})


_PENDING: dict[str, dict[str, dict]] = {}


def _write_pending(run_id: str) -> None:
    pending = _PENDING.pop(run_id, None)
    if pending is None:
        return
    params = {k: _text(v)[:MAX_PARAM_LENGTH] for k, v in pending["params"].items()}
    if params and run_id in _ADOPTED:  # leave alone what the launching `mlflow run` recorded from -P values
        present = get_run(run_id).data.params
        params = {k: v for k, v in params.items() if k not in present}
    now = int(time.time() * 1000)
    points = [(k, float(v), now, 0) for k, v in pending["metrics"].items()]
    store().log_batch(run_id, points, params, {k: str(v) for k, v in pending["tags"].items()})


def experiment_id(name: str) -> str:
    """The id of the experiment called `name`, created when missing; refuses deleted or unwritable ones."""
    s = store()
    found = s.experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise InputError(
            f"experiment {name!r} is deleted: restore it (mlflow experiments restore --experiment-id "
            f"{found.experiment_id}) or set experiment: to a new name"
        )
    if found is None:
        with machine_lock(f"create-{name}"):  # two triggers creating the same experiment
            found = s.experiment_by_name(name)
            if found is None:
                found = s.experiment(s.create_experiment(name))
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
    run_id = active().run_id
    present = get_run(run_id).data.params if run_id in _ADOPTED else {}
    fresh = {k: _text(v)[:MAX_PARAM_LENGTH] for k, v in params.items() if k not in present}
    if fresh:
        store().log_batch(run_id, params=fresh)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """One call per epoch (or per summary), not one per metric."""
    now = int(time.time() * 1000)
    store().log_batch(active().run_id, [(k, float(v), now, step or 0) for k, v in metrics.items()])


class EpochMetrics:
    """Per-epoch metrics of the active run, sent in one batch at most every `interval` seconds.

    A sqlite commit costs tens of milliseconds, as much as a whole epoch of a small network; a
    variant's curves still appear in the UI while it trains, a second or so behind.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval, self.pending, self.sent = interval, [], time.monotonic()
        self.run_id = active().run_id

    def add(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.sent >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            store().log_batch(self.run_id, self.pending)
        self.pending, self.sent = [], time.monotonic()

    def __enter__(self) -> EpochMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also when training stopped with an error: what was measured is kept


def log_dataset_inputs(split: Split, name: str, source: str, digest: str) -> None:
    """Each split as an MLflow dataset input, with its context and digest (descent's: MLflow's default hashes the
    rows much more slowly, 8 s for 700k rows). MLflow reads the schema from the first SAMPLE_ROWS rows; the
    profile (rows, sizes) counts them all."""
    inputs = []
    for context, part in split.parts().items():
        common = {"context": context, "tags": {"descent.data_digest": digest}, "name": f"{name}-{context}"}
        common |= {"source": source}
        if isinstance(part.features, np.ndarray):  # samples of array data: descent's digest, of their hashes
            features, targets = part.features, part.target.to_numpy()
            profile = {f"features_{k}": _array_fact(features, k) for k in ("shape", "size", "nbytes")}
            profile |= {f"targets_{k}": _array_fact(targets, k) for k in ("shape", "size", "nbytes")}
            sample = {"kind": "numpy", "data": np.asarray(features[:SAMPLE_ROWS]), "targets": targets[:SAMPLE_ROWS]}
            inputs.append(common | sample | {"digest": part.digest(), "profile": profile})
            continue
        target = str(part.target.name)
        frame = part.features.head(SAMPLE_ROWS).assign(**{target: part.target.head(SAMPLE_ROWS)})
        rows = len(part.features)
        profile = {"num_rows": rows, "num_elements": rows * (part.features.shape[1] + 1)}
        digest_of = frame_digest(part.features.assign(**{target: part.target}))
        inputs.append(
            common | {"kind": "pandas", "data": frame, "targets": target, "digest": digest_of, "profile": profile}
        )
    store().log_inputs(active().run_id, inputs)


def _array_fact(array: np.ndarray, fact: str) -> Any:
    value = getattr(array, fact)
    return list(value) if isinstance(value, tuple) else int(value)


def set_tags(tags: dict[str, str]) -> None:
    store().log_batch(active().run_id, tags=tags)


def log_json(data: Any, artifact_file: str) -> None:
    store().log_text(active().run_id, json.dumps(data, indent=2), artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    store().log_file(active().run_id, str(path), artifact_path)


def log_yaml(data: dict, artifact_file: str) -> None:
    store().log_text(active().run_id, yaml.safe_dump(data, sort_keys=False), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    store().log_text(active().run_id, text, artifact_file)


def flush() -> None:
    """Write now what the active run has queued (`later`)."""
    _write_pending(active().run_id)


def get_run(run_id: str) -> Any:
    """A run by id (pipelines/store.py Run), or a clear error naming the id and the tracking store."""
    from pipelines.access import refusal

    try:
        return store().get_run(run_id)
    except Exception as exc:
        if refusal(exc) or not _store_error(exc):  # a server that refuses the login says so, not "no run"
            raise
        raise InputError(f"no run {run_id!r} in {tracking_uri()}: check the run id and MLFLOW_TRACKING_URI") from None


def _store_error(exc: BaseException) -> bool:
    """Whether the store answered with an error of its own (here, or in the writer process)."""
    kinds = {"MlflowException", "RestException"}
    return type(exc).__name__ in kinds or getattr(exc, "kind", None) in kinds


def find_runs(experiment_ids: list[str], tags: dict[str, str], max_results: int = 1000) -> list[Any]:
    """Runs whose tags all match, newest first."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return store().search_runs(experiment_ids, where, max_results)


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
    s = store()
    tags = {**tags, "mlflow.parentRunId": parent_run_id, "descent.error": reason[:5000]}
    where = experiment_of(parent_run_id)
    with cli.signals_deferred():
        run_id = s.create_run(where, run_name, tags, int(time.time() * 1000))
        s.log_batch(run_id, params={k: _text(v) for k, v in params.items()})
        s.end(run_id, "FAILED")
    return run_id


def experiment_of(run_id: str) -> str:
    """The experiment of a run, asked once per process (a run never moves)."""
    if run_id not in _EXPERIMENT_OF:
        _EXPERIMENT_OF[run_id] = get_run(run_id).info.experiment_id
    return _EXPERIMENT_OF[run_id]


_EXPERIMENT_OF: dict[str, str] = {}


def metric_frame(run_id: str, keys: list[str], step: str = "epoch") -> pd.DataFrame:
    """Metrics of a run as one frame, one row per step (the epoch, or the updates for validation checks)."""
    s = store()
    points = {key: s.metric_history(run_id, key) for key in keys}
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
    s = store()
    run = s.get_run(run_id)
    missing = {k: _text(v) for k, v in (params or {}).items() if k not in run.data.params}
    if missing:
        s.log_batch(run_id, params=missing)
    trials = find_runs([run.info.experiment_id], {"mlflow.parentRunId": run_id})
    with cli.signals_deferred():
        for trial in trials:
            if trial.info.status == "RUNNING":
                s.log_batch(trial.info.run_id, tags={"descent.error": reason})
                s.end(trial.info.run_id, status)
        s.log_batch(run_id, tags={"descent.error": reason})
        s.end(run_id, status)


def log_folder_to(run_id: str, folder: Path, artifact_path: str) -> None:
    store().log_folder(run_id, str(folder), artifact_path)


def move_under(run_id: str, parent_run_id: str) -> None:
    """Nest a run under another parent (a resumed sweep's new run)."""
    store().log_batch(run_id, tags={"mlflow.parentRunId": parent_run_id})


def delete_tag(run_id: str, key: str) -> None:
    store().delete_tag(run_id, key)


def set_tags_on(run_id: str, tags: dict[str, str]) -> None:
    """Set tags on any run, in one write (up to 100 tags): a crash leaves all of them or none."""
    store().log_batch(run_id, tags={k: str(v) for k, v in tags.items()})


def runs_page(experiment_id: str) -> str:
    """The URL of an experiment's runs table (where a sweep's parent expands to its variants)."""
    base = redacted(tracking_uri()).rstrip("/") if is_remote() else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs"


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _warn_experiment(experiment: str, wanted: str) -> None:
    actual = store().experiment(experiment).name
    if actual != wanted:
        print(
            f"descent: note: `mlflow run` put this run in experiment {actual!r}, config names {wanted!r}; "
            f"pass --experiment-name {wanted} to mlflow run to use it",
            file=sys.stderr,
        )
