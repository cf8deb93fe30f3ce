"""Preprocessing fitted on the training rows only: impute, scale numbers, one-hot categories, encode labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from components.errors import InputError


@dataclass
class Preprocessor:
    """Turns raw feature rows into the float32 matrix the network reads, and labels into class indices."""

    columns: ColumnTransformer
    feature_names: list[str]
    task: str
    n_features: int
    classes: list = field(default_factory=list)
    imputed: dict[str, int] = field(default_factory=dict)
    # Regression targets are standardised for training (an unscaled target such as a price makes
    # plain SGD diverge); predictions and reported metrics are back in the target's own units.
    target_mean: float = 0.0
    target_scale: float = 1.0

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample the network reads (build_model's first argument)."""
        return (self.n_features,)

    @property
    def input_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-feature mean and variance for descent's own network to standardise with; None: transform does."""
        return None

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """The float32 matrix the network reads, made TRANSFORM_ROWS rows at a time (scikit-learn's steps copy
        their input several times over, in float64: on a large table that is a chunk's worth, not the table's),
        into memory TensorFlow can share (components.train.as_tensor)."""
        missing = [c for c in self.feature_names if c not in features.columns]
        if missing:
            raise InputError(f"input rows lack feature column(s) {', '.join(missing)}: send every training column")
        out = aligned_empty((len(features), self.n_features))
        for start in range(0, len(features), TRANSFORM_ROWS):
            rows = features.iloc[start : start + TRANSFORM_ROWS][self.feature_names]
            out[start : start + len(rows)] = self.columns.transform(rows)
        return out

    def encode_target(self, y: pd.Series) -> np.ndarray:
        if self.task == "regression":
            return ((y.to_numpy(dtype="float64") - self.target_mean) / self.target_scale).astype("float32")
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[v] for v in y], dtype="int32")

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs to predictions in the user's terms: class labels or target values."""
        if self.task == "regression":
            return outputs.reshape(-1) * self.target_scale + self.target_mean
        return np.asarray(self.classes, dtype=object)[outputs.argmax(axis=1)]

    def in_target_units(self, metrics: dict[str, float]) -> dict[str, float]:
        """Keras metrics of a standardised regression target back in the target's units (MSE, MAE)."""
        if self.task != "regression":
            return dict(metrics)
        factor = {"loss": self.target_scale**2, "loss_noise": self.target_scale**2, "mae": self.target_scale}
        return {k: v * factor.get(k.removeprefix("val_").removeprefix("test_"), 1.0) for k, v in metrics.items()}


def fit_preprocessor(
    features: pd.DataFrame,
    task: str,
    classes: list,
    target: pd.Series | None = None,
    fit_rows: int | None = None,
    seed: int = 0,
) -> Preprocessor:
    """Fit imputation, scaling and one-hot encoding (and a regression target's scale) on training rows.

    On more than `fit_rows` rows, the medians, means and standard deviations are estimated on `fit_rows` of them
    drawn at random with `seed` (from 100,000 rows they are as good as from all of them, and scikit-learn would
    copy all of them several times in float64); text categories are still those of every row.
    """
    numeric = [c for c in features.columns if _is_numeric(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    for c in numeric:
        if np.isinf(features[c].to_numpy(dtype="float64")).any():
            raise InputError(f"feature column {c!r} holds infinite values: replace them or drop the column")
    sampled = fit_rows is not None and len(features) > fit_rows
    rows = features.sample(n=fit_rows, random_state=seed) if sampled else features
    steps = []
    if numeric:
        steps.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    if categorical:
        known = [sorted(features[c].dropna().unique().tolist()) for c in categorical] if sampled else "auto"
        onehot = OneHotEncoder(categories=known, handle_unknown="ignore", sparse_output=False)
        steps.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), onehot), categorical))
    columns = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
    columns.fit(rows)
    imputed = {str(c): int(n) for c in features.columns if (n := features[c].isna().sum())}
    width = columns.transform(features.head(1)).shape[1]
    pre = Preprocessor(columns, list(features.columns), task, int(width), list(classes), imputed)
    if task == "regression" and target is not None:
        values = target.to_numpy(dtype="float64")
        pre.target_mean, pre.target_scale = float(values.mean()), float(values.std()) or 1.0
    return pre


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data starts on a 64-byte boundary (what TensorFlow's kernels expect of
    memory they share, components.train.as_tensor)."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(np.float32).reshape(shape)


ALIGNMENT = 64
TRANSFORM_ROWS = 65536


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
