"""Split array data with the tables' own split (shuffle, deduplicate, stratify, report) run on the sample hashes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from components.arrays import ArrayDataset, take
from components.data import Dataset
from components.errors import InputError
from components.split import Split, split_dataset


@dataclass(frozen=True, eq=False)
class ArrayPart:
    """The samples of one split: a Part whose features are an array of samples."""

    features: np.ndarray
    target: pd.Series
    hashes: np.ndarray  # the samples' feature hashes (ArrayDataset.hashes)

    def __len__(self) -> int:
        return len(self.target)

    def digest(self) -> str:
        """A short content hash of the samples and their labels: same samples, same digest."""
        h = hashlib.sha256(self.hashes.tobytes())
        h.update(pd.util.hash_pandas_object(self.target, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]


def split_arrays(ds: ArrayDataset, validation: float, test: float, seed: int) -> Split:
    """The split of split_dataset, made on a table of one column (each sample's hash) beside the labels.

    So duplicates (same bytes, same label) are dropped and counted, samples with equal bytes and other
    labels are reported, classes are stratified and the report has the tables' shape, by the same code.
    `rows_in_two_splits` is then counted on the samples' features alone, whatever their labels.
    """
    _check_class_sizes(ds, validation, test)
    keys = Dataset(pd.DataFrame({"sample": ds.hashes}), ds.target, ds.task, ds.name, ds.source, ds.digest)
    split = split_dataset(keys, validation, test, seed)
    # Back from (hash, label) to a sample of the data: duplicates are equal, so the first one serves.
    lookup = pd.MultiIndex.from_arrays([ds.hashes, ds.target.to_numpy()])
    first = ~lookup.duplicated()
    positions, lookup = np.flatnonzero(first), lookup[first]
    parts = {}
    for name, part in split.parts().items():
        found = lookup.get_indexer(pd.MultiIndex.from_arrays([part.features["sample"], part.target.to_numpy()]))
        rows = np.sort(positions[found])  # file order: a memory map is read front to back
        target = ds.target.iloc[rows].reset_index(drop=True)
        parts[name] = ArrayPart(take(ds.features, rows), target, ds.hashes[rows])
    seen = [set(p.hashes.tolist()) for p in parts.values()]
    overlap = len(seen[0] & seen[1]) + len(seen[0] & seen[2]) + len(seen[1] & seen[2])
    report = replace(split.report, rows_in_two_splits=overlap)
    return Split(parts["train"], parts["validation"], parts["test"], split.task, split.classes, report)


def _check_class_sizes(ds: ArrayDataset, validation: float, test: float) -> None:
    """A class too small for every split, said in samples (split_dataset says it in rows)."""
    if ds.task != "classification":
        return
    samples = pd.DataFrame({"sample": ds.hashes, "label": ds.target}).dropna().drop_duplicates()
    n = len(samples)
    cuts = [name for name, share in (("validation", validation), ("test", test)) if round(n * share) > 0]
    counts = samples["label"].value_counts()
    rare = counts[counts < len(cuts) + 1]
    if cuts and len(rare):
        label = sorted(rare.index.tolist(), key=str)[0]
        raise InputError(
            f"class {label!r} has {counts[label]} sample(s), too few to appear in {', '.join(['train', *cuts])}: "
            "add samples of that class (for an image folder, images to its folder) or drop the class"
        )
