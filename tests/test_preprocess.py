import numpy as np
import pandas as pd
import pytest

from components import preprocess
from components.data import load_dataset
from components.errors import InputError
from components.preprocess import fit_preprocessor
from components.split import split_dataset


def test_fitted_on_training_rows_only(csv_file):
    split = split_dataset(load_dataset(str(csv_file), "kind"), 0.2, 0.2, seed=0)
    pre = fit_preprocessor(split.train.features, split.task, split.classes)
    x_train = pre.transform(split.train.features)
    assert x_train.dtype == np.float32
    assert np.allclose(x_train[:, 0].mean(), 0, atol=1e-5)  # scaled with train statistics
    assert pre.n_features == x_train.shape[1] == 2 + 3  # two numbers, three colours one-hot
    assert not np.allclose(pre.transform(split.test.features)[:, 0].mean(), 0, atol=1e-5)


def test_missing_values_are_imputed_and_counted():
    features = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "c": ["x", None, "y", "x"]})
    pre = fit_preprocessor(features, "classification", ["p", "q"])
    assert pre.imputed == {"a": 1, "c": 1}
    assert not np.isnan(pre.transform(features)).any()


def test_labels_round_trip():
    pre = fit_preprocessor(pd.DataFrame({"a": [1.0, 2.0]}), "classification", ["cat", "dog"])
    codes = pre.encode_target(pd.Series(["dog", "cat"]))
    assert codes.tolist() == [1, 0]
    assert pre.decode(np.eye(2)[codes]).tolist() == ["dog", "cat"]


def test_unknown_category_at_serving_time_is_ignored():
    pre = fit_preprocessor(pd.DataFrame({"c": ["x", "y"]}), "classification", [0, 1])
    assert pre.transform(pd.DataFrame({"c": ["z"]})).tolist() == [[0.0, 0.0]]


def test_infinite_values_are_rejected():
    with pytest.raises(InputError, match="feature column 'a' holds infinite values"):
        fit_preprocessor(pd.DataFrame({"a": [1.0, np.inf]}), "regression", [])


def test_serving_rows_must_have_every_column():
    pre = fit_preprocessor(pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0]}), "regression", [])
    with pytest.raises(InputError, match="lack feature column"):
        pre.transform(pd.DataFrame({"a": [1.0]}))


def test_regression_target_is_standardised_and_reported_in_its_units():
    y = pd.Series([100.0, 200.0, 300.0])
    pre = fit_preprocessor(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), "regression", [], y)
    scaled = pre.encode_target(y)
    assert np.allclose(scaled.mean(), 0, atol=1e-6) and np.allclose(scaled.std(), 1, atol=1e-6)
    assert np.allclose(pre.decode(scaled.reshape(-1, 1)), y)
    units = pre.in_target_units({"loss": 1.0, "val_mae": 0.5, "test_mae": 2.0, "epoch_seconds": 3.0})
    scale = pre.target_scale
    assert units == pytest.approx({"loss": scale**2, "val_mae": 0.5 * scale, "test_mae": 2 * scale, "epoch_seconds": 3})


def test_a_large_table_is_fitted_on_a_sample_with_every_category(monkeypatch):
    rng = np.random.default_rng(0)
    n = 5000
    features = pd.DataFrame({"a": rng.normal(3.0, 2.0, n), "c": rng.choice(["x", "y"], n)})
    features.loc[n - 1, "c"] = "rare"  # one row: a sample of 500 almost surely misses it
    features.loc[[5, 6], "a"] = np.nan
    pre = fit_preprocessor(features, "classification", [0, 1], fit_rows=500, seed=0)
    full = fit_preprocessor(features, "classification", [0, 1])
    scaler = pre.columns.named_transformers_["numeric"][-1]
    sample = features.sample(n=500, random_state=0)["a"]
    assert scaler.mean_[0] == pytest.approx(sample.fillna(sample.median()).mean())  # the sample's own statistics
    assert scaler.mean_[0] == pytest.approx(3.0, abs=0.3)
    assert pre.n_features == full.n_features == 1 + 3  # the rare category is one-hot encoded too
    assert pre.transform(features.tail(1))[0, 1:].tolist() == [1.0, 0.0, 0.0]
    assert pre.imputed == full.imputed == {"a": 2}  # counted on every row
    monkeypatch.setattr(preprocess, "TRANSFORM_ROWS", 7)  # in chunks: the very same matrix
    chunked = pre.transform(features)
    monkeypatch.setattr(preprocess, "TRANSFORM_ROWS", n)
    assert np.array_equal(chunked, pre.transform(features))
    assert chunked.ctypes.data % 64 == 0 and chunked.flags.c_contiguous and chunked.dtype == np.float32
