import keras
import numpy as np
import tensorflow as tf

from components.measure import GradientProbe, exact_noise_scale, gradients, mean_squared_norm, noise_scale


def _problem(seed=0, n=400):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=1.0, size=n) > 0).astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, loss, x, y


def _per_example(model, loss, x, y):
    rows = []
    for i in range(len(x)):
        grads = gradients(model, loss, x[i : i + 1], y[i : i + 1])
        rows.append(np.concatenate([tf.reshape(g, [-1]).numpy() for g in grads]))
    return np.array(rows)


def test_noise_scale_estimator_matches_per_example_gradients_within_20_percent():
    model, loss, x, y = _problem()
    exact = exact_noise_scale(_per_example(model, loss, x, y))
    rng = np.random.default_rng(1)
    small_sq = mean_squared_norm(model, loss, x, y, 4, 300, rng)
    big_sq = mean_squared_norm(model, loss, x, y, 100, 300, rng)
    g2, trace = noise_scale(small_sq, big_sq, 4, 100)
    assert abs(trace / g2 - exact) / exact < 0.2, (trace / g2, exact)


def test_loss_functions_and_loss_objects_give_the_same_mean_gradient():
    model, loss, x, y = _problem()
    per_row = keras.losses.get("sparse_categorical_crossentropy")  # returns one loss per row
    probs = keras.Sequential([model, keras.layers.Softmax()])
    a = gradients(probs, per_row, x[:64], y[:64])
    b = gradients(model, loss, x[:64], y[:64])
    assert all(np.allclose(u.numpy(), v.numpy(), atol=1e-5) for u, v in zip(a, b, strict=True))


def test_noise_scale_formula_on_known_moments():
    # |G|^2 = 2, tr(Sigma) = 10: E|g_b|^2 = |G|^2 + tr(Sigma)/b
    small_sq, big_sq = 2 + 10 / 4, 2 + 10 / 64
    g2, trace = noise_scale(small_sq, big_sq, 4, 64)
    assert np.isclose(g2, 2) and np.isclose(trace, 10)


def test_probe_reports_layer_norms_and_noise_scale_without_touching_training():
    model, loss, x, y = _problem()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    seen = []
    probe = GradientProbe(loss, x, y, lambda epoch, m: seen.append((epoch, m)), small=8, big=128, draws=3)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[probe])
    assert [e for e, _ in seen] == [1, 2]
    record = seen[-1][1]
    layers = {k for k in record if k.startswith("grad_norm/")}
    assert len(layers) == 4  # two Dense layers: kernel and bias each
    assert all(record[k] > 0 for k in layers)
    assert all(record[k.replace("grad_norm", "update_norm")] > 0 for k in layers)  # SGD moved every weight
    assert record["noise_scale"] > 0
