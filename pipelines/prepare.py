"""The data half of every entry point: load, split, fit the preprocessor, make the arrays (tables, arrays, images)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from components.array_preprocess import fit_array_preprocessor
from components.array_split import split_arrays
from components.arrays import ArrayDataset, is_array_source, load_arrays
from components.data import Dataset, load_dataset
from components.files import release_unused
from components.preprocess import Preprocessor, fit_preprocessor
from components.split import Split, split_dataset
from components.train import Arrays
from pipelines.config import Config

EXAMPLE_ROWS = 50  # training rows (or samples) the servable model's signature is inferred from
# Computed once from the samples, before for_workers drops them (cached_property keeps them in __dict__).
_COMPUTED = ("split_digest", "sample", "baseline", "example")


@dataclass(frozen=True)
class Prepared:
    """Everything a variant trains on; made once and shared by every variant of a study."""

    dataset: Dataset | ArrayDataset
    split: Split
    preprocessor: Preprocessor
    arrays: Arrays
    seed: int = 0  # split.seed: draws the fixed training sample
    probe_rows: int = 4096

    @cached_property
    def split_digest(self) -> str:
        """A digest of the training rows (features and target): computed once, shared by every variant."""
        return self.split.train.digest()

    @cached_property
    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed sample of training rows (measure.probe_rows, drawn with split.seed), the same for every variant.

        The gradient probe, the training-loss checks and the final training score are measured on it.
        """
        x, y = self.arrays.x_train, self.arrays.y_train
        rows = np.sort(np.random.default_rng(self.seed).permutation(len(y))[: self.probe_rows])
        if len(rows) == len(y):  # every row: the arrays themselves, not a second copy of them
            return x, y
        return x[rows], y[rows]

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

    @cached_property
    def example(self) -> pd.DataFrame | np.ndarray:
        """Raw training rows (or samples, as stored) that the servable model's input signature is inferred from."""
        rows = self.split.train.features
        if isinstance(rows, np.ndarray):  # samples: a tensor signature of their shape and dtype
            return np.array(rows[:EXAMPLE_ROWS])
        # Rows with missing values go into the signature sample so served rows may have them too.
        gaps = rows[rows.isna().any(axis=1)]
        return pd.concat([rows.head(EXAMPLE_ROWS), gaps.head(EXAMPLE_ROWS)]).reset_index(drop=True)

    def for_workers(self) -> Prepared:
        """This data as the processes that train variants need it, to send them (worker processes, Ray tasks).

        The data set's own samples and the training and validation rows as loaded are left out: variants
        train on `arrays` (which holds those rows as the network reads them) and are scored on the test rows.
        """
        computed = {key: getattr(self, key) for key in _COMPUTED}
        split = self.split
        lean = replace(
            self,
            dataset=_emptied(self.dataset, ("features", "target", "hashes")),
            split=replace(
                split, train=_emptied(split.train, ("features",)), validation=_emptied(split.validation, ("features",))
            ),
        )
        lean.__dict__.update(computed)
        return lean


def prepare(cfg: Config) -> Prepared:
    """Load, split and preprocess (fitted on the training rows only) a table, or arrays (a .npz, images)."""
    d, s = cfg.data, cfg.split
    if is_array_source(d.source):
        ds = load_arrays(d.source, d.target, d.task, d.image_size, d.color_mode)
        split = split_arrays(ds, s.validation, s.test, s.seed)
        pre = fit_array_preprocessor(split.train.features, split.task, split.classes, split.train.target)
    else:
        ds = load_dataset(d.source, d.target, d.task, encoding=d.encoding, separator=d.separator)
        split = split_dataset(ds, s.validation, s.test, s.seed)
        # The split holds the rows now; the loaded table (its name, source and digest stay) would be a second copy.
        ds = replace(ds, features=ds.features.iloc[:0].copy(), target=ds.target.iloc[:0].copy())  # no views of it
        release_unused()
        train = split.train
        pre = fit_preprocessor(train.features, split.task, split.classes, train.target, s.preprocess_rows, s.seed)
    arrays = Arrays(
        pre.transform(split.train.features),
        pre.encode_target(split.train.target),
        pre.transform(split.validation.features),
        pre.encode_target(split.validation.target),
    )
    return Prepared(ds, split, pre, arrays, s.seed, cfg.measure.probe_rows)


def _emptied(data: Any, names: tuple[str, ...]) -> Any:
    """`data` (a data set, a split's part) with no rows in its fields `names`: the same columns or sample shape."""
    return replace(data, **{name: _no_rows(getattr(data, name)) for name in names if hasattr(data, name)})


def _no_rows(values: np.ndarray | pd.DataFrame | pd.Series) -> np.ndarray | pd.DataFrame | pd.Series:
    return np.array(values[:0]) if isinstance(values, np.ndarray) else values.iloc[:0]
