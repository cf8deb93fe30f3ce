import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.datasets import load_diabetes

from components import sharpness
from components.compare import VariantRecord, comparison_table, plot_comparison
from components.errors import InputError
from components.sharpness import (
    SharpnessProbe,
    SharpnessSettings,
    epsilon_sharpness,
    measure_sharpness,
    top_eigenvalue,
)
from components.train import Arrays, compile_model, fit_variant
from pipelines.config import load_config

DEFAULTS = SharpnessSettings.from_measure(load_config().measure, seed=0)
EXACT = dataclasses.replace(DEFAULTS, tolerance=1e-7, iterations=2000)  # run to convergence


def _diabetes_linear():
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    y = ((y - y.mean()) / y.std()).astype("float32")  # the standardised target training uses
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])  # model.hidden=[]
    return model, x, y


def _small_network(seed=0, n=200):
    """43 weights, a weight penalty and dropout, trained a little: small enough to form its Hessian."""
    keras.backend.clear_session()  # as the pipeline does before each variant: same layer names, same architecture
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype("int32") + (x[:, 3] > 1).astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.05)),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    return model, x, y


@pytest.fixture(scope="module")
def small():
    """One trained small network for the tests that only read it."""
    return _small_network()


def _explicit_hessian(model, x, y):
    """The whole Hessian of mean per-row loss + penalties, by tf.GradientTape.jacobian of the gradient."""
    weights = model.trainable_variables
    per_row = keras.losses.get("sparse_categorical_crossentropy")
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = tf.reduce_mean(per_row(y, model(x, training=False))) + tf.add_n(model.losses)
        grad = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(value, weights)], axis=0)
    columns = [tf.reshape(outer.jacobian(grad, w), [grad.shape[0], -1]) for w in weights]
    hessian = tf.concat(columns, axis=1).numpy().astype(np.float64)
    return (hessian + hessian.T) / 2


def _quadratic(c, w0=2.0, n=16):
    """A linear model without bias whose mean squared error is exactly c (w - w0)^2, at its minimum w = w0."""
    x = np.full((n, 1), np.sqrt(c), dtype="float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.layers[0].kernel.assign([[w0]])
    return model, x, (x[:, 0] * w0).astype("float32")


def test_linear_regression_top_eigenvalue_within_2_percent_of_numpy():
    model, x, y = _diabetes_linear()
    rows = np.hstack([x, np.ones((len(x), 1), "float32")]).astype(np.float64)
    exact = np.linalg.eigvalsh(2 * rows.T @ rows / len(x)).max()
    assert 7.5 < exact < 8.5  # FACTS.md: about 8.0 for standardised diabetes features
    measured = top_eigenvalue(model, "mean_squared_error", x, y, DEFAULTS)
    assert abs(measured - exact) / exact < 0.02, (measured, exact)


def test_small_network_top_eigenvalue_within_5_percent_of_the_explicit_hessian(small):
    model, x, y = small
    assert sum(int(np.prod(w.shape)) for w in model.trainable_variables) == 43
    exact = np.linalg.eigvalsh(_explicit_hessian(model, x, y)).max()
    per_row = keras.losses.get("sparse_categorical_crossentropy")
    assert abs(top_eigenvalue(model, per_row, x, y, DEFAULTS) - exact) / exact < 0.05
    # Run to convergence, it is the same number: the loss is the one training optimises, penalty included.
    assert top_eigenvalue(model, per_row, x, y, EXACT) == pytest.approx(exact, rel=1e-3)


def test_a_negative_dominant_eigenvalue_is_not_reported_as_the_top_one():
    # loss s * prediction^2, s = -3 on every third row, else +1: H = 2/n sum s_i [x_i 1][x_i 1]^T, indefinite.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype("float32")
    s = np.where(np.arange(60) % 3 == 0, -3.0, 1.0).astype("float32")
    rows = np.hstack([x, np.ones((60, 1))]).astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(2 * (rows * s[:, None]).T @ rows / 60)
    assert eigenvalues[0] < 0 < eigenvalues[-1] < -eigenvalues[0]  # plain power iteration would find the negative
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])

    def weighted_square(weight, predicted):
        return weight * tf.square(predicted[:, 0])

    measured = top_eigenvalue(model, weighted_square, x, s, EXACT)
    assert measured == pytest.approx(eigenvalues[-1], rel=0.02)


