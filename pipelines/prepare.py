"""The data half of every entry point: load, split, fit the preprocessor, make the arrays."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from components.data import Dataset, frame_digest, load_dataset
from components.files import release_unused
from components.preprocess import Preprocessor, fit_preprocessor
from components.split import Split, split_dataset
from components.train import Arrays
from pipelines.config import Config


@dataclass(frozen=True)
class Prepared:
    """Everything a variant trains on; made once and shared by every variant of a study."""

    dataset: Dataset
    split: Split
    preprocessor: Preprocessor
    arrays: Arrays
    seed: int = 0  # split.seed: draws the fixed training sample
    probe_rows: int = 4096

    @cached_property
    def split_digest(self) -> str:
        """A digest of the training rows (features and target): computed once, shared by every variant."""
        train = self.split.train
        return frame_digest(train.features, train.target)

    @cached_property
    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed sample of training rows (measure.probe_rows, drawn with split.seed), the same for every variant.

        The gradient probe, the training-loss checks and the final training score are measured on it.
        """
        rows = np.random.default_rng(self.seed).permutation(len(self.arrays.y_train))[: self.probe_rows]
        return self.arrays.x_train[np.sort(rows)], self.arrays.y_train[np.sort(rows)]

    @cached_property
    def baseline(self) -> dict[str, float]:
        """What predicting without learning scores on the validation rows: the training rows' most common class
        (its share is chance accuracy), or their mean target (its mean squared error, in the target's units)."""
        train, val = self.split.train.target, self.split.validation.target
        if not len(val):
            return {}
        if self.split.task == "classification":
            return {"baseline_val_accuracy": float((val == train.mode().iloc[0]).mean())}
        return {"baseline_val_loss": float(((val.to_numpy(float) - train.to_numpy(float).mean()) ** 2).mean())}


def prepare(cfg: Config) -> Prepared:
    """Load, split and preprocess (fitted on the training rows only)."""
    d = cfg.data
    ds = load_dataset(d.source, d.target, d.task, encoding=d.encoding, separator=d.separator)
    split = split_dataset(ds, cfg.split.validation, cfg.split.test, cfg.split.seed)
    # The split holds the rows now; the loaded table (its name, source and digest stay) would be a second copy.
    ds = replace(ds, features=ds.features.iloc[:0].copy(), target=ds.target.iloc[:0].copy())  # no views of it
    release_unused()
    train = split.train
    fit_rows, seed = cfg.split.preprocess_rows, cfg.split.seed
    pre = fit_preprocessor(train.features, split.task, split.classes, train.target, fit_rows, seed)
    arrays = Arrays(
        pre.transform(split.train.features),
        pre.encode_target(split.train.target),
        pre.transform(split.validation.features),
        pre.encode_target(split.validation.target),
    )
    return Prepared(ds, split, pre, arrays, cfg.split.seed, cfg.measure.probe_rows)
