"""Load a data set (embedded scikit-learn sets or a user's table file) with its task, digest and how it was read."""

from __future__ import annotations

import difflib
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import InputError, InputWarning
from components.files import SEPARATORS, read_table, table_name

EMBEDDED = ("digits", "iris", "wine", "breast_cancer", "diabetes")
TASKS = ("classification", "regression")
# An integer target with at most this many distinct values is read as class labels.
MAX_INTEGER_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    """Feature rows, their target and what is known about them."""

    features: pd.DataFrame
    target: pd.Series
    task: str
    name: str
    source: str
    digest: str
    reading: dict[str, str] = field(default_factory=dict)  # how a file was read: format, encoding, separator, ...

    @property
    def target_name(self) -> str:
        return str(self.target.name)


def frame_digest(frame: pd.DataFrame, target: pd.Series | None = None) -> str:
    """A short content hash of a frame (and a `target` beside its rows): same values and columns, same digest."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    h = hashlib.sha256(rows.tobytes())
    h.update("\x1f".join(map(str, frame.columns)).encode())
    if target is not None:  # as good as a column of the frame, without copying the frame to add one
        h.update(pd.util.hash_pandas_object(target, index=False).to_numpy().tobytes())
        h.update(f"\x1e{target.name}".encode())
    return h.hexdigest()[:16]


def load_dataset(
    source: str,
    target: str | None = None,
    task: str = "auto",
    encoding: str | None = None,
    separator: str | None = None,
) -> Dataset:
    """Load an embedded data set by name, or a table file (see components.files) with a named target column.

    `encoding` and `separator` (a character, or comma, semicolon, tab, pipe) replace what is detected.
    """
    reading: dict[str, str] = {}
    if source in EMBEDDED:
        frame, target = _load_embedded(source, target)
        name, origin = source, f"sklearn.datasets.load_{source}"
    else:
        path = _existing(source)
        frame, reading = read_table(path, encoding, separator)
        name, origin = table_name(path), str(path.resolve())
    frame.columns = [str(c) for c in frame.columns]
    if target is None:
        raise InputError(
            f"no target column given for {source}: set data.target (-P target=<column>); "
            f"columns are {', '.join(map(str, frame.columns))}"
        )
    _check_frame(frame, target, source, reading.get("separator"))
    digest = frame_digest(frame)
    y = frame.pop(target)  # the rest are the features: no copy of a large table
    features = frame
    resolved = detect_task(y) if task == "auto" else task
    if resolved not in TASKS:
        raise InputError(f"unknown task {task!r}: use auto, classification or regression")
    _check_target(y, resolved, target)
    for column in [c for c in features.columns if features[c].isna().all()]:
        warnings.warn(
            f"feature column {column!r} of {source} is entirely missing: it is left out; fill it or drop it",
            InputWarning,
            stacklevel=2,
        )
    return Dataset(features, y, resolved, name, origin, digest, reading)


def detect_task(y: pd.Series) -> str:
    """Classification for text, booleans and few integer values; regression otherwise."""
    values = y.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    integral = np.all(np.mod(values.to_numpy(dtype=float), 1) == 0)
    if integral and values.nunique() <= MAX_INTEGER_CLASSES:
        return "classification"
    return "regression"


def _load_embedded(name: str, target: str | None) -> tuple[pd.DataFrame, str]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    default_target = str(bunch.target.name)
    if target is not None and target != default_target:
        raise InputError(
            f"embedded data set {name} has target {default_target!r}, not {target!r}: "
            "leave data.target empty for embedded data"
        )
    return frame, default_target


def _existing(source: str) -> Path:
    path = Path(source)
    if not path.exists():
        raise InputError(
            f"data file not found: {source}: give an existing .csv/.parquet path "
            f"or an embedded data set ({', '.join(EMBEDDED)})"
        )
    return path


def _check_frame(frame: pd.DataFrame, target: str, source: str, separator: str | None = None) -> None:
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise InputError(f"duplicate column names in {source}: {', '.join(map(str, duplicated))}: rename them")
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(target, columns, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        split = _separator_in_names(columns, target)
        if split and separator:
            raise InputError(
                f"target column {target!r} not in {source}: its header was split at the {separator}, but its names "
                f"are separated by {split}s ({', '.join(columns)}): set data.separator={split}"
            )
        raise InputError(f"target column {target!r} not in {source}: {hint}columns are {', '.join(columns)}")
    if len(frame) == 0:
        raise InputError(f"no data rows in {source}: the file has a header but no rows")
    if frame.shape[1] < 2:
        raise InputError(f"no feature columns in {source}: it has only the target column {target!r}")
    constant = (frame[c].nunique(dropna=False) <= 1 for c in frame.columns if c != target)  # stops at the first not
    if len(frame) > 1 and all(constant):
        raise InputError(f"every feature column of {source} is constant: nothing to learn from; check the file")


def _separator_in_names(columns: list[str], target: str) -> str | None:
    """The separator that joins the target's name to others in one column name: the file's real separator."""
    for name, char in SEPARATORS.items():
        if any(target in column.split(char) for column in columns if char in column):
            return name
    return None


def _check_target(y: pd.Series, task: str, name: str) -> None:
    if y.isna().all():
        raise InputError(f"target column {name!r} is entirely missing: choose a column with values")
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise InputError(
            f"target column {name!r} holds text but the task is regression: "
            "set data.task=classification or choose a numeric target"
        )
    if task == "classification" and y.nunique() < 2:
        only = y.dropna().iloc[0]
        raise InputError(
            f"target column {name!r} has a single class ({getattr(only, 'item', lambda: only)()!r}): "
            "classification needs at least two classes"
        )
