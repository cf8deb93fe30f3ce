import math

import numpy as np
import pytest

from components.model import build_model
from components.optimizers import make_optimizer
from components.train import Arrays, compile_model, evaluate, fit_variant, loss_noise

LAYER = {"activation": "relu", "dropout": 0.0, "api": "sequential", "seed": 0}


def _arrays(n=60, seed=0) -> Arrays:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return Arrays(x[:40], y[:40], x[40:], y[40:])


def _fit(optimizer="adam", lr=0.01, batch_size=8, epochs=3, seed=0, data=None):
    data = data or _arrays()
    model = build_model(4, 2, "classification", hidden=[8], activation="relu", dropout=0.0, api="sequential", seed=seed)
    compile_model(model, make_optimizer(optimizer, {"learning_rate": lr}), "classification")
    seen = []
    result = fit_variant(model, data, batch_size, epochs, on_epoch=lambda e, m: seen.append((e, m)))
    return model, result, seen


def test_each_epoch_is_recorded_with_updates_and_time():
    _, result, seen = _fit(batch_size=8, epochs=3)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert [m["updates"] for _, m in seen] == [5, 10, 15]  # ceil(40 / 8) updates per epoch
    first = seen[0][1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "updates"} <= set(first)
    assert result.updates == 15 and not result.diverged and result.train_seconds > 0


@pytest.mark.parametrize(("batch_size", "updates"), [(40, 3), (1, 120), (16, 9)])
def test_updates_follow_the_batch_regime(batch_size, updates):
    _, result, _ = _fit(batch_size=batch_size, epochs=3)
    assert result.updates == updates


def test_divergence_stops_training_early():
    data = _arrays()
    wild = Arrays(data.x_train * 1e6, data.y_train, data.x_val, data.y_val)
    _, result, seen = _fit(optimizer="sgd", lr=1e6, batch_size=4, epochs=10, data=wild)
    assert result.diverged
    assert len(seen) < 10
    assert not math.isfinite(seen[-1][1]["loss"])


def test_same_seed_same_training():
    _, a, _ = _fit(seed=1)
    _, b, _ = _fit(seed=1)
    _, c, _ = _fit(seed=2)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_training_learns_and_evaluates():
    model, _, _ = _fit(epochs=30)
    data = _arrays()
    scores = evaluate(model, data.x_val, data.y_val)
    assert set(scores) == {"loss", "accuracy"}
    assert scores["accuracy"] > 0.8


def test_loss_noise_is_larger_for_stochastic_than_for_batch_descent():
    _, stochastic, _ = _fit(batch_size=1, epochs=3)
    _, batch, _ = _fit(batch_size=40, epochs=5)
    assert "loss_noise" not in batch.history[1]  # two updates so far: no trend to measure against yet
    noisy = [h["loss_noise"] for h in stochastic.history]
    calm = [h["loss_noise"] for h in batch.history[2:]]
    assert min(noisy) > 5 * max(calm)


def test_loss_noise_is_the_spread_around_the_trend_not_the_trend():
    rng = np.random.default_rng(0)
    trend = np.linspace(2.0, 0.5, 5000) ** 2  # falling fast, as a loss that is learning
    assert loss_noise(trend) < 1e-3
    assert loss_noise(trend + rng.normal(scale=0.3, size=5000)) == pytest.approx(0.3, rel=0.05)
    assert math.isnan(loss_noise(np.array([1.0, 0.9])))


def test_training_memory_is_measured_and_grows_with_the_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype("float32")
    data = Arrays(x, (x[:, 0] > 0).astype("int32"), x[:10], (x[:10, 0] > 0).astype("int32"))

    def peak(batch_size):
        model = build_model(32, 2, "classification", **LAYER, hidden=[256])
        compile_model(model, make_optimizer("sgd", {"learning_rate": 0.01}), "classification")
        return fit_variant(model, data, batch_size, 1).peak_memory_mb

    small, full = peak(1), peak(3000)
    assert 0 < small < full
    assert full > 3000 * 256 * 4 / 2**20  # at least one full-batch activation of the hidden layer


def test_regression_reports_mean_absolute_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5])).astype("float32")
    data = Arrays(x[:60], y[:60], x[60:], y[60:])
    model = build_model(3, 1, "regression", **LAYER, hidden=[16])
    compile_model(model, make_optimizer("adam", {"learning_rate": 0.05}), "regression")
    result = fit_variant(model, data, 8, 40)
    last = result.history[-1]
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(last)
    predicted = model.predict(x[60:], verbose=0).reshape(-1)
    assert last["val_mae"] == pytest.approx(float(np.abs(predicted - y[60:]).mean()), rel=1e-4)
    assert last["val_mae"] < 0.5 * float(np.abs(y[60:]).mean())


def test_an_aligned_matrix_becomes_a_tensor_without_a_copy():
    from components.preprocess import aligned_empty
    from components.train import as_tensor

    x = aligned_empty((3, 2))
    x[:] = 1.0
    shared, copied = as_tensor(x), as_tensor(np.ones((3, 2), np.float32)[:, :1])  # not C-ordered: copied
    x[0, 0] = 42.0
    assert shared.numpy()[0, 0] == 42.0
    assert copied.numpy().tolist() == [[1.0], [1.0], [1.0]]
    # Read-only (a Ray task's arguments, a memory map): DLPack cannot share it, so it is copied, not refused.
    x.flags.writeable = False
    readonly = as_tensor(x)
    assert readonly.numpy()[0, 0] == 42.0
