import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from components.data import Dataset, load_dataset
from components.errors import InputError
from components.split import split_dataset


def _dataset(features: pd.DataFrame, target: list, task: str = "classification") -> Dataset:
    return Dataset(features, pd.Series(target, name="y"), task, "t", "test", "0")


def _rows(part) -> set:
    return set(map(tuple, part.features.assign(y=part.target).to_numpy().tolist()))


def test_digits_split_is_stratified_and_disjoint():
    split = split_dataset(load_dataset("digits"), 0.15, 0.15, seed=0)
    report = split.report
    assert report.rows_in_two_splits == 0
    assert sum(report.rows.values()) == report.rows_in - report.duplicates_dropped
    assert report.rows["test"] == round(report.rows_in * 0.15)
    assert report.max_share_deviation < 0.01
    assert set(report.class_shares) == {"all", "train", "validation", "test"}
    assert not (_rows(split.train) & _rows(split.test))


def test_duplicates_dropped_and_conflicts_reported():
    features = pd.DataFrame({"a": [1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10], "b": [0] * 12})
    target = [0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0]
    split = split_dataset(_dataset(features, target), 0.0, 0.25, seed=0)
    assert split.report.duplicates_dropped == 1
    assert split.report.conflicting_rows == 2
    assert sum(split.report.rows.values()) == 11


def test_a_feature_vector_in_two_splits_counts_whatever_its_labels():
    # 30 feature vectors, each twice with opposite labels, and 60 ordinary rows: the split spreads some pairs
    features = pd.DataFrame({"a": list(range(30)) * 2 + list(range(100, 160)), "b": [1.5] * 120})
    target = [0] * 30 + [1] * 30 + [0, 1] * 30
    split = split_dataset(_dataset(features, target), 0.2, 0.2, seed=0)
    parts = [set(map(tuple, p.features.to_numpy().tolist())) for p in split.parts().values()]
    in_two = (parts[0] & parts[1]) | (parts[0] & parts[2]) | (parts[1] & parts[2])
    assert split.report.conflicting_rows == 60  # kept apart: rows with equal features and different labels
    assert split.report.rows_in_two_splits == len(in_two) > 0
    assert not (_rows(split.train) & _rows(split.test))  # no (features, label) row is in two splits


def test_missing_targets_are_dropped_and_counted():
    features = pd.DataFrame({"a": range(12)})
    target = [0, 1] * 5 + [None, None]
    split = split_dataset(_dataset(features, target), 0.0, 0.2, seed=0)
    assert split.report.missing_target_dropped == 2


def test_same_seed_same_split_other_seed_other_split():
    ds = load_dataset("iris")
    a, b, c = (split_dataset(ds, 0.2, 0.2, s) for s in (3, 3, 4))
    assert a.train.features.equals(b.train.features)
    assert not a.train.features.equals(c.train.features)


def test_regression_split_spans_the_target_range():
    split = split_dataset(load_dataset("diabetes"), 0.15, 0.15, seed=0)
    full = load_dataset("diabetes").target
    assert split.test.target.min() < full.quantile(0.1)
    assert split.test.target.max() > full.quantile(0.9)
    assert split.report.class_shares == {}


@pytest.mark.parametrize(
    ("validation", "test", "message"),
    [
        (0.5, 0.5, "leaves no training rows: make their sum less than 1"),
        (-0.1, 0.2, "split.validation must be in [0, 1)"),
        (0.2, 1.0, "split.test must be in [0, 1)"),
    ],
)
def test_bad_fractions(validation, test, message):
    with pytest.raises(InputError) as err:
        split_dataset(load_dataset("iris"), validation, test, seed=0)
    assert message in str(err.value)


def test_class_too_small_to_stratify():
    features = pd.DataFrame({"a": range(21)})
    with pytest.raises(InputError, match=r"class '2' has 1 row\(s\), too few to appear in train, validation, test"):
        split_dataset(_dataset(features, [0, 1] * 10 + [2]), 0.2, 0.2, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(3, 40), min_size=2, max_size=3),
    values=st.lists(st.integers(0, 5), min_size=120, max_size=120),
    seed=st.integers(0, 1000),
    test=st.sampled_from([0.1, 0.2, 0.3]),
)
def test_split_invariants(sizes, values, seed, test):
    """No row in two splits (features in two only with conflicting labels); class shares within one row of exact;
    dedup is idempotent."""
    labels = [label for label, size in enumerate(sizes) for _ in range(size)]
    n = len(labels)
    features = pd.DataFrame({"a": values[:n], "b": np.arange(n) % 7})
    ds = _dataset(features, labels)
    try:
        split = split_dataset(ds, 0.0, test, seed)
    except InputError:
        assume(False)  # too few rows left for a class or the test split: refused with a message, not split badly
    shared = {tuple(r) for r in split.train.features.to_numpy().tolist()}
    shared &= {tuple(r) for r in split.test.features.to_numpy().tolist()}
    assert split.report.rows_in_two_splits == len(shared)
    assert split.report.conflicting_rows or not shared
    assert not (_rows(split.train) & _rows(split.test))
    kept = pd.concat([split.train.target, split.test.target])
    for label, total in kept.value_counts().items():
        in_test = int((split.test.target == label).sum())
        assert abs(in_test - total * len(split.test) / len(kept)) <= 1
    again = _dataset(pd.concat([split.train.features, split.test.features]), kept.tolist())
    assert split_dataset(again, 0.0, test, seed).report.duplicates_dropped == 0
