import numpy as np
import pytest

from components.model import build_model

SPEC = {"hidden": [16, 8], "activation": "relu", "dropout": 0.1, "seed": 0}


@pytest.mark.parametrize(("task", "outputs"), [("classification", 3), ("regression", 1)])
def test_sequential_and_functional_are_the_same_network(task, outputs):
    seq = build_model(5, outputs, task, api="sequential", **SPEC)
    fun = build_model(5, outputs, task, api="functional", **SPEC | {"seed": 1})
    assert seq.count_params() == fun.count_params() == 5 * 16 + 16 + 16 * 8 + 8 + 8 * outputs + outputs
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    assert not np.allclose(seq.predict(x, verbose=0), fun.predict(x, verbose=0))
    fun.set_weights(seq.get_weights())
    assert np.allclose(seq.predict(x, verbose=0), fun.predict(x, verbose=0), atol=1e-6)


def test_output_layer_by_task():
    clf = build_model(4, 3, "classification", api="sequential", **SPEC)
    probs = clf.predict(np.zeros((2, 4), "float32"), verbose=0)
    assert probs.shape == (2, 3)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    reg = build_model(4, 1, "regression", api="functional", **SPEC)
    assert reg.layers[-1].get_config()["activation"] == "linear"


def test_seed_fixes_the_initial_weights():
    a = build_model(4, 2, "classification", api="sequential", **SPEC)
    b = build_model(4, 2, "classification", api="sequential", **SPEC)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
