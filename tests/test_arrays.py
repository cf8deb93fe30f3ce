import hashlib

import numpy as np
import pytest
from PIL import Image

from components import arrays
from components.array_preprocess import fit_array_preprocessor
from components.array_split import split_arrays
from components.arrays import is_array_source, load_arrays, sample_hashes
from components.data import load_dataset
from components.errors import InputError
from components.split import SplitReport, split_dataset


def _npz(tmp_path, name="data.npz", compressed=False, **arrays_):
    path = tmp_path / name
    (np.savez_compressed if compressed else np.savez)(path, **arrays_)
    return str(path)


def _samples(part) -> set[bytes]:
    return {np.ascontiguousarray(s).tobytes() for s in part.features}


def test_digits_images_are_the_digits_table_as_8x8x1_images():
    ds = load_arrays("digits_images")
    table = load_dataset("digits")
    assert ds.features.shape == (1797, 8, 8, 1) and ds.features.dtype == np.float32
    assert np.array_equal(ds.features.reshape(1797, 64), table.features.to_numpy(dtype="float32"))
    assert ds.task == "classification" and ds.target.tolist() == table.target.tolist()


def test_array_split_keeps_the_table_split_promises_by_the_same_code():
    images = split_arrays(load_arrays("digits_images"), 0.15, 0.15, seed=0)
    rows = split_dataset(load_dataset("digits"), 0.15, 0.15, seed=0)
    assert isinstance(images.report, SplitReport)
    assert images.report.to_dict() == rows.report.to_dict()
    for name, part in images.parts().items():
        table = rows.parts()[name]
        flat = {np.ascontiguousarray(s, dtype="float32").tobytes() for s in table.features.to_numpy()}
        assert _samples(part) == flat  # the very same samples in each split
        assert part.features.shape[1:] == (8, 8, 1) and len(part) == len(table)
    assert not (_samples(images.train) & _samples(images.test))


def test_duplicates_dropped_and_conflicts_reported_and_counted_on_features(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 3)).astype("float32")
    y = np.arange(60) % 2
    x[1], y[1] = x[0], y[0]  # an exact duplicate: dropped
    x[3] = x[2]  # equal samples, labels 0 and 1: a conflict
    x[5] = -0.0 * x[5]  # -0.0 and 0.0 are one value
    x[7] = 0.0 * x[7]
    y[7] = y[5]
    for i in range(20, 40, 2):  # ten more conflicts: some of them land in two splits
        x[i + 1] = x[i]
    ds = load_arrays(_npz(tmp_path, x=x, y=y))
    split = split_arrays(ds, 0.2, 0.2, seed=1)
    report = split.report
    assert report.duplicates_dropped == 2
    assert report.conflicting_rows == 2 * 11
    assert sum(report.rows.values()) == 58
    parts = [_samples(p) for p in split.parts().values()]
    overlap = len(parts[0] & parts[1]) + len(parts[0] & parts[2]) + len(parts[1] & parts[2])
    assert report.rows_in_two_splits == overlap > 0  # counted on the samples whatever their labels


def test_uncompressed_npz_is_memory_mapped_and_digests_do_not_depend_on_storage(tmp_path):
    x = np.arange(40 * 6, dtype="float64").reshape(40, 3, 2)
    y = np.array(["a", "b"] * 20)
    stored = load_arrays(_npz(tmp_path, x=x, y=y))
    packed = load_arrays(_npz(tmp_path, "packed.npz", compressed=True, x=x, y=y))
    assert isinstance(stored.features, np.memmap) and not isinstance(packed.features, np.memmap)
    assert (stored.reading, packed.reading["memory_mapped"]) == ({"format": "npz", "memory_mapped": "true"}, "false")
    assert np.array_equal(stored.features, x) and stored.digest == packed.digest
    assert stored.target.tolist() == y.tolist() and stored.task == "classification"
    other = load_arrays(_npz(tmp_path, "other.npz", x=x + 1, y=y))
    assert other.digest != stored.digest
    split = split_arrays(stored, 0.25, 0.25, seed=0)
    assert isinstance(split.train.features, np.ndarray) and not isinstance(split.train.features, np.memmap)
    assert split.train.digest() == split_arrays(packed, 0.25, 0.25, seed=0).train.digest() != split.test.digest()


