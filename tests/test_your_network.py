"""The user's network and array data through the pipelines: a builder sweep on digits images, a saved .keras
model, an image folder, a .npz of sequences; the runs, the data record and the servable model of each."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from examples.digits_cnn import build as digits_cnn
from pipelines.prepare import prepare
from pipelines.study import sweep
from pipelines.train import build_network, study_digest, train
from tests.conftest import ROOT, tiny

DIGITS_CNN = f"{ROOT / 'examples' / 'digits_cnn.py'}:build"
IMAGE_CNN = f"{ROOT / 'examples' / 'image_cnn.py'}:build"
ON_IMAGES = {"data.source": "digits_images", "model.builder": DIGITS_CNN}


def _text(client, run_id, path):
    return Path(client.download_artifacts(run_id, path)).read_text()


def _served(uri):
    import mlflow

    return mlflow.pyfunc.load_model(uri)


@pytest.mark.slow
def test_a_convolutional_builder_sweeps_digits_images(store):
    grid = {"sweep.optimizers": ["adam", "sgd"], "sweep.batch_sizes": [32], "training.epochs": 5}
    cfg = tiny(**ON_IMAGES, **grid)
    result = sweep(cfg)
    client = MlflowClient(store)
    parent = client.get_run(result["parent_run_id"])
    children = [client.get_run(run_id) for run_id in result["table"]["run_id"]]
    assert [c.info.run_name for c in children] == ["adam-bs32", "sgd-bs32"]  # best first
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
    best = children[0].data.metrics
    assert best["test_accuracy"] > 0.9  # 270 test images, chance 0.1: 0.96 measured after 5 epochs of adam

    # the user's network, recorded where a person looks for it, measured under its own layer names
    assert "conv_1 (Conv2D)" in _text(client, parent.info.run_id, "network_summary.txt")
    assert _text(client, parent.info.run_id, "builder/digits_cnn.py") == (ROOT / "examples/digits_cnn.py").read_text()
    for child in children:
        summary = _text(client, child.info.run_id, "network_summary.txt")
        assert "conv_2 (Conv2D)" in summary and "(None, 4, 4, 32)" in summary  # after the 2x2 pooling
        measured = {"grad_norm/conv_1/kernel", "update_norm/output/bias", "loss_noise", "noise_scale"}
        measured |= {"train_peak_memory_mb", "by_update/val_loss", "by_update/train_loss", "final_train_accuracy"}
        assert measured <= set(child.data.metrics)
        assert child.data.params["model.builder"] == DIGITS_CNN
        assert f"the network of {DIGITS_CNN} on digits_images" in child.data.tags["mlflow.note.content"]

    # the data record: the split's samples as MLflow datasets with descent's digests, the split report
    prepared = prepare(cfg)
    inputs = {i.dataset.name: i.dataset for i in parent.inputs.dataset_inputs}
    assert set(inputs) == {"digits_images-train", "digits_images-validation", "digits_images-test"}
    assert (
        inputs["digits_images-train"].digest
        == prepared.split.train.digest()
        == parent.data.tags["descent.split_digest"]
    )
    assert json.loads(inputs["digits_images-test"].profile)["features_shape"] == [len(prepared.split.test), 8, 8, 1]
    report = client.download_artifacts(parent.info.run_id, "split_report.json")
    assert '"rows_in_two_splits": 0' in Path(report).read_text()

    # the servable model takes samples and gives labels: its accuracy on the test images is the logged one
    model = _served(children[0].data.tags["descent.model_uri"])
    assert str(model.metadata.signature.inputs) == "[Tensor('float32', (-1, 8, 8, 1))]"
    test = prepared.split.test
    predicted = model.predict(test.features)["prediction"].to_numpy()
    assert np.mean(predicted == test.target.to_numpy()) == pytest.approx(best["test_accuracy"], abs=1e-6)


def test_every_variant_of_a_seed_starts_from_the_same_weights(tmp_path):
    def weights(cfg):
        return build_network(cfg, prepared, cfg.training.seed).get_weights()

    prepared = prepare(tiny(**ON_IMAGES))
    adam, sgd = (tiny(**ON_IMAGES, **{"training.optimizer": o}) for o in ("adam", "sgd"))
    other_seed = tiny(**ON_IMAGES, **{"training.seed": 1})
    assert all(np.array_equal(a, b) for a, b in zip(weights(adam), weights(sgd), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(weights(adam), weights(other_seed), strict=True))

    saved = digits_cnn((8, 8, 1), 10, "classification")
    saved.set_weights([w + 1 for w in saved.get_weights()])
    saved.save(tmp_path / "cnn.keras")
    fresh = tiny(**ON_IMAGES | {"model.builder": str(tmp_path / "cnn.keras")})
    kept = tiny(**ON_IMAGES | {"model.builder": str(tmp_path / "cnn.keras"), "model.keep_weights": True})
    assert all(np.array_equal(a, b) for a, b in zip(weights(fresh), weights(fresh), strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(weights(fresh), saved.get_weights(), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(weights(kept), saved.get_weights(), strict=True))


@pytest.mark.slow
def test_a_saved_keras_model_trains_with_fresh_weights(store, tmp_path):
    path = tmp_path / "digits_cnn.keras"
    digits_cnn((8, 8, 1), 10, "classification").save(path)
    result = train(tiny(**ON_IMAGES | {"model.builder": str(path), "training.epochs": 3}))
    client = MlflowClient(store)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert "conv_1 (Conv2D)" in _text(client, run.info.run_id, "network_summary.txt")
    assert Path(client.download_artifacts(run.info.run_id, "builder/digits_cnn.keras")).read_bytes() == (
        path.read_bytes()
    )
    samples = prepare(tiny(**ON_IMAGES)).split.test.features[:5]
    assert len(_served(result["model_uri"]).predict(samples)) == 5


def _colour_folder(root: Path, images: int = 30) -> Path:
    """Three classes of 20 x 24 RGB images, each brighter in its own colour channel."""
    rng = np.random.default_rng(0)
    for colour, channel in (("red", 0), ("green", 1), ("blue", 2)):
        (root / colour).mkdir(parents=True)
        for i in range(images):
            pixels = rng.integers(0, 120, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., channel] += 120
            Image.fromarray(pixels).save(root / colour / f"{i}.png")
    return root


@pytest.mark.slow
def test_an_image_folder_trains_and_serves_its_class_names(store, tmp_path):
    folder = _colour_folder(tmp_path / "colours")
    cfg = tiny(
        **{"data.source": str(folder), "data.image_size": [16, 16], "model.builder": IMAGE_CNN},
        **{"training.epochs": 10, "training.batch_size": 8},
    )
    result = train(cfg)
    client = MlflowClient(store)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] > 0.9  # 14 test images, chance 1/3
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "colours-train",
        "colours-validation",
        "colours-test",
    }
    model = _served(result["model_uri"])
    # the images as stored (uint8 pixels), resized as in training: class names back
    assert str(model.metadata.signature.inputs) == "[Tensor('uint8', (-1, 16, 16, 3))]"
    test = prepare(cfg).split.test
    predicted = model.predict(test.features)["prediction"]
    assert set(predicted) <= {"red", "green", "blue"}
    assert np.mean(predicted.to_numpy() == test.target.to_numpy()) == pytest.approx(run.data.metrics["test_accuracy"])


def test_sequences_in_a_npz_train_descents_own_network_for_regression(store, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5, 3)).astype("float32")  # samples x time steps x features
    y = 100 + 10 * x[:, :, 0].sum(axis=1)  # a value in its own units, far from 0
    np.savez(tmp_path / "series.npz", x=x, y=y)
    cfg = tiny(**{"data.source": str(tmp_path / "series.npz"), "training.epochs": 10, "training.learning_rate": 0.01})
    result = train(cfg)
    run = MlflowClient(store).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["data.source"] == str(tmp_path / "series.npz")
    assert "grad_norm/hidden_1/kernel" in run.data.metrics
    # descent's dense network flattens and standardises the samples: it beats predicting the training mean
    assert run.data.metrics["test_mae"] < 0.5 * np.abs(y - y.mean()).mean()
    predicted = _served(result["model_uri"]).predict(x[:50])["prediction"].to_numpy()
    assert np.abs(predicted - y[:50]).mean() < 0.5 * np.abs(y - y.mean()).mean()  # in the target's units


def test_the_split_entry_point_records_an_image_folder(store, tmp_path):
    from pipelines.split import split

    report = split(tiny(**{"data.source": str(_colour_folder(tmp_path / "colours", images=10))}))
    assert report["rows"] == {
        "train": 22,
        "validation": 4,
        "test": 4,
    }  # 30 images, 0.15 each: round(4.5) = 4 and report["rows_in_two_splits"] == 0
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("descent").experiment_id])
    assert (run.info.run_name, run.data.metrics["rows_in_two_splits"]) == ("split-colours", 0)
    schemas = {i.dataset.name: json.loads(i.dataset.profile) for i in run.inputs.dataset_inputs}
    assert schemas["colours-train"]["features_shape"] == [22, 20, 24, 3]  # the images as stored: 20 x 24 RGB


def test_workers_get_the_data_without_the_samples_they_never_read():
    import pickle

    prepared = prepare(tiny(**ON_IMAGES))
    lean = prepared.for_workers()
    assert len(lean.dataset.features) == 0 and len(lean.split.train.features) == 0
    assert (
        len(lean.split.train) == len(prepared.split.train) and lean.split.test.features is prepared.split.test.features
    )
    assert (lean.split_digest, lean.baseline) == (prepared.split_digest, prepared.baseline)
    assert np.array_equal(lean.example, prepared.example) and lean.example.shape == (50, 8, 8, 1)
    # 1,257 training images, fewer than measure.probe_rows: the fixed sample is the training arrays, not a copy
    assert lean.sample[0] is lean.arrays.x_train
    x = prepared.arrays
    needed = x.x_train.nbytes + x.x_val.nbytes + prepared.split.test.features.nbytes
    assert needed < len(pickle.dumps(lean)) < needed + 100_000
    table = prepare(tiny()).for_workers()
    assert isinstance(table.example, pd.DataFrame) and len(table.split.train.features) == 0


CUSTOM = """
import keras


