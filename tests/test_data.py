import bz2
import csv
import gzip
import lzma
import zipfile

import numpy as np
import pandas as pd
import pytest

from components.data import detect_task, frame_digest, load_dataset
from components.errors import InputError, InputWarning


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
        (lambda p: str(p), "y", "data path is a folder with no .parquet files"),
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


# Files as people have them: every format and encoding loads to the same rows as the plain UTF-8 CSV.
ROWS = pd.DataFrame(
    {
        "name": ["Dréam", "Café", "Niño", "Straße", "Mèrida", "Zürich"] * 5,
        "size": np.arange(30) / 4,
        "label": ["a", "b", "c"] * 10,
    }
)


def _text(sep=",", quoting=csv.QUOTE_MINIMAL):
    return ROWS.to_csv(index=False, sep=sep, quoting=quoting, lineterminator="\n")


def _same_rows(path, **options):
    ds = load_dataset(str(path), "label", **options)
    pd.testing.assert_frame_equal(ds.features, ROWS.drop(columns=["label"]), check_dtype=False)
    assert ds.digest == frame_digest(ROWS)
    return ds.reading


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("latin-1", "cp1252"), ("cp1252", "cp1252")],
)
def test_text_encodings_are_read_and_recorded(tmp_path, encoding, expected):
    path = tmp_path / "rows.csv"
    path.write_bytes(_text().encode(encoding))
    assert _same_rows(path)["encoding"] == expected


def test_non_western_encoding_is_detected(tmp_path):
    rows = pd.DataFrame({"город": ["Москва", "Киев", "Минск"] * 10, "label": ["да", "нет", "да"] * 10})
    path = tmp_path / "rows.csv"
    path.write_bytes(rows.to_csv(index=False).encode("cp1251"))
    ds = load_dataset(str(path), "label")
    assert ds.reading["encoding"] == "cp1251"
    assert list(ds.features["город"][:3]) == ["Москва", "Киев", "Минск"]