def test_flat_loss_has_zero_sharpness():
    # Dead ReLUs (zero kernel, bias -10): the output is 0 for every weight in the box, the loss log(3) throughout.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype("float32")
    y = rng.integers(0, 3, 50).astype("int32")
    hidden = keras.layers.Dense(6, activation="relu", kernel_initializer="zeros")
    model = keras.Sequential([keras.Input((4,)), hidden, keras.layers.Dense(3, use_bias=False, activation="softmax")])
    hidden.bias.assign(np.full(6, -10.0, "float32"))
    measured = measure_sharpness(model, "sparse_categorical_crossentropy", x, y, DEFAULTS)
    assert measured == {"sharpness_top_eigenvalue": 0.0, "sharpness_epsilon": 0.0}


@pytest.mark.parametrize("c", [1.0, 10.0, 100.0])
def test_quadratic_loss_gives_the_exact_curvature_and_epsilon_sharpness(c):
    model, x, y = _quadratic(c, w0=2.0)
    assert top_eigenvalue(model, "mean_squared_error", x, y, DEFAULTS) == pytest.approx(2 * c, rel=1e-4)
    # At the minimum the loss is 0; the box is |delta| <= eps (|2| + 1), the highest loss in it c (3 eps)^2.
    eps = DEFAULTS.epsilon
    expected = 100 * c * (3 * eps) ** 2 / (1 + 0)
    assert epsilon_sharpness(model, "mean_squared_error", x, y, DEFAULTS) == pytest.approx(expected, rel=1e-3)


def test_epsilon_sharpness_grows_with_curvature():
    values = []
    for c in (0.5, 2.0, 8.0, 32.0):
        model, x, y = _quadratic(c)
        values.append(epsilon_sharpness(model, "mean_squared_error", x, y, DEFAULTS))
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_weights_are_unchanged_after_measuring(small):
    model, x, y = small
    before = [w.numpy().copy() for w in model.weights]
    measure_sharpness(model, "sparse_categorical_crossentropy", x, y, DEFAULTS)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))


def test_chunks_and_loss_forms_give_the_same_numbers(small):
    model, x, y = small
    whole = measure_sharpness(model, "sparse_categorical_crossentropy", x, y, EXACT)
    chunked = measure_sharpness(
        model, "sparse_categorical_crossentropy", x, y, dataclasses.replace(EXACT, chunk_rows=7)
    )
    as_object = measure_sharpness(model, keras.losses.SparseCategoricalCrossentropy(), x, y, EXACT)
    for key, value in whole.items():
        assert value > 0
        assert chunked[key] == pytest.approx(value, rel=1e-4)
        assert as_object[key] == pytest.approx(value, rel=1e-4)


def test_models_of_one_architecture_share_the_graphs_but_not_the_weights():
    sharpness._COMPILED.clear()
    first, x, y = _small_network(seed=0)
    second, _, _ = _small_network(seed=1)
    a = measure_sharpness(first, "sparse_categorical_crossentropy", x, y, EXACT)
    b = measure_sharpness(second, "sparse_categorical_crossentropy", x, y, EXACT)
    (compiled,) = sharpness._COMPILED.values()
    assert compiled.power.experimental_get_tracing_count() == 1
    assert compiled.ascend.experimental_get_tracing_count() == 1
    exact = np.linalg.eigvalsh(_explicit_hessian(second, x, y)).max()
    assert b["sharpness_top_eigenvalue"] == pytest.approx(exact, rel=1e-3)  # the second model's own weights
    assert a["sharpness_top_eigenvalue"] != pytest.approx(b["sharpness_top_eigenvalue"], rel=1e-3)


