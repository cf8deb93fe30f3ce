"""Promote a sweep's best model in the model registry, as `champion` or `challenger`, so that it can be redone.

A trigger may be killed at any point of a promotion and run again: the run's model version is registered once
(found again by its `descent.run_id` tag, written with the version itself), the decision is written on the version
before any alias moves, and the alias then follows the decision. Each step is done or not; none is done twice.
"""

from __future__ import annotations

from typing import Any

import mlflow

from pipelines import tracking
from pipelines.backend import tracking_uri

RUN, METRIC, DECISION = "descent.run_id", "descent.val_metric", "descent.decision"
CHAMPION_VALUE = "descent.champion_value"  # the champion's value when the decision was made


def promote(model_uri: str, run_id: str, name: str, value: float, higher: bool) -> dict[str, Any]:
    """Register run `run_id`'s model under `name` (once); alias it `champion` if it beats the champion it met."""
    c = tracking.client()
    version = _version_of(name, run_id)
    if version is None:
        mlflow.set_tracking_uri(tracking_uri())  # mlflow.register_model's store: descent's
        version = mlflow.register_model(model_uri, name, tags={RUN: run_id, METRIC: str(value)})
    tags = dict(version.tags)
    if DECISION not in tags:
        champion = _alias(name, "champion")
        old = champion.tags.get(METRIC) if champion is not None else None
        better = old is None or (value > float(old) if higher else value < float(old))
        tags[CHAMPION_VALUE] = str(old)
        tags[DECISION] = "champion" if better else "challenger"
        c.set_model_version_tag(name, version.version, CHAMPION_VALUE, tags[CHAMPION_VALUE])
        c.set_model_version_tag(name, version.version, DECISION, tags[DECISION])  # last: the decision is made
    c.set_registered_model_alias(name, tags[DECISION], version.version)
    old = None if tags[CHAMPION_VALUE] == "None" else float(tags[CHAMPION_VALUE])
    return {"alias": tags[DECISION], "version": version.version, "champion_value": old, "challenger_value": value}


def _version_of(name: str, run_id: str) -> Any:
    found = tracking.client().search_model_versions(f"name = '{name}' and tags.`{RUN}` = '{run_id}'")
    return found[0] if found else None


def _alias(name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException:  # no registered model, or no such alias yet
        return None