def test_sample_hashes_are_blake2b_of_each_sample_in_any_chunk_size(monkeypatch):
    x = np.random.default_rng(0).integers(0, 255, size=(50, 4, 4, 3)).astype("uint8")
    expected = [int.from_bytes(hashlib.blake2b(s.tobytes(), digest_size=8).digest(), "little") for s in x]
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 100)  # one sample per chunk
    assert sample_hashes(x).tolist() == expected
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 3 * 48)
    assert sample_hashes(x).tolist() == expected


def test_take_reads_a_memory_map_window_by_window(tmp_path, monkeypatch):
    x = np.arange(300 * 4, dtype="int32").reshape(300, 2, 2)
    mapped = load_arrays(_npz(tmp_path, x=x, y=np.arange(300) % 3)).features
    rows = np.sort(np.random.default_rng(0).choice(300, size=40, replace=False))
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 7 * 16)  # windows of 7 samples: most hold none of the rows
    assert np.array_equal(arrays.take(mapped, rows), x[rows])
    with pytest.raises(ValueError, match="increasing order"):
        arrays.take(mapped, rows[::-1])


def test_regression_arrays_split_by_value_range(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5, 2))
    y = x.sum(axis=(1, 2)) + rng.normal(size=200) * 0.1
    split = split_arrays(load_arrays(_npz(tmp_path, x=x, y=y)), 0.15, 0.15, seed=0)
    assert split.task == "regression" and split.report.class_shares == {}
    assert split.test.target.min() < np.quantile(y, 0.1) and split.test.target.max() > np.quantile(y, 0.9)


def test_preprocessor_keeps_values_and_fits_the_training_samples_only():
    split = split_arrays(load_arrays("digits_images"), 0.15, 0.15, seed=0)
    pre = fit_array_preprocessor(split.train.features, split.task, split.classes, split.train.target)
    flat = split.train.features.reshape(len(split.train), -1).astype("float64")
    variance = flat.var(axis=0)
    variance[variance == 0] = 1
    assert np.allclose(pre.input_stats[0], flat.mean(axis=0)) and np.allclose(pre.input_stats[1], variance)
    assert pre.input_shape == (8, 8, 1) and pre.n_features == 64 and pre.n_outputs == 10
    x = pre.transform(split.test.features)
    assert x.dtype == np.float32 and np.array_equal(x, split.test.features)  # no scaling: the network's job
    labels = pre.decode(np.eye(10)[pre.encode_target(split.test.target)])
    assert labels.tolist() == split.test.target.tolist()
    with pytest.raises(InputError, match=r"input samples have shape \(8, 8\) but the network was trained on"):
        pre.transform(split.test.features[..., 0])


def test_regression_target_is_standardised_on_training_values(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 3, 3))
    y = 1000 + 50 * x[:, 0, 0]
    split = split_arrays(load_arrays(_npz(tmp_path, x=x, y=y)), 0.2, 0.2, seed=0)
    pre = fit_array_preprocessor(split.train.features, split.task, split.classes, split.train.target)
    encoded = pre.encode_target(split.train.target)
    assert abs(encoded.mean()) < 1e-5 and abs(encoded.std() - 1) < 1e-5
    assert np.allclose(pre.decode(encoded.reshape(-1, 1)), split.train.target, rtol=1e-5)


