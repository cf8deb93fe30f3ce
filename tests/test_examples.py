from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.array_preprocess import fit_array_preprocessor
from components.array_split import split_arrays
from components.arrays import load_arrays
from components.builder import network_summary
from components.model import build_model
from components.optimizers import make_optimizer
from components.train import Arrays, compile_model, evaluate, fit_variant
from pipelines.config import load_config
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parent.parent
TWO_BRANCH = f"{ROOT / 'examples' / 'two_branch.py'}:build"


def _train(source: str, builder: str, epochs: int, **data) -> tuple[dict, object]:
    """descent's components as the pipeline uses them: load, split, build, compile, fit, evaluate on test."""
    cfg = load_config(values={"data.source": source, "model.builder": builder, **data})
    split = split_arrays(load_arrays(source, **_data_args(cfg)), 0.15, 0.15, seed=0)
    pre = fit_array_preprocessor(split.train.features, split.task, split.classes, split.train.target)
    model = build_model(pre.input_shape, pre.n_outputs, split.task, **cfg.model.model_dump(), seed=0)
    compile_model(model, make_optimizer("adam", {"learning_rate": 0.001}), split.task)
    data = Arrays(
        pre.transform(split.train.features),
        pre.encode_target(split.train.target),
        pre.transform(split.validation.features),
        pre.encode_target(split.validation.target),
    )
    fit = fit_variant(model, data, batch_size=32, epochs=epochs, seed=0)
    assert not fit.diverged and len(fit.history) == epochs
    return evaluate(model, pre.transform(split.test.features), pre.encode_target(split.test.target)), model


def _data_args(cfg) -> dict:
    return {"image_size": cfg.data.image_size, "color_mode": cfg.data.color_mode}


@pytest.mark.slow
def test_the_digits_cnn_learns_digits_images():
    scores, model = _train("digits_images", f"{ROOT / 'examples' / 'digits_cnn.py'}:build", epochs=8)
    assert scores["accuracy"] > 0.9  # 270 test images; 0.94-0.96 measured, chance is 0.1
    assert "conv_1 (Conv2D)" in network_summary(model)


@pytest.mark.slow
def test_the_image_cnn_learns_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for colour, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for i in range(30):
            pixels = rng.integers(0, 120, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., channel] += 120  # each class brighter in its own colour
            (tmp_path / "colours" / colour).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "colours" / colour / f"{i}.png")
    source = str(tmp_path / "colours")
    scores, model = _train(source, f"{ROOT / 'examples' / 'image_cnn.py'}:build", 10, **{"data.image_size": [16, 16]})
    assert model.input_shape == (None, 16, 16, 3)
    assert scores["accuracy"] > 0.9  # 14 test images of 3 classes


def test_the_two_branch_network_joins_the_features_to_the_deep_layers():
    model = build_model(13, 3, "classification", **tiny().model.model_dump() | {"builder": TWO_BRANCH}, seed=0)
    assert model.count_params() == (13 * 64 + 64) + (64 * 32 + 32) + (13 + 32) * 3 + 3
    assert model.get_layer("wide_and_deep").output.shape == (None, 13 + 32)


@pytest.mark.slow
def test_a_builder_runs_through_the_train_pipeline_on_a_table(store):
    import mlflow
    from mlflow.tracking import MlflowClient

    from components.data import load_dataset
    from pipelines.train import train

    result = train(tiny(**{"model.builder": TWO_BRANCH, "training.epochs": 3}))
    run = MlflowClient(store).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["model.builder"] == TWO_BRANCH
    assert "grad_norm/deep_1/kernel" in run.data.metrics  # the measurements use the user's layer names
    predictions = mlflow.pyfunc.load_model(result["model_uri"]).predict(load_dataset("iris").features.head(4))
    assert set(predictions["prediction"]) <= {0, 1, 2}
