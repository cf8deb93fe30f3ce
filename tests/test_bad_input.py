"""Bad input of every kind: one exact line on stderr, exit code 2, no run left RUNNING."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipelines import cli
from pipelines.scheduled import _entry as scheduled_entry
from pipelines.sweep import _entry as sweep_entry
from pipelines.train import _entry as train_entry
from tests.test_builder import NET


def _csv(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _bytes(tmp: Path, name: str, content: bytes) -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def _rows(tmp: Path, name: str = "rows.csv", **columns) -> str:
    n = 40
    frame = pd.DataFrame({"a": np.arange(n, dtype=float), "b": np.arange(n) % 7, "y": np.arange(n) % 2} | columns)
    path = tmp / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return str(path)


def _builder(tmp: Path, body: str, function: str = "build") -> list[str]:
    """The options of a run on digits_images with the network of `body` (a builder file written to tmp)."""
    path = tmp / "net.py"
    path.write_text(body)
    return ["--data", "digits_images", "--overrides", f"model.builder={path}:{function}"]


def _npz(tmp: Path, **arrays) -> str:
    np.savez(tmp / "data.npz", **arrays)
    return str(tmp / "data.npz")


def _images(tmp: Path, dog: int = 10, stray: str = "") -> str:
    """A folder of 6 x 6 images, 10 cats and `dog` dogs, and a `stray` file in dog/."""
    rng = np.random.default_rng(0)
    for name, n in (("cat", 10), ("dog", dog)):
        (tmp / "pets" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp / "pets" / name / f"{i}.png")
    if stray:
        (tmp / "pets" / "dog" / stray).write_text("a good dog")
    return str(tmp / "pets")


RAISES = "def build(shape, n, task):\n    raise RuntimeError('out of memory')\n"
# The user's network and arrays: each refused before any run exists (BEFORE_ANY_RUN).
BUILDER_CASES = {
    "builder file missing": (
        lambda t: ["--data", "digits_images", "--overrides", "model.builder=nets/cnn.py:build"],
        "model.builder file not found: nets/cnn.py: give path/to/file.py:function, relative to {tmp}",
    ),
    "builder function missing": (
        lambda t: _builder(t, NET, "biuld"),
        "{tmp}/net.py has no function 'biuld' for model.builder: did you mean build? its functions are build",
    ),
    "builder raises": (
        lambda t: _builder(t, RAISES),
        "model.builder {tmp}/net.py:build raised RuntimeError: out of memory: fix the builder "
        "(descent calls it as build((8, 8, 1), 10, 'classification'))",
    ),
    "builder returns no keras.Model": (
        lambda t: _builder(t, "def build(shape, n, task):\n    return None\n"),
        "model.builder {tmp}/net.py:build returned NoneType, not a keras.Model: "
        "return keras.Model(inputs, outputs) or keras.Sequential([...]), uncompiled",
    ),
    "builder's output does not fit the classes": (
        lambda t: _builder(t, NET.replace("Dense(n_outputs", "Dense(3")),
        "model.builder {tmp}/net.py:build outputs shape (3,), but the data has 10 classes: end the network with "
        "keras.layers.Dense(n_outputs, activation='softmax') (n_outputs = 10)",
    ),
    "builder's input does not take the samples": (
        lambda t: _builder(t, NET.replace("shape=input_shape", "shape=(28, 28, 1)")),
        "model.builder {tmp}/net.py:build takes samples of shape (28, 28, 1) but the data's samples have shape "
        "(8, 8, 1): build its input as keras.Input(shape=input_shape) from the argument descent passes",
    ),
    "npz x of one dimension": (
        lambda t: ["--data", _npz(t, x=np.arange(40.0), y=np.arange(40) % 2)],
        "{tmp}/data.npz: x has shape (40,): give one sample per row, e.g. x.reshape(-1, 1) for one feature",
    ),
    "npz x and y of different lengths": (
        lambda t: ["--data", _npz(t, x=np.zeros((40, 3)), y=np.arange(39) % 2)],
        "{tmp}/data.npz: x has 40 samples but y has 39 labels: give one label per sample",
    ),
    "npz without x and y": (
        lambda t: ["--data", _npz(t, images=np.zeros((40, 3)), labels=np.arange(40) % 2)],
        "{tmp}/data.npz lacks array x and y (it has images, labels): save the samples as x and their labels as y: "
        "numpy.savez(path, x=x, y=y)",
    ),
    "class folder with one image": (
        lambda t: ["--data", _images(t, dog=1)],
        "class 'dog' has 1 sample(s), too few to appear in train, validation, test: add samples of that class "
        "(for an image folder, images to its folder) or drop the class",
    ),
    "not an image in a class folder": (
        lambda t: ["--data", _images(t, stray="notes.txt")],
        "{tmp}/pets/dog/notes.txt is not an image (.bmp, .gif, .jpeg, .jpg, .png): move it out of the class folder",
    ),
}

# (argv builder, exact message after "descent: error: "); {tmp} is the test's folder.
CASES = {
    "missing file": (
        lambda t: ["--data", f"{t}/nope.csv", "--target", "y"],
        "data file not found: {tmp}/nope.csv: give an existing .csv/.parquet path or an embedded data set "
        "(digits, iris, wine, breast_cancer, diabetes)",
    ),
    "directory": (
        lambda t: ["--data", str(t), "--target", "y"],
        "data.target='y' does not apply to {tmp}: a folder is read as images, one subfolder per class (its labels): "
        "remove data.target, or give a .csv or .parquet file for a table",
    ),
    "unsupported format": (
        lambda t: ["--data", _csv(t, "rows.json", "{}"), "--target", "y"],
        "unsupported data format '.json' for {tmp}/rows.json: use .csv or .tsv (optionally .gz, .bz2, .zip, .xz), "
        ".parquet, or a folder of .parquet files",
    ),
    "empty csv": (
        lambda t: ["--data", _csv(t, "empty.csv", ""), "--target", "y"],
        "data file is empty: {tmp}/empty.csv: it needs a header row and data rows",
    ),
    "header only": (
        lambda t: ["--data", _csv(t, "header.csv", "a,b,y\n"), "--target", "y"],
        "no data rows in {tmp}/header.csv: the file has a header but no rows",
    ),
    "target missing": (
        lambda t: ["--data", _rows(t), "--target", "yy"],
        "target column 'yy' not in {tmp}/rows.csv: did you mean y? columns are a, b, y",
    ),
    "target all missing": (
        lambda t: ["--data", _csv(t, "rows.csv", "a,y\n1,\n2,\n"), "--target", "y"],
        "target column 'y' is entirely missing: choose a column with values",
    ),
    "one class": (
        lambda t: ["--data", _rows(t, y=np.zeros(40, int)), "--target", "y"],
        "target column 'y' has a single class (0): classification needs at least two classes",
    ),
    "class too small to stratify": (
        lambda t: ["--data", _rows(t, y=[0, 1] * 19 + [2, 3]), "--target", "y"],
        "classes '2', '3' have 1 row(s), too few to appear in train, validation, test: "
        "add rows of that class or drop it from the data",
    ),
    "text in a regression target": (
        lambda t: ["--data", _rows(t, y=["x", "z"] * 20), "--target", "y", "--overrides", "data.task=regression"],
        "target column 'y' holds text but the task is regression: "
        "set data.task=classification or choose a numeric target",
    ),
    "constant features": (
        lambda t: ["--data", _rows(t, a=np.ones(40), b=np.ones(40)), "--target", "y"],
        "every feature column of {tmp}/rows.csv is constant: nothing to learn from; check the file",
    ),
    "infinities": (
        lambda t: ["--data", _rows(t, a=[np.inf] + list(range(39))), "--target", "y"],
        "feature column 'a' holds infinite values: replace them or drop the column",
    ),
    "duplicate column names": (
        lambda t: ["--data", _csv(t, "dup.csv", "a,a,y\n1,2,0\n3,4,1\n"), "--target", "y"],
        "duplicate column names in {tmp}/dup.csv: a: rename them",
    ),
    "binary file named .csv": (
        lambda t: ["--data", _bytes(t, "rows.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "--target", "y"],
        "{tmp}/rows.csv is not a text CSV file: it holds binary data (a zero byte at offset 8): export it as CSV",
    ),
    "wrong separator": (
        lambda t: (
            ["--data", _csv(t, "rows.csv", "a;b;y\n1;2;0\n3;4;1\n"), "--target", "y"]
            + ["--overrides", "data.separator=comma"]
        ),
        "target column 'y' not in {tmp}/rows.csv: its header was split at the comma, but its names are separated by "
        "semicolons (a;b;y): set data.separator=semicolon",
    ),
    "corrupt parquet": (
        lambda t: ["--data", _csv(t, "bad.parquet", "this is not parquet"), "--target", "y"],
        "cannot read {tmp}/bad.parquet as parquet: the file is corrupt or not Parquet: export it again",
    ),
    "malformed yaml": (
        lambda t: ["--config", _csv(t, "bad.yaml", "training:\n  epochs: 3\n  seed: [1, 2\n")],
        "malformed YAML in {tmp}/bad.yaml line 4: expected ',' or ']', but got '<stream end>': fix the syntax there",
    ),
    "missing config file": (
        lambda t: ["--config", f"{t}/nope.yaml"],
        "config file not found: {tmp}/nope.yaml: give an existing YAML file (e.g. conf/quick.yaml)",
    ),
    "unknown config key": (
        lambda t: ["--overrides", "model.hiden=[8]"],
        "unknown config key model.hiden: did you mean model.hidden? known keys here: model.api, model.hidden, "
        "model.activation, model.dropout, model.builder, model.keep_weights",
    ),
    "wrong type": (
        lambda t: ["--epochs", "many"],
        "config value training.epochs='many' is invalid: input should be a valid integer, "
        "unable to parse string as an integer",
    ),
    "unclosed quote": (
        lambda t: ["--overrides", "data.target='y"],
        'cannot read overrides "data.target=\'y": No closing quotation: quote each value that has spaces',
    ),
    "unknown optimizer": (
        lambda t: ["--data", "iris", "--optimizer", "adamm"],
        "unknown optimizer 'adamm': choose one of sgd, momentum, nesterov, adagrad, rmsprop, adadelta, adam, "
        "adamw, nadam, adamax, lion",
    ),
    "non-positive learning rate": (
        lambda t: ["--data", "iris", "--overrides", "optimizers.adam.learning_rate=-0.1"],
        "learning rate of 'adam' must be positive, got -0.1: set e.g. training.learning_rate=0.01",
    ),
    "unknown activation": (
        lambda t: ["--data", "iris", "--overrides", "model.activation=relux"],
        "unknown activation 'relux': use a Keras activation such as relu, tanh or sigmoid",
    ),
    "batch size 0": (
        lambda t: ["--data", "iris", "--batch_size", "0"],
        "config value training.batch_size=0 is invalid: input should be greater than 0",
    ),
    "batch size above the training rows": (
        lambda t: ["--data", "iris", "--batch_size", "500"],
        "batch size 500 is larger than the 105 training rows: use batch_size=full for batch gradient descent",
    ),
    "epochs 0": (
        lambda t: ["--data", "iris", "--epochs", "0"],
        "config value training.epochs=0 is invalid: input should be greater than 0",
    ),
    "split leaves no training rows": (
        lambda t: ["--data", "iris", "--overrides", "split.validation=0.5 split.test=0.5"],
        "split.validation + split.test = 1 leaves no training rows: make their sum less than 1",
    ),
    **BUILDER_CASES,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, store, tmp_path, capsys):
    build, message = CASES[case]
    code = cli.main(train_entry, build(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["descent: error: " + message.format(tmp=tmp_path)]
    _assert_no_run_running(store)


@pytest.mark.parametrize("entry", [sweep_entry, scheduled_entry], ids=["sweep", "scheduled"])
@pytest.mark.parametrize("case", ["builder file missing", "builder's output does not fit the classes"])
def test_a_bad_network_stops_every_entry_point_before_any_run(entry, case, store, tmp_path, capsys):
    build, message = BUILDER_CASES[case]
    code = cli.main(entry, build(tmp_path))
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["descent: error: " + message.format(tmp=tmp_path)]
    client = MlflowClient(store)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # no run at all


def _assert_no_run_running(store):
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if experiments:
        assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")


def test_deleted_experiment_of_the_same_name(store, capsys):
    client = MlflowClient(store)
    client.delete_experiment(client.create_experiment("descent"))
    assert cli.main(train_entry, ["--data", "iris", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "descent: error: experiment 'descent' is deleted: restore it (mlflow experiments restore "
        "--experiment-id 1) or set experiment: to a new name"
    )


def test_unwritable_artifact_location(store, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact folder should be")
    MlflowClient(store).create_experiment("descent", artifact_location=str(blocker / "artifacts"))
    assert cli.main(train_entry, ["--data", "iris", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"descent: error: artifact location {blocker / 'artifacts'} of experiment 'descent' is not writable "
        "(Not a directory): fix its permissions or use another experiment"
    )
    _assert_no_run_running(store)


def test_missing_feature_values_are_imputed_and_counted(store, tmp_path):
    path = _rows(tmp_path, a=[np.nan] * 3 + list(range(37)))
    assert cli.main(train_entry, ["--data", path, "--target", "y", "--epochs", "1", "--batch_size", "full"]) == 0
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("descent").experiment_id])
    [run] = [r for r in runs if r.data.tags.get("descent.kind") != "trial"]  # the variant, not its learning rates
    report = client.download_artifacts(run.info.run_id, "split_report.json")
    assert '"imputed_values": {"a": ' in Path(report).read_text().replace("\n", "").replace("  ", "")