def test_utf8_that_breaks_after_the_first_block_is_read_again_in_its_encoding(tmp_path):
    from components.files import SAMPLE_BYTES

    filler = pd.DataFrame({"name": ["plain ascii"] * (SAMPLE_BYTES // 10), "size": 1.0, "label": "a"})
    frame = pd.concat([filler, ROWS], ignore_index=True)
    path = tmp_path / "rows.csv"
    path.write_bytes(frame.to_csv(index=False).encode("cp1252"))
    ds = load_dataset(str(path), "label")
    assert ds.reading["encoding"] == "cp1252"
    assert list(ds.features["name"].tail(6)) == list(ROWS["name"].tail(6))


def test_configured_encoding_wins(tmp_path):
    rows = pd.DataFrame({"city": ["Plzeň", "Łódź", "Třebíč"] * 10, "label": ["a", "b", "c"] * 10})
    path = tmp_path / "rows.csv"
    path.write_bytes(rows.to_csv(index=False).encode("cp1250"))  # Central European: detection would say Western
    ds = load_dataset(str(path), "label", encoding="cp1250")
    assert (ds.reading["encoding"], list(ds.features["city"][:3])) == ("cp1250", ["Plzeň", "Łódź", "Třebíč"])
    with pytest.raises(InputError, match=r"unknown encoding data.encoding='klingon': use a Python codec name"):
        load_dataset(str(path), "label", encoding="klingon")


@pytest.mark.parametrize(("sep", "name"), [(",", "comma"), (";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_separator_is_sniffed(tmp_path, sep, name):
    path = tmp_path / "rows.csv"
    path.write_text(_text(sep))
    assert _same_rows(path)["separator"] == name


def test_separator_can_be_set_by_character_or_word(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(_text(";"))
    assert _same_rows(path, separator=";")["separator"] == "semicolon"
    assert _same_rows(path, separator="semicolon")["separator"] == "semicolon"


def test_wrong_separator_is_named_as_the_problem(tmp_path):
    path = tmp_path / "penguins.csv"
    path.write_text("bill_length;island;label\n39.1;Torgersen;Adelie\n40.3;Biscoe;Gentoo\n")
    with pytest.raises(InputError) as err:
        load_dataset(str(path), "label", separator=",")
    assert str(err.value) == (
        f"target column 'label' not in {path}: its header was split at the comma, but its names are separated "
        "by semicolons (bill_length;island;label): set data.separator=semicolon"
    )


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_tsv_is_tab_separated(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    path.write_text(_text("\t")) if suffix == ".tsv" else path.write_bytes(gzip.compress(_text("\t").encode()))
    reading = _same_rows(path)
    assert reading["separator"] == "tab"
    assert load_dataset(str(path), "label").name == "rows"


@pytest.mark.parametrize(
    ("suffix", "compress", "compression"),
    [
        (".csv.gz", gzip.compress, "gzip"),
        (".csv.bz2", bz2.compress, "bz2"),
        (".csv.xz", lzma.compress, "xz"),
    ],
)
def test_compressed_csv(tmp_path, suffix, compress, compression):
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(compress(_text(";").encode("cp1252")))
    reading = _same_rows(path)
    assert reading == {"format": "csv", "encoding": "cp1252", "separator": "semicolon", "compression": compression}
    assert load_dataset(str(path), "label").name == "rows"


def test_zipped_csv_holds_one_table(tmp_path):
    path = tmp_path / "rows.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("export/rows.csv", _text().encode("utf-8-sig"))
        archive.writestr("__MACOSX/export/._rows.csv", b"\x00\x05\x16\x07")  # what macOS adds to a zip
    assert _same_rows(path)["compression"] == "zip"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("export/more.csv", _text())
    with pytest.raises(InputError, match=r"holds 2 files: a .zip data file must hold exactly one table"):
        load_dataset(str(path), "label")


def test_parquet_folder_of_part_files(tmp_path):
    folder = tmp_path / "rows.parquet"
    folder.mkdir()
    for i, part in enumerate([ROWS.iloc[:10], ROWS.iloc[10:20], ROWS.iloc[20:]]):
        part.to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")  # Spark's marker: not a part
    ds = load_dataset(str(folder), "label")
    assert ds.reading == {"format": "parquet", "parts": "3"}
    assert ds.name == "rows"
    pd.testing.assert_frame_equal(ds.features, ROWS.drop(columns=["label"]))


def test_a_folder_without_data_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a part")
    with pytest.raises(InputError, match=r"data path is a folder with no .parquet files: "):
        load_dataset(str(tmp_path), "label")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (bytes(range(256)) * 8, "it holds binary data (a zero byte at offset 0): export it as CSV"),
        (b"PK\x03\x04\x14\x00\x06\x00", "it looks like an Excel workbook or a ZIP archive: save it as CSV"),
        (b"PAR1\x15\x04", "it looks like a Parquet file: give it a .parquet name"),
        (b"\xe9\xff\xfe\x81\x8d" * 400, "no text encoding fits its bytes"),
    ],
)
def test_a_file_that_is_not_text_is_one_clear_error(tmp_path, content, why):
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_dataset(str(path), "label")
    assert str(err.value).startswith(f"{path} is not a text CSV file: {why}")
    assert "\n" not in str(err.value)


def test_an_entirely_missing_feature_column_is_a_warning(tmp_path):
    path = tmp_path / "rows.csv"
    ROWS.assign(notes=np.nan).to_csv(path, index=False)
    with pytest.warns(InputWarning, match=r"feature column 'notes' of .* is entirely missing: it is left out"):
        load_dataset(str(path), "label")


def test_digest_of_a_frame_and_its_target_without_joining_them():
    a = pd.DataFrame({"x": [1, 2]})
    y = pd.Series([3, 4], name="y")
    assert frame_digest(a, y) == frame_digest(a.copy(), y.copy())
    assert frame_digest(a, y) != frame_digest(a, y.replace(4, 5))
    assert frame_digest(a, y) != frame_digest(a, y.rename("z"))
    assert frame_digest(a, y) != frame_digest(a)
