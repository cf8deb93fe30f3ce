"""Metric points into a SQL tracking store (sqlite, PostgreSQL, MySQL) as MLflow's own store writes them (its
`metrics` and `latest_metrics` rows), in one statement per table instead of one ORM object per point.

MLflow's `log_batch` builds and flushes an ORM object per point: most of what tracking costs a sweep's writer.
The rows, their validation, NaN and infinity handling and the latest value per key are MLflow's own (its models,
`_validate_metric`, `sanitize_metric_value`); a batch that repeats a point already stored is left to MLflow's
`log_batch`, which skips the repeats.
"""

from __future__ import annotations

from typing import Any

# A metric point: (key, value, timestamp in ms, step).
Point = tuple[str, float, int, int]


def sql_store(client: Any) -> Any | None:
    """The MLflow SQL store behind `client`, or None (a server, a file store): those take MLflow's `log_batch`."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_metrics(store: Any, run_id: str, points: list[Point]) -> bool:
    """Write `points` to run `run_id` in `store` (a SqlAlchemyStore); False, with nothing written, when one of them
    is already stored (the caller then uses MLflow's own `log_batch`). Raises MLflow's own error for a bad point or
    a deleted run."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.utils.validation import _validate_metric, _validate_run_id

    _validate_run_id(run_id)
    rows: dict[tuple, dict] = {}
    latest: dict[str, dict] = {}
    for i, (key, value, timestamp, step) in enumerate(points):
        _validate_metric(key, value, timestamp, step, path="" if len(points) == 1 else f"metrics[{i}]")
        is_nan, stored = store.sanitize_metric_value(value)
        row = {"run_uuid": run_id, "key": key, "value": stored, "timestamp": timestamp, "step": step}
        row["is_nan"] = is_nan
        rows.setdefault((key, timestamp, step, stored, is_nan), row)  # a point twice in one batch is one row
        if key not in latest or _newer(row, latest[key]):
            latest[key] = row
    if not rows:
        return True
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
            session.execute(sqlalchemy.insert(SqlMetric.__table__), list(rows.values()))
            keys = sorted(latest)  # locked in one order, as MLflow's own store does
            stored_latest: dict[str, Any] = {}
            for start in range(0, len(keys), 500):
                found = (
                    session.query(SqlLatestMetric)
                    .filter(SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key.in_(keys[start : start + 500]))
                    .order_by(SqlLatestMetric.key)
                    .with_for_update()
                    .all()
                )
                stored_latest.update({m.key: m for m in found})
            new = []
            for key in keys:
                row, old = latest[key], stored_latest.get(key)
                if old is None:
                    new.append(row)
                elif _newer(row, {k: getattr(old, k) for k in ORDER}):
                    for k in (*ORDER, "is_nan"):  # an UPDATE of the row, at the commit
                        setattr(old, k, row[k])
            if new:
                session.execute(sqlalchemy.insert(SqlLatestMetric.__table__), new)
    except MlflowException as exc:
        if isinstance(exc.__cause__, sqlalchemy.exc.IntegrityError):  # a point already stored: rolled back
            return False
        raise
    return True


ORDER = ("step", "timestamp", "value")  # MLflow's order of a key's values: the latest is the greatest


def _newer(a: dict, b: dict) -> bool:
    return tuple(a[k] for k in ORDER) > tuple(b[k] for k in ORDER)
