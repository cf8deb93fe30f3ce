import numpy as np
import pandas as pd
import pytest

from components.data import detect_task, frame_digest, load_dataset
from components.errors import InputError


@pytest.mark.parametrize(
    ("name", "task", "rows"),
    [("digits", "classification", 1797), ("iris", "classification", 150), ("diabetes", "regression", 442)],
)
def test_embedded_sets_load_with_their_task(name, task, rows):
    ds = load_dataset(name)
    assert ds.task == task
    assert len(ds.features) == rows
    assert ds.target_name not in ds.features.columns
    assert len(ds.digest) == 16


def test_csv_loads_with_named_target(csv_file):
    ds = load_dataset(str(csv_file), target="kind")
    assert ds.task == "classification"
    assert list(ds.features.columns) == ["size", "weight", "colour"]
    assert ds.source == str(csv_file.resolve())


def test_parquet_loads_like_csv(csv_file, tmp_path):
    parquet = tmp_path / "rows.parquet"
    pd.read_csv(csv_file).to_parquet(parquet)
    assert load_dataset(str(parquet), "kind").digest == load_dataset(str(csv_file), "kind").digest


def test_task_can_be_overridden(csv_file):
    ds = load_dataset(str(csv_file), target="weight", task="classification")
    assert ds.task == "classification"
    assert load_dataset(str(csv_file), target="weight").task == "regression"


def test_detect_task():
    assert detect_task(pd.Series(["x", "y"])) == "classification"
    assert detect_task(pd.Series([0, 1, 2, 1])) == "classification"
    assert detect_task(pd.Series(np.linspace(0, 1, 50))) == "regression"
    assert detect_task(pd.Series(range(100))) == "regression"


def test_digest_follows_content():
    a = pd.DataFrame({"x": [1, 2], "y": [3, 4]})
    assert frame_digest(a) == frame_digest(a.copy())
    assert frame_digest(a) != frame_digest(a.assign(y=[3, 5]))
    assert frame_digest(a) != frame_digest(a.rename(columns={"x": "z"}))


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda p: str(p / "missing.csv"), "y", "data file not found: "),
        (lambda p: str(p), "y", "data path is a directory, not a file"),
        (lambda p: _write(p, "rows.txt", "a,y\n1,2\n"), "y", "unsupported data format '.txt'"),
        (lambda p: _write(p, "empty.csv", ""), "y", "data file is empty"),
        (lambda p: _write(p, "header.csv", "a,y\n"), "y", "no data rows in"),
        (lambda p: _write(p, "rows.csv", "a,b\n1,2\n"), "y", "target column 'y' not in"),
        (lambda p: _write(p, "rows.csv", "a,y\n1,0\n2,0\n"), "y", "has a single class (0)"),
        (lambda p: _write(p, "rows.csv", "a,y\n1,\n2,\n"), "y", "is entirely missing"),
        (lambda p: _write(p, "rows.csv", "a,a,y\n1,1,0\n"), "y", "duplicate column names"),
        (lambda p: _write(p, "bad.parquet", "not parquet"), "y", "cannot read"),
        (lambda p: _write(p, "rows.csv", "y\n1\n2\n"), "y", "no feature columns"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, make, target, message):
    with pytest.raises(InputError) as err:
        load_dataset(make(tmp_path), target=target)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_target_lists_columns_and_suggests(csv_file):
    with pytest.raises(InputError, match=r"did you mean kind\? columns are size, weight, colour, kind"):
        load_dataset(str(csv_file), target="kinds")


def test_text_target_cannot_be_regression(csv_file):
    with pytest.raises(InputError, match="holds text but the task is regression"):
        load_dataset(str(csv_file), target="kind", task="regression")


def test_file_needs_a_target(csv_file):
    with pytest.raises(InputError, match="no target column given"):
        load_dataset(str(csv_file))