def test_which_sources_are_arrays(tmp_path, monkeypatch):
    assert is_array_source("digits_images") and is_array_source("x.npz") and is_array_source(str(tmp_path))
    assert not is_array_source("digits") and not is_array_source("rows.csv")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iris").mkdir()
    assert not is_array_source("iris")  # the embedded table, not the folder
    (tmp_path / "sales" / "year=2024").mkdir(parents=True)
    (tmp_path / "sales" / "year=2024" / "part-0.parquet").write_bytes(b"")
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    assert not is_array_source("sales") and is_array_source("pets")  # Parquet part files make a folder a table


def test_samples_without_a_label_are_dropped_and_counted(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3, 2))
    y = np.array([0.0, 1.0] * 18 + [np.nan] * 4)
    split = split_arrays(load_arrays(_npz(tmp_path, x=x, y=y)), 0.2, 0.2, seed=0)
    assert split.report.missing_target_dropped == 4 and sum(split.report.rows.values()) == 36
    assert split.classes == [0.0, 1.0] and not any(np.isnan(p.target).any() for p in split.parts().values())


@pytest.mark.parametrize(
    ("arrays_", "message"),
    [
        ({"x": np.zeros((10, 3)), "y": np.zeros(9)}, "x has 10 samples but y has 9 labels: give one label per sample"),
        ({"x": np.zeros((10, 3))}, "lacks array y (it has x): save the samples as x and their labels as y"),
        ({"features": np.zeros((4, 3)), "y": np.zeros(4)}, "lacks array x (it has features, y)"),
        ({"x": np.arange(10.0), "y": np.arange(10) % 2}, "x has shape (10,): give one sample per row"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "x has shape (0, 3): give at least one sample"),
        ({"x": np.zeros((4, 3)), "y": np.eye(4)}, "y has shape (4, 4): give one label per sample"),
        ({"x": np.array([["a", "b"]] * 4), "y": np.arange(4) % 2}, "x holds <U1 values: descent trains on numbers"),
        ({"x": np.arange(8.0).reshape(4, 2), "y": np.zeros(4)}, "the labels y have a single class (0.0)"),
        ({"x": np.array([[1.0], [np.nan], [2], [3]]), "y": [0, 1, 0, 1]}, "sample 1 of x holds NaN or infinite"),
    ],
)
def test_bad_arrays(tmp_path, arrays_, message):
    with pytest.raises(InputError) as err:
        load_arrays(_npz(tmp_path, **arrays_))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_npz_files(tmp_path):
    with pytest.raises(InputError, match="data file not found: .*missing.npz: give an existing .npz file"):
        load_arrays(str(tmp_path / "missing.npz"))
    (tmp_path / "fake.npz").write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="fake.npz as .npz: it is not a numpy archive: save it with numpy.savez"):
        load_arrays(str(tmp_path / "fake.npz"))
    objects = np.empty(4, dtype=object)
    path = _npz(tmp_path, x=np.zeros((4, 2)), y=objects)
    with pytest.raises(InputError, match=r"array y.npy of .* holds Python objects"):
        load_arrays(path)
    with pytest.raises(InputError, match=r"data.target='label' does not apply to .*a .npz gives its labels as array y"):
        load_arrays(_npz(tmp_path, x=np.zeros((4, 2)), y=np.arange(4)), target="label")


def test_a_class_too_small_to_stratify_is_said_in_samples(tmp_path):
    x = np.random.default_rng(0).normal(size=(21, 4))
    ds = load_arrays(_npz(tmp_path, x=x, y=[0, 1] * 10 + [2]))
    with pytest.raises(InputError, match=r"class 2 has 1 sample\(s\), too few to appear in train, validation, test"):
        split_arrays(ds, 0.2, 0.2, seed=0)
    split_arrays(ds, 0.0, 0.0, seed=0)  # train only: any class size will do


# -- image folders --------------------------------------------------------------------------------