@keras.saving.register_keras_serializable(package="my_nets")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x / 16.0


def build(input_shape, n_outputs, task):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(Scale(name="scale")(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax", name="output")(x))
"""


@pytest.mark.slow
def test_a_builder_with_a_custom_layer_serves_from_its_logged_code(store, tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "scaled.py").write_text(CUSTOM)  # a folder not on sys.path: only the model's code has it
    result = train(tiny(**ON_IMAGES | {"model.builder": "nets/scaled.py:build", "training.epochs": 1}))
    keras.saving.get_custom_objects().pop("my_nets>Scale")  # as in a fresh process that never ran the builder
    samples = prepare(tiny(**ON_IMAGES)).split.test.features[:3]
    assert len(_served(result["model_uri"]).predict(samples)) == 3
    assert "my_nets>Scale" in keras.saving.get_custom_objects()


def test_an_edited_builder_file_is_another_study(tmp_path):
    # A resume reuses variants of the same study only: the user's network file is part of what the study is.
    path = tmp_path / "net.py"
    path.write_text((ROOT / "examples" / "digits_cnn.py").read_text())
    cfg = tiny(**ON_IMAGES | {"model.builder": f"{path}:build"})
    before = study_digest(cfg)
    assert study_digest(cfg) == before != cfg.digest()
    path.write_text(path.read_text().replace("relu", "tanh"))
    assert study_digest(cfg) != before
    assert study_digest(tiny()) == tiny().digest()  # descent's own dense network: its code is the code version


# The same network, its layer not registered: Keras cannot load a saved network that has it.
UNREGISTERED = CUSTOM.replace('@keras.saving.register_keras_serializable(package="my_nets")\n', "").replace(
    "Scale", "Halved"
)


@pytest.mark.slow
def test_a_best_network_that_does_not_load_is_a_warning_not_a_failed_sweep(store, tmp_path, caplog):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "plain.py").write_text(UNREGISTERED)
    values = {"model.builder": "nets/plain.py:build", "sweep.optimizers": ["adam"], "sweep.batch_sizes": [64]}
    result = sweep(tiny(**ON_IMAGES | values))
    assert result["model_uri"] is None
    assert "does not load" in caplog.text and "register_keras_serializable" in caplog.text
    client = MlflowClient(store)
    assert client.get_run(result["parent_run_id"]).info.status == "FINISHED"
    assert [o["state"] for o in result["outcomes"]] == ["finished"]