def test_a_network_with_ops_xla_lacks_is_measured():
    sharpness._COMPILED.clear()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype("float32"), rng.normal(size=50).astype("float32")

    def with_a_string_op(t):  # XLA has no string ops; times 0, so the network stays the linear one
        return t + 0.0 * tf.stop_gradient(tf.strings.to_number(tf.strings.as_string(t)))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(with_a_string_op), keras.layers.Dense(1)])
    rows = np.hstack([x, np.ones((50, 1))]).astype(np.float64)
    exact = np.linalg.eigvalsh(2 * rows.T @ rows / 50).max()
    assert top_eigenvalue(model, "mean_squared_error", x, y, EXACT) == pytest.approx(exact, rel=1e-4)


def test_probe_adds_both_numbers_to_every_epoch():
    model, x, y = _small_network()
    compile_model(model, keras.optimizers.SGD(0.01), "classification")
    probe = SharpnessProbe("sparse_categorical_crossentropy", x[:64], y[:64], DEFAULTS)
    fit = fit_variant(model, Arrays(x, y, x[:20], y[:20]), batch_size=32, epochs=2, callbacks=[probe])
    assert len(fit.history) == 2
    last = fit.history[-1]
    assert last["sharpness_top_eigenvalue"] > 0 and last["sharpness_epsilon"] > 0
    again = measure_sharpness(model, "sparse_categorical_crossentropy", x[:64], y[:64], DEFAULTS)
    assert all(last[key] == pytest.approx(value, rel=1e-5) for key, value in again.items())


def _sweep_records():
    records, rows = [], []
    for optimizer in ("adam", "sgd"):
        for size, regime in ((1, "stochastic"), (32, "minibatch"), (512, "batch")):
            history = pd.DataFrame(
                {
                    "epoch": [1, 2],
                    "val_accuracy": [0.5, 0.8],
                    "val_loss": [1.0, 0.5],
                    "updates": [1, 2],
                    "seconds": [1, 2],
                }
            )
            params = {"optimizer": optimizer, "batch_size": str(size), "regime": regime}
            name = f"{optimizer}-bs{size}"
            records.append(VariantRecord(name, name, "FINISHED", params, history, {"test_accuracy": 0.8}))
            rows.append({"sharpness_top_eigenvalue": 0.01 * size, "generalization_gap": 0.001 * np.log(size)})
    table = comparison_table(records, "classification", None)
    return records, table.assign(
        **pd.DataFrame(rows, index=[r.name for r in records]).loc[table["variant"]].to_dict("list")
    )


def test_sharpness_plots_are_written_when_measured(tmp_path):
    records, table = _sweep_records()
    table.loc[table["variant"] == "sgd-bs1", "status"] = "collapsed"  # drawn hollow, off the lines
    names = {p.name: p for p in plot_comparison(records, table, "classification", tmp_path)}
    for name in ("sharpness_by_batch_size.png", "gap_vs_sharpness.png"):
        assert names[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert names[name].stat().st_size > 10_000


@pytest.mark.parametrize("change", ["absent", "empty"])
def test_sharpness_plots_are_skipped_without_sharpness(tmp_path, change):
    records, table = _sweep_records()
    if change == "absent":
        table = table.drop(columns=["sharpness_top_eigenvalue", "generalization_gap"])
    else:
        table["sharpness_top_eigenvalue"] = np.nan
    names = [p.name for p in plot_comparison(records, table, "classification", tmp_path)]
    assert "sharpness_by_batch_size.png" not in names and "gap_vs_sharpness.png" not in names
    assert "updates_to_target.png" in names


@pytest.mark.parametrize(
    "override",
    ["measure.sharpness_tolerance=0", "measure.sharpness_iterations=0", "measure.sharpness_epsilon=0",
     "measure.sharpness_steps=0", "measure.sharpness=maybe"],
)  # fmt: skip
def test_sharpness_settings_are_checked(override):
    key = override.split("=")[0]
    with pytest.raises(InputError, match=f"config value {key}="):
        load_config(overrides=override)
