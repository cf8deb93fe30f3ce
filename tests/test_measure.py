import keras
import numpy as np
import pytest
import tensorflow as tf

from components.measure import GradientProbe, gradients
from components.noise import exact_noise_scale, sampling_factor


def _problem(seed=0, n=400):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=1.0, size=n) > 0).astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, loss, x, y


def _per_example(model, loss, x, y):
    rows = []
    for i in range(len(x)):
        grads = gradients(model, loss, x[i : i + 1], y[i : i + 1])
        rows.append(np.concatenate([tf.reshape(g, [-1]).numpy() for g in grads]))
    return np.array(rows)


def _mean_sq(model, loss, x, y):
    return float(sum(np.sum(g.numpy().astype(np.float64) ** 2) for g in gradients(model, loss, x, y)))


@pytest.fixture(scope="module")
def trained():
    """A model after 5 Adam epochs: its noise scale is several times the 400 rows (the case that exposed the bias)."""
    model, loss, x, y = _problem()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    exact = exact_noise_scale(_per_example(model, loss, x, y))
    assert exact > len(x) / 2
    return model, loss, x, y, exact


def _probe(model, loss, x, y, **kwargs):
    probe = GradientProbe(loss, x, y, **kwargs)
    probe.set_model(model)
    return probe


def test_exact_method_is_the_per_example_value(trained):
    model, loss, x, y, exact = trained
    for memory_mb in (256.0, 1e-4):  # one vectorised pass, or one row per pass: the same answer
        result = _probe(model, loss, x, y, memory_mb=memory_mb).measure_noise(exact=True)
        assert result.value == pytest.approx(exact, rel=1e-3)
        assert result.se == 0.0


def test_two_batch_estimate_is_within_20_percent_and_repeated_probes_agree(trained):
    model, loss, x, y, exact = trained
    mean_sq = _mean_sq(model, loss, x, y)
    results = [_probe(model, loss, x, y, seed=s).measure_noise(exact=False) for s in range(10)]
    values = np.array([r.value for r in results])
    assert np.all(np.abs(values / exact - 1) < 0.2), (values, exact)
    assert values.max() / values.min() < 1.25
    assert all(0 < r.se < 0.2 * exact for r in results)
    # the paper's with-replacement formulas on the same batches (drawn without replacement): |G|^2 comes out
    # negative, so the noise scale could never be measured here
    n, small = len(x), np.mean([r.trace * sampling_factor(8, len(x)) + r.gradient_sq for r in results])
    assert (n * mean_sq - 8 * small) / (n - 8) < 0


def test_probe_reports_layer_norms_and_noise_scale_without_touching_training():
    model, loss, x, y = _problem()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    seen = []
    probe = GradientProbe(loss, x, y, lambda epoch, m: seen.append((epoch, m)), epochs=5)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[probe])
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5]
    record = seen[-1][1]
    layers = {k for k in record if k.startswith("grad_norm/")}
    assert len(layers) == 4  # two Dense layers: kernel and bias each
    assert all(m[k] > 0 for _, m in seen for k in layers)
    assert all(record[k.replace("grad_norm", "update_norm")] > 0 for k in layers)  # SGD moved every weight
    # the noise scale at epochs 1, 2, 4 and the last: estimated, then exact at the last
    noise = {e: m for e, m in seen if "noise_scale" in m}
    assert list(noise) == [1, 2, 4, 5]
    assert not any(k.startswith("noise_scale") for k in seen[2][1])
    assert all(m["noise_scale"] > 0 and m["noise_scale_unmeasured"] == 0 for m in noise.values())
    assert all(noise[e]["noise_scale_se"] > 0 for e in (1, 2, 4)) and record["noise_scale_se"] == 0
    assert record["noise_scale"] == pytest.approx(exact_noise_scale(_per_example(model, loss, x, y)), rel=1e-3)


def test_auto_estimates_when_the_per_example_gradients_do_not_fit():
    model, loss, x, y = _problem()
    probe = _probe(model, loss, x, y, epochs=1, memory_mb=0.01)
    assert not probe.exact_at(0)
    assert _probe(model, loss, x, y, epochs=1).exact_at(0)
    assert not _probe(model, loss, x, y, epochs=2).exact_at(0)
    assert _probe(model, loss, x, y, method="exact").exact_at(0)
    assert not _probe(model, loss, x, y, method="two_batch", epochs=1).exact_at(0)


def test_an_unmeasurable_epoch_is_counted_not_filled_in():
    # every row twice with opposite targets and the weights at zero: the mean gradient is exactly 0
    x = np.repeat(np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), 2, axis=0)
    y = np.tile(np.array([1.0, -1.0], dtype="float32"), 8)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mean_squared_error")
    seen = []
    probe = GradientProbe(keras.losses.get("mean_squared_error"), x, y, lambda e, m: seen.append(m), small=2)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[probe])
    assert [m["noise_scale_unmeasured"] for m in seen] == [1, 2]
    assert not any("noise_scale" in m or "noise_scale_se" in m for m in seen)
    assert "resolve" in probe.last.reason


def test_loss_functions_and_loss_objects_give_the_same_mean_gradient():
    model, loss, x, y = _problem()
    per_row = keras.losses.get("sparse_categorical_crossentropy")  # returns one loss per row
    probs = keras.Sequential([model, keras.layers.Softmax()])
    a = gradients(probs, per_row, x[:64], y[:64])
    b = gradients(model, loss, x[:64], y[:64])
    assert all(np.allclose(u.numpy(), v.numpy(), atol=1e-5) for u, v in zip(a, b, strict=True))


def test_models_of_one_architecture_share_the_traced_graphs_and_keep_their_own_weights():
    probes, norms = [], []
    for seed in (0, 1):
        keras.backend.clear_session()  # as a sweep does between variants: the same layer names again
        model, loss, x, y = _problem(seed=seed)
        probe = _probe(model, loss, x, y, epochs=1)
        probe.on_epoch_begin(0)
        record = {}
        probe.on_epoch_end(0, record)
        probes.append(probe)
        direct = [np.linalg.norm(g.numpy()) for g in gradients(model, loss, x, y)]
        norms.append(direct)
        assert [record[k] for k in record if k.startswith("grad_norm/")] == pytest.approx(direct, rel=1e-4)
        assert record["noise_scale"] == pytest.approx(exact_noise_scale(_per_example(model, loss, x, y)), rel=1e-3)
    assert probes[0]._compiled is probes[1]._compiled
    assert norms[0] != pytest.approx(norms[1], rel=1e-2)  # different weights, different gradients
