"""The tracking store as descent uses it, on plain data: runs, their records and artifacts, read and written through
MLflow's client here, or from another process through the writer (pipelines/writer.py), which runs the same code.

Nothing here is imported by a process whose writer does its tracking: that process never loads MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import terminal
from pipelines.backend import ensure_store, use_wal
from pipelines.sqlmetrics import Point, insert_metrics, sql_store


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str


@dataclass(frozen=True)
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A run as MLflow's client returns it (info, data), as plain data."""

    info: RunInfo
    data: RunData


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str
    artifact_location: str


class Direct:
    """The tracking store at `uri` through MLflow's client, in this process."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        # MLflow sets its logger to INFO when imported; its lines per run ("Started monitoring system metrics")
        # would fill the logs. While quiet, what it still says goes to the log file (pipelines/terminal.py).
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        terminal.divert("mlflow")
        use_wal()
        ensure_store(uri)
        self.uri, self.client = uri, MlflowClient(uri)
        self.sql = sql_store(self.client)
        self.monitors: dict[str, Any] = {}

    # -- runs ----------------------------------------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        start_time: int,
        run_id: str | None = None,
        context: bool = False,
    ) -> str:
        """A new RUNNING run; with `run_id` (a uuid4 hex the caller made) it gets that id, so that a caller in
        another process can go on without waiting for the store's answer (local stores only). `context`: with
        MLflow's context tags (user, source, git commit), as mlflow.start_run gives a run."""
        tags = {**self.context_tags(), **tags} if context else tags
        with _given_id(self.client, run_id):
            made = self.client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)
        if run_id is not None and made.info.run_id != run_id:
            raise RuntimeError(f"the tracking store gave run {made.info.run_id}, not the id {run_id} asked for")
        return made.info.run_id

    @functools.cache  # noqa: B019 (one store per process, kept for its life)
    def context_tags(self) -> dict[str, str]:
        from mlflow.tracking.context.registry import resolve_tags

        return resolve_tags({})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    def reopen(self, run_id: str) -> None:
        """Set an existing run RUNNING again (a resumed sweep, or the run `mlflow run` made)."""
        self.client.update_run(run_id, status="RUNNING")

    def log_batch(
        self, run_id: str, metrics: list[Point] = (), params: dict[str, str] | None = None, tags: dict | None = None
    ) -> None:
        """Metrics, params and tags in as few calls as MLflow allows (1,000 entries a call, 100 params, 100 tags); a
        SQL store's metrics in one write of their rows (pipelines/sqlmetrics.py)."""
        from mlflow.entities import Metric, Param, RunTag

        points = [(k, float(v), t, s) for k, v, t, s in metrics]
        if points and self.sql is not None and insert_metrics(self.sql, run_id, points):
            points = []
        points = [Metric(k, v, t, s) for k, v, t, s in points]
        some = [Param(k, str(v)) for k, v in (params or {}).items()]
        labels = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        while points or some or labels:
            batch_params, batch_tags = some[:100], labels[:100]
            room = 1000 - len(batch_params) - len(batch_tags)
            self.client.log_batch(run_id, metrics=points[:room], params=batch_params, tags=batch_tags)
            points, some, labels = points[room:], some[100:], labels[100:]

    def end(self, run_id: str, status: str) -> None:
        """End a run; its system-metrics monitor, if any, logs its last sample first."""
        monitor = self.monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()
        self.client.set_terminated(run_id, status)

    def delete_tag(self, run_id: str, key: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not there
            self.client.delete_tag(run_id, key)

    def system_metrics(self, run_id: str, interval: float) -> None:
        """Sample the machine (CPU, memory, disk, network; GPU) for run `run_id` until it ends."""
        from pipelines.system_metrics import monitor

        self.monitors[run_id] = monitor(run_id, interval, self.uri, self.log_batch)

    # -- reads ---------------------------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run:
        return _run(self.client.get_run(run_id))

    def search_runs(self, experiment_ids: list[str], where: str, max_results: int) -> list[Run]:
        """Runs matching `where`, newest first."""
        found = self.client.search_runs(
            experiment_ids, filter_string=where, order_by=["start_time DESC"], max_results=max_results
        )
        return [_run(r) for r in found]

    def experiment_by_name(self, name: str) -> Experiment | None:
        found = self.client.get_experiment_by_name(name)
        return _experiment(found) if found is not None else None

    def experiment(self, experiment_id: str) -> Experiment:
        return _experiment(self.client.get_experiment(experiment_id))

    def create_experiment(self, name: str) -> str:
        return self.client.create_experiment(name)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def artifacts(self, run_id: str, path: str) -> list[str]:
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def download(self, run_id: str, path: str, folder: str) -> str:
        return self.client.download_artifacts(run_id, path, folder)

    # -- artifacts -----------------------------------------------------------------------------------------------
    def log_file(self, run_id: str, path: str, artifact_path: str | None = None, remove: bool = False) -> None:
        """Log a file; `remove`: it was written for this alone (by another process): delete its folder after."""
        try:
            self.client.log_artifact(run_id, path, artifact_path)
        finally:
            if remove:
                shutil.rmtree(Path(path).parent, ignore_errors=True)

    def log_folder(self, run_id: str, folder: str, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, folder, artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_inputs(self, run_id: str, inputs: list[dict]) -> None:
        """Datasets as inputs of a run; each dict: context, tags, name, source, digest, profile, kind (pandas or
        numpy), data and targets (for pandas the target column's name, in data): a sample of the rows, enough for
        the schema. The profile (rows, sizes) is the whole data's, measured by the caller."""
        import mlflow
        from mlflow.entities import DatasetInput, InputTag

        logged = []
        for part in inputs:
            make = mlflow.data.from_pandas if part["kind"] == "pandas" else mlflow.data.from_numpy
            ds = make(
                part["data"], source=part["source"], targets=part["targets"], name=part["name"], digest=part["digest"]
            )
            entity = ds._to_mlflow_entity()
            entity._profile = json.dumps(part["profile"])  # the whole data's, not the sample's
            tags = [InputTag("mlflow.data.context", part["context"])]
            tags += [InputTag(k, v) for k, v in part["tags"].items()]
            logged.append(DatasetInput(entity, tags))
        self.client.log_inputs(run_id, datasets=logged)

    def log_servable_model(self, run_id: str, model: dict, tag: bool = False, remove: str | None = None) -> str:
        """Log a pyfunc model (the keyword arguments of mlflow.pyfunc.log_model, with `example` and `outputs` for
        its signature) on run `run_id`, ended or not; returns its model URI. `tag`: also set it as the run's
        descent.model_uri. `remove`: a folder written for this alone (its files), deleted after."""
        import mlflow
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.uri)  # where Model.log writes: this store, whatever the process used before
        try:
            model = dict(model)
            model["signature"] = infer_signature(model.pop("example"), model.pop("outputs"))
            with _experiment_of(self.client, run_id):
                info = mlflow.models.Model.log(
                    artifact_path=None, flavor=mlflow.pyfunc, run_id=run_id, flavor_name="pyfunc.ModelFromCode", **model
                )
        finally:
            if remove:
                shutil.rmtree(remove, ignore_errors=True)
        if tag:
            self.log_batch(run_id, tags={"descent.model_uri": info.model_uri})
        return info.model_uri

    def settle(self) -> None:
        """Nothing: here every write is made when asked (the writer answers this once all earlier ones are made)."""

    def close(self) -> None:
        """End the monitors of runs still open (their runs are ended by whoever ends them)."""
        for monitor in self.monitors.values():
            monitor.finish()
        self.monitors.clear()


@contextlib.contextmanager
def _experiment_of(client: Any, run_id: str) -> Iterator[None]:
    """Model.log files its logged model under the active experiment (the Default one when none is active, where a
    team server may refuse it): make it the run's for the call."""
    from mlflow.tracking import fluent

    before = fluent._active_experiment_id
    fluent._active_experiment_id = client.get_run(run_id).info.experiment_id
    try:
        yield
    finally:
        fluent._active_experiment_id = before


@contextlib.contextmanager
def _given_id(client: Any, run_id: str | None) -> Iterator[None]:
    """While creating a run, let a local store's module draw `run_id` as its next uuid4."""
    if run_id is None:
        yield
        return
    store = client._tracking_client.store
    module = sys.modules[type(store).__module__]
    with _GIVING:
        real = module.uuid
        module.uuid = _Fixed(uuid.UUID(hex=run_id))
        try:
            yield
        finally:
            module.uuid = real


_GIVING = threading.Lock()


class _Fixed:
    """A stand-in for the uuid module that draws one fixed id."""

    def __init__(self, value: uuid.UUID) -> None:
        self.value = value

    def uuid4(self) -> uuid.UUID:
        return self.value

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


def _run(run: Any) -> Run:
    i, d = run.info, run.data
    info = RunInfo(
        i.run_id, i.experiment_id, i.run_name, i.status, i.start_time, i.end_time, i.artifact_uri, i.lifecycle_stage
    )
    return Run(info, RunData(dict(d.params), dict(d.metrics), dict(d.tags)))


def _experiment(e: Any) -> Experiment:
    return Experiment(e.experiment_id, e.name, e.lifecycle_stage, e.artifact_location)


@functools.cache
def direct(uri: str) -> Direct:
    """The store at `uri` in this process (one client per store)."""
    return Direct(uri)
