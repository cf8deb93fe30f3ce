import textwrap

import keras
import numpy as np
import pytest

from components.builder import builder_source, check_builder, network_summary, user_network
from components.errors import InputError
from components.model import build_model
from components.optimizers import make_optimizer
from components.train import compile_model
from pipelines.config import load_config

SHAPE = (8, 8, 1)
NET = """
import keras

def build(input_shape, n_outputs, task):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(n_outputs, activation="softmax" if task == "classification" else None)(x)
    return keras.Model(inputs, outputs)
"""


def _file(tmp_path, body: str = NET, name: str = "net.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _same(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_every_variant_of_a_seed_starts_from_the_same_weights(tmp_path):
    spec = f"{_file(tmp_path)}:build"
    first = user_network(spec, SHAPE, 10, "classification", seed=3)
    compile_model(first, make_optimizer("adam", {"learning_rate": 0.001}), "classification")
    build_model(4, 2, "classification", hidden=[8], activation="relu", dropout=0.0, api="sequential", seed=9)
    keras.backend.clear_session()  # as the train pipeline does before each variant
    second = user_network(spec, SHAPE, 10, "classification", seed=3)
    compile_model(second, make_optimizer("sgd", {"learning_rate": 0.01}), "classification")
    assert _same(first, second)
    assert [w.path for w in first.weights] == [w.path for w in second.weights]  # the same metric names
    assert not _same(first, user_network(spec, SHAPE, 10, "classification", seed=4))


def test_a_builder_through_build_model_and_the_config(tmp_path):
    path = _file(tmp_path)
    cfg = load_config(values={"model.builder": f"{path}:build"})
    model = build_model(SHAPE, 3, "classification", **cfg.model.model_dump(), seed=0)
    assert model.output_shape == (None, 3) and isinstance(model.layers[1], keras.layers.Conv2D)
    regression = build_model(SHAPE, 1, "regression", **cfg.model.model_dump(), seed=0)
    assert regression.output_shape == (None, 1)
    assert builder_source(f"{path}:build") == tmp_path.resolve() / "net.py"


def test_a_module_builder_and_a_sequential_without_input(tmp_path, monkeypatch):
    _file(
        tmp_path,
        "import keras\n\ndef build(shape, n, task):\n    return keras.Sequential([keras.layers.Flatten(), "
        "keras.layers.Dense(n, activation='softmax')])\n",
        name="my_nets.py",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = user_network("my_nets:build", SHAPE, 4, "classification", seed=0)
    assert model.built and model.count_params() == 64 * 4 + 4
    check_builder("my_nets:build")


def _saved(tmp_path) -> tuple[str, keras.Model]:
    model = user_network(f"{_file(tmp_path)}:build", SHAPE, 10, "classification", seed=0)
    model.set_weights([w + 0.5 for w in model.get_weights()])  # unlike any freshly initialised network
    path = tmp_path / "model.keras"
    model.save(path)
    return str(path), model


def test_a_saved_model_gives_its_architecture_with_fresh_weights_per_seed(tmp_path):
    path, saved = _saved(tmp_path)
    a = user_network(path, SHAPE, 10, "classification", seed=1)
    b = user_network(path, SHAPE, 10, "classification", seed=1)
    c = user_network(path, SHAPE, 10, "classification", seed=2)
    assert _same(a, b) and not _same(a, c) and not _same(a, saved)
    assert [type(layer) for layer in a.layers] == [type(layer) for layer in saved.layers]
    kept = user_network(path, SHAPE, 10, "classification", seed=1, keep_weights=True)
    assert _same(kept, saved)
    assert builder_source(path) == (tmp_path / "model.keras").resolve()


def test_network_summary_names_layers_shapes_and_parameters(tmp_path):
    model = user_network(f"{_file(tmp_path)}:build", SHAPE, 10, "classification", seed=0)
    text = network_summary(model)
    assert "Conv2D" in text and "(None, 6, 6, 4)" in text
    assert f"Total params: {model.count_params():,}" in text


def test_the_dense_network_flattens_and_standardises_samples_of_any_shape():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(20, *SHAPE)).astype("float32")
    flat = x.reshape(20, -1)
    stats = (flat.mean(axis=0), flat.var(axis=0))
    for api in ("sequential", "functional"):
        model = build_model(
            SHAPE, 10, "classification", hidden=[16], activation="relu", dropout=0.0, api=api, seed=0, input_stats=stats
        )
        assert model.input_shape == (None, *SHAPE) and model.count_params() == 64 * 16 + 16 + 16 * 10 + 10
        standardised = keras.Model(model.inputs, model.get_layer("standardise").output)(x)
        assert np.allclose(standardised, (flat - stats[0]) / np.sqrt(stats[1]), atol=1e-4)
    table = build_model(5, 2, "classification", hidden=[4], activation="relu", dropout=0.0, api="sequential", seed=0)
    assert [layer.name for layer in table.layers] == ["hidden_1", "output"]  # tables: the network of before


BAD = {
    "raises": (
        "def build(shape, n, task):\n    raise RuntimeError('no GPU here')\n",
        "build",
        "raised RuntimeError: no GPU here: fix the builder (descent calls it as build((8, 8, 1), 10, ",
    ),
    "not a model": (
        "def build(shape, n, task):\n    return {'layers': 3}\n",
        "build",
        "returned dict, not a keras.Model: return keras.Model(inputs, outputs) or keras.Sequential",
    ),
    "3 units for 10 classes": (
        NET.replace("Dense(n_outputs", "Dense(3"),
        "build",
        "outputs shape (3,), but the data has 10 classes: end the network with "
        "keras.layers.Dense(n_outputs, activation='softmax')",
    ),
    "no softmax": (
        NET.replace('"softmax" if task == "classification" else None', "None"),
        "build",
        "does not output class probabilities",
    ),
    "input shape": (
        NET.replace("shape=input_shape", "shape=(28, 28, 1)"),
        "build",
        "takes samples of shape (28, 28, 1) but the data's samples have shape (8, 8, 1): build its input",
    ),
    "two inputs": (
        "import keras\ndef build(shape, n, task):\n    a, b = keras.Input(shape), keras.Input(shape)\n"
        "    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))\n"
        "    return keras.Model([a, b], keras.layers.Dense(n, activation='softmax')(x))\n",
        "build",
        "has 2 inputs and 1 outputs: descent feeds one array of samples",
    ),
    "subclassed": (
        "import keras\nclass Net(keras.Model):\n    def __init__(self):\n        super().__init__()\n"
        "        self.d = keras.layers.Dense(10, activation='softmax')\n"
        "    def call(self, x):\n        return self.d(keras.ops.reshape(x, (-1, 64)))\n"
        "def build(shape, n, task):\n    return Net()\n",
        "build",
        "is a subclassed keras.Model: descent needs a Sequential or functional one",
    ),
    "missing function": (NET, "biuld", "has no function 'biuld' for model.builder: did you mean build? "),
    "syntax": ("def build(shape, n, task)\n    return None\n", "build", "line 1: expected ':': fix the syntax there"),
    "import fails": (
        "import keras\nraise ImportError('needs torchvision')\n",
        "build",
        "raised ImportError on import: needs torchvision: fix the file",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_builders(tmp_path, case):
    body, function, message = BAD[case]
    spec = f"{_file(tmp_path, body)}:{function}"
    with pytest.raises(InputError) as err:
        check_builder(spec)
        user_network(spec, SHAPE, 10, "classification", seed=0)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_regression_needs_one_unit(tmp_path):
    spec = f"{_file(tmp_path, NET.replace('Dense(n_outputs', 'Dense(2'))}:build"
    with pytest.raises(InputError, match=r"outputs shape \(2,\), but regression needs one value per sample: "):
        user_network(spec, SHAPE, 1, "regression", seed=0)


def test_bad_builder_names(tmp_path):
    def error(spec: str, keep_weights: bool = False) -> str:
        with pytest.raises(InputError) as err:
            check_builder(spec, keep_weights)
            user_network(spec, SHAPE, 10, "classification", seed=0, keep_weights=keep_weights)
        return str(err.value)

    assert "model.builder file not found: nets/missing.py: give path/to/file.py:function" in error("nets/missing.py:b")
    assert "is not path/to/file.py:function, package.module:function or path/to/model.keras" in error("net.py")
    assert "cannot import no_such_module for model.builder=no_such_module:build: No module named" in error(
        "no_such_module:build"
    )
    assert "model.builder file not found: missing.keras: give the path of a model saved" in error("missing.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert "as a Keras model: " in error(str(tmp_path / "broken.keras"))
    assert "model.keep_weights=true needs model.builder=path/to/model.keras" in error(f"{_file(tmp_path)}:build", True)
    with pytest.raises(InputError, match="model.keep_weights=true needs a saved model, not the builder function"):
        user_network(f"{_file(tmp_path)}:build", SHAPE, 10, "classification", seed=0, keep_weights=True)
    with pytest.raises(InputError, match="model.keep_weights=true needs model.builder=path/to/model.keras"):
        build_model(
            4, 2, "classification", hidden=[], activation="relu", dropout=0, api="sequential", seed=0, keep_weights=True
        )
