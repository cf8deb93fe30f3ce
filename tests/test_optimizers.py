import keras
import pytest

from components.errors import InputError
from components.optimizers import REGISTRY, batch_regime, make_optimizer
from pipelines.config import load_config

SEED_NAMES = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_optimizer_builds_from_its_config(name):
    cfg = load_config()
    opt = make_optimizer(name, cfg.hyperparameters(name))
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert float(opt.learning_rate) == pytest.approx(cfg.optimizers[name]["learning_rate"])


def test_momentum_and_nesterov_are_sgd_with_velocity():
    cfg = load_config()
    momentum = make_optimizer("momentum", cfg.hyperparameters("momentum"))
    nesterov = make_optimizer("nesterov", cfg.hyperparameters("nesterov"))
    plain = make_optimizer("sgd", cfg.hyperparameters("sgd"))
    assert (momentum.momentum, momentum.nesterov) == (0.9, False)
    assert (nesterov.momentum, nesterov.nesterov) == (0.9, True)
    assert plain.momentum == 0.0
    assert set(SEED_NAMES) <= set(REGISTRY)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("adamm", {"learning_rate": 0.1}, "unknown optimizer 'adamm': choose one of sgd, momentum"),
        ("adam", {"learning_rate": 0.0}, "learning rate of 'adam' must be positive, got 0.0"),
        ("adam", {"learning_rate": -1}, "learning rate of 'adam' must be positive"),
        ("adam", {"learning_rate": 0.1, "momentum": 0.9}, "optimizer 'adam' has no hyperparameter 'momentum'"),
        ("momentum", {"learning_rate": 0.1, "momentum": 0.0}, "needs momentum in (0, 1)"),
    ],
)
def test_bad_optimizer_settings(name, params, message):
    with pytest.raises(InputError) as err:
        make_optimizer(name, params)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("size", "regime", "updates", "label"),
    [
        ("full", "batch", 1, "full"),
        (1, "stochastic", 100, "bs1"),
        (32, "minibatch", 4, "bs32"),
        (100, "batch", 1, "bs100"),
    ],
)
def test_batch_regimes_in_the_seed_vocabulary(size, regime, updates, label):
    r = batch_regime(size, 100)
    assert (r.regime, r.updates_per_epoch, r.label) == (regime, updates, label)


@pytest.mark.parametrize(("size", "message"), [(0, "must be a positive integer"), (101, "larger than the 100")])
def test_bad_batch_sizes(size, message):
    with pytest.raises(InputError, match=message):
        batch_regime(size, 100)
