"""The learning-rate trials of one variant as MLflow runs nested under the variant's run (several open at once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from components.train import FitResult
from pipelines import cli, tracking

# What a trial copies from its variant's run, so it can be found and read on its own.
SHARED_TAGS = ("descent.data_digest", "descent.split_digest", "descent.config_digest", "descent.code_version")
SHARED_TAGS += ("descent.sweep_id", "descent.variant")
SHARED_PARAMS = ("optimizer", "batch_size", "regime", "seed", "epochs", "updates_per_epoch")


class Trials:
    """Trial runs of variant run `run_id` (named `name`), through the store: successive halving keeps several
    trials open at once."""

    def __init__(
        self, run_id: str, name: str, units: Callable[[dict], dict] = dict, resume_from: str | None = None
    ) -> None:
        self.store = tracking.store()
        self.resume_from, self.found = resume_from, {}  # found: learning rate -> reusable trial run id
        parent = self.store.get_run(run_id)
        self.parent, self.name, self.units = run_id, name, units
        self.experiment = parent.info.experiment_id
        self.tags = {k: v for k, v in parent.data.tags.items() if k in SHARED_TAGS}
        self.params = {k: v for k, v in parent.data.params.items() if k in SHARED_PARAMS}
        self.open_runs: dict[float, str] = {}

    def earlier(self) -> dict[float, list[dict[str, float]] | None]:
        """Per-epoch metrics of the trials that an interrupted run of this variant finished and stopped early
        (None for one that diverged: it scores nothing at any epoch).

        Successive halving never trains a stopped trial on, and training is deterministic, so a resumed
        search takes their scores instead of training them again.
        """
        if self.resume_from is None:
            return {}
        found: dict[float, list[dict[str, float]] | None] = {}
        for run in tracking.find_runs([self.experiment], {"mlflow.parentRunId": self.resume_from}):
            tags = run.data.tags
            if run.info.status == "FINISHED" and tags.get("descent.stopped_early") == "true":
                lr = float(run.data.params["learning_rate"])
                self.found[lr] = run.info.run_id
                frame = tracking.metric_frame(run.info.run_id, ["val_loss", "val_accuracy", "val_mae"])
                found[lr] = None if tags.get("descent.diverged") == "true" else frame.to_dict("records")
        return found

    def adopt(self, learning_rate: float) -> None:
        """Move a reused trial of the interrupted run under this variant's run."""
        self.store.log_batch(self.found[learning_rate], tags={"mlflow.parentRunId": self.parent})

    def open(self, learning_rate: float) -> None:
        """Start the trial run `<variant>-lr<rate>` (what it records is written when it ends: three writes a trial)."""
        self.open_runs[learning_rate] = self._create(f"{self.name}-lr{learning_rate:g}")

    def close(self, learning_rate: float, run: FitResult, stopped_early: bool, chosen: bool) -> None:
        """End a trial FINISHED with its per-epoch metrics (step = epoch, as a variant's) and whether it diverged
        and successive halving stopped it early and chose it."""
        history = run.history
        run_id = self.open_runs.pop(learning_rate)
        now = int(time.time() * 1000)
        metrics = [
            (k, float(v), now, step)
            for step, record in enumerate(history, start=1)
            for k, v in self.units(record).items()
            if np.isfinite(v)
        ]
        params = {**self.params, "learning_rate": learning_rate}
        tags = {"descent.stopped_early": str(stopped_early).lower(), "descent.chosen": str(chosen).lower()}
        tags["descent.diverged"] = str(run.diverged).lower()  # a resumed search reuses it as scoring nothing
        self.store.log_batch(run_id, metrics, params, tags)
        self.store.end(run_id, "FINISHED")

    def range_test(self, rates: np.ndarray, losses: np.ndarray, chosen: float) -> None:
        """The range test as one trial run: loss and learning rate per update (step = update)."""
        run_id = self._create(f"{self.name}-range-test")
        now = int(time.time() * 1000)
        metrics = [("range_test/learning_rate", float(r), now, i) for i, r in enumerate(rates)]
        metrics += [("range_test/loss", float(v), now, i) for i, v in enumerate(losses) if np.isfinite(v)]
        params = {**self.params, "chosen_learning_rate": chosen}
        self.store.log_batch(run_id, metrics, params, {"descent.chosen": "true"})
        self.store.end(run_id, "FINISHED")

    def __enter__(self) -> Trials:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, *_: Any) -> None:
        # A search that stops on an error or a signal leaves no trial RUNNING.
        status = "KILLED" if kind is not None and issubclass(kind, KeyboardInterrupt) else "FAILED"
        with cli.signals_deferred():
            for run_id in self.open_runs.values():
                if error is not None:
                    self.store.log_batch(run_id, tags={"descent.error": f"{type(error).__name__}: {error}"[:5000]})
                self.store.end(run_id, status)
        self.open_runs.clear()

    def _create(self, run_name: str) -> str:
        tags = {**self.tags, "mlflow.parentRunId": self.parent, "descent.kind": "trial"}
        return self.store.create_run(self.experiment, run_name, tags, int(time.time() * 1000))
