"""Arrays as the network reads them: float32 samples, labels as class indices; no scaling (the network's job)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.arrays import chunks
from components.errors import InputError
from components.preprocess import Preprocessor


@dataclass
class ArrayPreprocessor(Preprocessor):
    """A Preprocessor for samples of any shape: it checks their shape and makes them float32, nothing more.

    Scaling belongs to the network (a Rescaling or Normalization layer of the user's model). For
    descent's own dense network the training samples' per-feature mean and variance are kept, which
    build_model puts in a Normalization layer: the same standardisation tables get here.
    """

    sample_shape: tuple[int, ...] = ()
    feature_mean: np.ndarray | None = None
    feature_variance: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.sample_shape

    @property
    def input_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.feature_mean is None else (self.feature_mean, self.feature_variance)

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        if x.shape[1:] != self.sample_shape:
            raise InputError(
                f"input samples have shape {x.shape[1:]} but the network was trained on {self.sample_shape}: "
                f"send an array of shape (samples, {', '.join(map(str, self.sample_shape))})"
            )
        return x.astype("float32", copy=False)


def fit_array_preprocessor(
    features: np.ndarray, task: str, classes: list, target: pd.Series | None = None
) -> ArrayPreprocessor:
    """The training samples' shape and per-feature mean and variance, and a regression target's scale."""
    n = len(features)
    total = np.zeros(int(np.prod(features.shape[1:])))
    for _, chunk in chunks(features):
        total += chunk.reshape(len(chunk), -1).sum(axis=0, dtype="float64")
    mean = total / n
    squares = np.zeros_like(total)
    for _, chunk in chunks(features):
        squares += ((chunk.reshape(len(chunk), -1) - mean) ** 2).sum(axis=0)
    variance = squares / n
    variance[variance == 0] = 1.0  # a constant feature passes through centred, as StandardScaler does
    pre = ArrayPreprocessor(
        columns=None,
        feature_names=[],
        task=task,
        n_features=len(total),
        classes=list(classes),
        sample_shape=tuple(features.shape[1:]),
        feature_mean=mean.astype("float32"),
        feature_variance=variance.astype("float32"),
    )
    if task == "regression" and target is not None:
        values = target.to_numpy(dtype="float64")
        pre.target_mean, pre.target_scale = float(values.mean()), float(values.std()) or 1.0
    return pre
