import pytest

from components.errors import InputError
from components.sweep import Variant, expand_sweep, parse_batch_size


def test_default_grid_is_28_named_variants():
    optimizers = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"]
    variants = expand_sweep(optimizers, ["full", 1, 32, 256], n_train=1000)
    names = [v.name(1000) for v in variants]
    assert len(names) == 28 == len(set(names))
    assert names[:4] == ["sgd-full", "sgd-bs1", "sgd-bs32", "sgd-bs256"]
    assert "momentum-full" in names and "adam-bs32" in names


def test_seed_vocabulary_aliases():
    assert parse_batch_size("batch") == parse_batch_size("full") == "full"
    assert parse_batch_size("stochastic") == parse_batch_size("1") == 1
    assert parse_batch_size(" 64 ") == 64


def test_the_same_variant_runs_once():
    variants = expand_sweep(["adam"], ["full", "batch", 1, "stochastic"], n_train=100)
    assert variants == [Variant("adam", "full"), Variant("adam", 1)]


@pytest.mark.parametrize(
    ("optimizers", "sizes", "message"),
    [
        ([], [1], "the sweep is empty"),
        (["adam"], ["huge"], "batch size 'huge' is not a number"),
        (["adam"], [512], "batch size 512 is larger than the 100 training rows"),
        (["adam"], [0], "batch size must be a positive integer"),
    ],
)
def test_bad_grids(optimizers, sizes, message):
    with pytest.raises(InputError) as err:
        expand_sweep(optimizers, sizes, n_train=100)
    assert message in str(err.value)
