"""Shuffle, deduplicate and split a data set representatively, with a report that proves it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components.data import Dataset, frame_digest
from components.errors import InputError

SPLITS = ("train", "validation", "test")
# Regression targets are stratified on this many quantile bins so each split spans the range.
REGRESSION_BINS = 10


@dataclass(frozen=True)
class Part:
    """The rows of one split."""

    features: pd.DataFrame
    target: pd.Series

    def __len__(self) -> int:
        return len(self.target)

    def digest(self) -> str:
        """A short content hash of the rows (features and target): same rows, same digest."""
        return frame_digest(self.features, self.target)  # the target beside the rows: no copy of a large table


@dataclass(frozen=True)
class SplitReport:
    """What the split did and the evidence that it is representative and leak-free."""

    rows_in: int
    missing_target_dropped: int
    duplicates_dropped: int
    conflicting_rows: int  # rows whose features equal another row's, with a different label
    rows: dict[str, int]
    class_shares: dict[str, dict[str, float]]
    max_share_deviation: float
    rows_in_two_splits: int  # feature vectors found in more than one split, whatever their labels
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """Train, validation and test rows of one data set, and the report of how they were made."""

    train: Part
    validation: Part
    test: Part
    task: str
    classes: list
    report: SplitReport

    def parts(self) -> dict[str, Part]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def split_dataset(ds: Dataset, validation: float, test: float, seed: int) -> Split:
    """Shuffle with `seed`, drop exact duplicates, then split stratified by class (or target range).

    The rows are chosen by position and copied once, into the three parts: a table of a million rows is
    not copied whole to be shuffled, filtered and split in turn.
    """
    _check_fractions(validation, test)
    target = ds.target.to_numpy()
    rows_in = len(target)
    labelled = np.flatnonzero(pd.notna(target))
    # The shuffle DataFrame.sample(frac=1, random_state=seed) makes of the labelled rows, as positions.
    rows = labelled[pd.Series(np.arange(len(labelled))).sample(frac=1.0, random_state=seed).to_numpy()]
    features = pd.util.hash_pandas_object(ds.features, index=False).to_numpy()  # one hash per row
    labels = pd.util.hash_pandas_object(pd.Series(target), index=False).to_numpy()
    keep = ~pd.DataFrame({"features": features[rows], "label": labels[rows]}).duplicated().to_numpy()
    duplicates, rows = int((~keep).sum()), rows[keep]
    y = pd.Series(target[rows])
    # Equal features with different labels: kept (both are data), reported, and counted as a leak if split apart.
    features = pd.Series(features[rows])
    conflicting = int(features.duplicated(keep=False).sum())

    strata = _strata(y, ds.task)
    n = len(rows)
    n_test, n_val = round(n * test), round(n * validation)
    if n - n_test - n_val < 1:
        raise InputError(
            f"split leaves no training rows ({n} rows, validation {validation}, test {test}): "
            "lower split.validation or split.test"
        )
    _check_strata(strata, n_val, n_test, n)
    idx = np.arange(n)
    rest, test_idx = _cut(idx, n_test, strata, seed)
    train_idx, val_idx = _cut(rest, n_val, strata[rest] if strata is not None else None, seed)
    index = {"train": train_idx, "validation": val_idx, "test": test_idx}

    parts = {k: _part(ds.features, rows[v], y.iloc[v], ds.target_name) for k, v in index.items()}
    classes = sorted(y.unique().tolist()) if ds.task == "classification" else []
    shares, deviation = _class_shares(y, index, ds.task)
    seen = [set(features.iloc[v]) for v in index.values()]
    overlap = len((seen[0] & seen[1]) | (seen[0] & seen[2]) | (seen[1] & seen[2]))  # feature vectors, any label
    report = SplitReport(
        rows_in=rows_in,
        missing_target_dropped=rows_in - len(labelled),
        duplicates_dropped=duplicates,
        conflicting_rows=conflicting,
        rows={k: len(v) for k, v in index.items()},
        class_shares=shares,
        max_share_deviation=deviation,
        rows_in_two_splits=overlap,
        seed=seed,
    )
    return Split(parts["train"], parts["validation"], parts["test"], ds.task, classes, report)


def _check_fractions(validation: float, test: float) -> None:
    for name, value in (("validation", validation), ("test", test)):
        if not 0 <= value < 1:
            raise InputError(f"split.{name} must be in [0, 1), got {value}: use a fraction such as 0.15")
    if validation + test >= 1:
        raise InputError(
            f"split.validation + split.test = {validation + test:g} leaves no training rows: make their sum less than 1"
        )


def _strata(y: pd.Series, task: str) -> np.ndarray | None:
    if task == "classification":
        return y.astype(str).to_numpy()
    bins = min(REGRESSION_BINS, max(1, len(y) // 10))
    if bins < 2:
        return None
    return pd.qcut(y.rank(method="first"), bins, labels=False).to_numpy()


def _check_strata(strata: np.ndarray | None, n_val: int, n_test: int, n: int) -> None:
    if strata is None:
        return
    counts = pd.Series(strata).value_counts()
    cuts = sum(1 for k in (n_val, n_test) if k > 0)
    if cuts and counts.min() < cuts + 1:
        rare = sorted(counts[counts < cuts + 1].index.tolist(), key=str)
        which = f"class {rare[0]!r} has" if len(rare) == 1 else f"classes {', '.join(map(repr, rare[:5]))} have"
        raise InputError(
            f"{which} {counts.min()} row(s), too few to appear in "
            f"train{', validation' if n_val else ''}{', test' if n_test else ''}: "
            "add rows of that class or drop it from the data"
        )
    for name, k in (("validation", n_val), ("test", n_test)):
        if 0 < k < len(counts):
            raise InputError(
                f"the {name} split would hold {k} rows for {len(counts)} classes: raise split.{name} or use more data"
            )


def _cut(idx: np.ndarray, size: int, strata: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if size == 0:
        return idx, idx[:0]
    rest, held = train_test_split(idx, test_size=size, stratify=strata, random_state=seed)
    return np.sort(rest), np.sort(held)


def _part(features: pd.DataFrame, rows: np.ndarray, target: pd.Series, target_name: str) -> Part:
    return Part(features.iloc[rows].reset_index(drop=True), target.rename(target_name).reset_index(drop=True))


def _class_shares(y: pd.Series, index: dict[str, np.ndarray], task: str) -> tuple[dict, float]:
    if task != "classification":
        return {}, 0.0
    overall = y.astype(str).value_counts(normalize=True)
    shares = {"all": overall.round(4).to_dict()}
    deviation = 0.0
    for name, idx in index.items():
        if len(idx) == 0:
            continue
        part = y.iloc[idx].astype(str).value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        shares[name] = part.round(4).to_dict()
        deviation = max(deviation, float((part - overall).abs().max()))
    return shares, round(deviation, 4)
