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
        missing = [c for c in self.feature_names if c not in features.columns]
        if missing:
            raise InputError(f"input rows lack feature column(s) {', '.join(missing)}: send every training column")
        return np.asarray(self.columns.transform(features[self.feature_names]), dtype="float32")

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


def fit_preprocessor(features: pd.DataFrame, task: str, classes: list, target: pd.Series | None = None) -> Preprocessor:
    """Fit imputation, scaling and one-hot encoding (and a regression target's scale) on training rows."""
    numeric = [c for c in features.columns if _is_numeric(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    for c in numeric:
        values = features[c].to_numpy(dtype="float64")
        if np.isinf(values).any():
            raise InputError(f"feature column {c!r} holds infinite values: replace them or drop the column")
    steps = []
    if numeric:
        steps.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    if categorical:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        steps.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), onehot), categorical))
    columns = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
    columns.fit(features)
    imputed = {str(c): int(n) for c, n in features.isna().sum().items() if n}
    width = columns.transform(features.head(1)).shape[1]
    pre = Preprocessor(columns, list(features.columns), task, int(width), list(classes), imputed)
    if task == "regression" and target is not None:
        values = target.to_numpy(dtype="float64")
        pre.target_mean, pre.target_scale = float(values.mean()), float(values.std()) or 1.0
    return pre


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
