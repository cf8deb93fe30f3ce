"""Load a data set (embedded scikit-learn sets or a user's CSV/Parquet file) with its task and digest."""

from __future__ import annotations

import csv
import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import InputError

EMBEDDED = ("digits", "iris", "wine", "breast_cancer", "diabetes")
FILE_FORMATS = (".csv", ".parquet", ".pq")
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

    @property
    def target_name(self) -> str:
        return str(self.target.name)


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content hash of a frame: same values and columns, same digest."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    h = hashlib.sha256(rows.tobytes())
    h.update("\x1f".join(map(str, frame.columns)).encode())
    return h.hexdigest()[:16]


def load_dataset(source: str, target: str | None = None, task: str = "auto") -> Dataset:
    """Load an embedded data set by name or a CSV/Parquet file with a named target column."""
    if source in EMBEDDED:
        frame, target = _load_embedded(source, target)
        name, origin = source, f"sklearn.datasets.load_{source}"
    else:
        frame = _read_file(source)
        name, origin = Path(source).stem, str(Path(source).resolve())
    frame.columns = [str(c) for c in frame.columns]
    if target is None:
        raise InputError(
            f"no target column given for {source}: set data.target (-P target=<column>); "
            f"columns are {', '.join(map(str, frame.columns))}"
        )
    _check_frame(frame, target, source)
    y = frame[target]
    features = frame.drop(columns=[target])
    resolved = detect_task(y) if task == "auto" else task
    if resolved not in TASKS:
        raise InputError(f"unknown task {task!r}: use auto, classification or regression")
    _check_target(y, resolved, target)
    return Dataset(features, y, resolved, name, origin, frame_digest(frame))


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


def _read_file(source: str) -> pd.DataFrame:
    path = Path(source)
    if not path.exists():
        raise InputError(
            f"data file not found: {source}: give an existing .csv/.parquet path "
            f"or an embedded data set ({', '.join(EMBEDDED)})"
        )
    if path.is_dir():
        raise InputError(f"data path is a directory, not a file: {source}: give a .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InputError(f"unsupported data format {suffix or '(none)'!r} for {source}: use .csv or .parquet")
    if suffix == ".csv" and path.stat().st_size:
        _check_header(path)
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else _read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"data file is empty: {source}: it needs a header row and data rows") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if suffix != ".csv":
            raise InputError(
                f"cannot read {source} as parquet: the file is corrupt or not Parquet: export it again"
            ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot read {source} as {suffix[1:]}: {reason}: check the file is a valid {suffix[1:]}"
        ) from None
    return frame


def _check_header(path: Path) -> None:
    # pandas renames a repeated CSV column to "name.1"; the header itself shows the repeat.
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError(f"duplicate column names in {path}: {', '.join(repeated)}: rename them")


def _check_frame(frame: pd.DataFrame, target: str, source: str) -> None:
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise InputError(f"duplicate column names in {source}: {', '.join(map(str, duplicated))}: rename them")
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(target, columns, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InputError(f"target column {target!r} not in {source}: {hint}columns are {', '.join(columns)}")
    if len(frame) == 0:
        raise InputError(f"no data rows in {source}: the file has a header but no rows")
    if frame.shape[1] < 2:
        raise InputError(f"no feature columns in {source}: it has only the target column {target!r}")
    features = frame.drop(columns=[target])
    if len(frame) > 1 and (features.nunique(dropna=False) <= 1).all():
        raise InputError(f"every feature column of {source} is constant: nothing to learn from; check the file")


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


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame, releasing Arrow's copy column by column: one copy of the data at the peak."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(self_destruct=True, split_blocks=True)
