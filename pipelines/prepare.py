"""The data half of every entry point: load, split, fit the preprocessor, make the arrays."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from components.data import Dataset, frame_digest, load_dataset
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

    @cached_property
    def split_digest(self) -> str:
        """A digest of the training rows (features and target): computed once, shared by every variant."""
        train = self.split.train
        return frame_digest(train.features.assign(__target__=train.target.to_numpy()))


def prepare(cfg: Config) -> Prepared:
    """Load, split and preprocess (fitted on the training rows only)."""
    d = cfg.data
    ds = load_dataset(d.source, d.target, d.task, encoding=d.encoding, separator=d.separator)
    split = split_dataset(ds, cfg.split.validation, cfg.split.test, cfg.split.seed)
    pre = fit_preprocessor(split.train.features, split.task, split.classes, split.train.target)
    arrays = Arrays(
        pre.transform(split.train.features),
        pre.encode_target(split.train.target),
        pre.transform(split.validation.features),
        pre.encode_target(split.validation.target),
    )
    return Prepared(ds, split, pre, arrays)