def _image(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder(tmp_path, per_class=4, size=(6, 5)) -> tuple[str, dict]:
    rng = np.random.default_rng(0)
    written = {}
    for name in ("cat", "dog", "owl"):
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
            _image(tmp_path / "pets" / name / f"{i}.png", pixels)
            written[(name, i)] = pixels
    return str(tmp_path / "pets"), written


def test_image_folder_as_arrays(tmp_path):
    folder, written = _folder(tmp_path)
    (tmp_path / "pets" / "README.txt").write_text("top-level files are not samples")
    ds = load_arrays(folder)
    assert ds.features.shape == (12, 6, 5, 3) and ds.features.dtype == np.uint8
    assert ds.target.tolist() == ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 4
    assert np.array_equal(ds.features[5], written[("dog", 1)])  # sorted classes, sorted files
    assert ds.task == "classification" and ds.name == "pets"
    gray = load_arrays(folder, color_mode="grayscale")
    expected = np.asarray(Image.open(tmp_path / "pets" / "owl" / "2.png").convert("L"))
    assert gray.features.shape == (12, 6, 5, 1) and np.array_equal(gray.features[10, ..., 0], expected)
    small = load_arrays(folder, image_size=[4, 3], color_mode="rgba")
    assert small.features.shape == (12, 4, 3, 4)
    assert small.reading == {"format": "images", "color_mode": "rgba", "image_size": "4x3"}
    assert ds.reading["image_size"] == "as stored"


def test_image_folder_split_drops_a_copied_image(tmp_path):
    folder, written = _folder(tmp_path, per_class=5)
    _image(tmp_path / "pets" / "cat" / "copy.png", written[("cat", 0)])
    split = split_arrays(load_arrays(folder), 0.2, 0.2, seed=0)
    assert split.report.duplicates_dropped == 1 and split.report.rows_in == 16
    assert split.classes == ["cat", "dog", "owl"] and split.report.rows_in_two_splits == 0


def test_bad_image_folders(tmp_path):
    def error(folder, **kw) -> str:
        with pytest.raises(InputError) as err:
            split_arrays(load_arrays(str(folder), **kw), 0.15, 0.15, seed=0)
        assert "\n" not in str(err.value)
        return str(err.value)

    (tmp_path / "empty").mkdir()
    assert "has no class subfolders: put each class's images in its own subfolder" in error(tmp_path / "empty")
    folder, written = _folder(tmp_path)
    pets = tmp_path / "pets"
    _image(pets / "owl" / "sub" / "odd.png", written[("owl", 0)][:3])
    assert "images differ in size: " in error(pets) and "set data.image_size=[64,64]" in error(pets)
    assert load_arrays(folder, image_size=[6, 5]).features.shape == (13, 6, 5, 3)  # resized: accepted
    (pets / "owl" / "sub" / "odd.png").unlink()
    (pets / "dog" / "notes.txt").write_text("not an image")
    assert f"{pets / 'dog' / 'notes.txt'} is not an image (.bmp, .gif, .jpeg, .jpg, .png)" in error(pets)
    (pets / "dog" / "notes.txt").unlink()
    (pets / "dog" / "broken.png").write_bytes(b"not really a png")
    assert f"cannot read {pets / 'dog' / 'broken.png'} as an image" in error(pets)
    (pets / "dog" / "broken.png").unlink()
    (pets / "bee").mkdir()
    assert f"class folder {pets / 'bee'} holds no images: add images to it or remove it" in error(pets)
    _image(pets / "bee" / "0.png", written[("cat", 0)] // 2)
    assert "class 'bee' has 1 sample(s), too few to appear in train, validation, test: add samples" in error(pets)
    assert "data.target='label' does not apply" in error(pets, target="label")
    assert "holds images of classes, not a regression target: set data.task=auto" in error(pets, task="regression")
    _image(tmp_path / "one" / "cat" / "0.png", written[("cat", 0)])
    assert "has one class folder (cat): classification needs at least two" in error(tmp_path / "one")
    assert "unknown data.color_mode 'cmyk'" in error(pets, color_mode="cmyk")
