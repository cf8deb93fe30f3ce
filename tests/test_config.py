import pytest

from components.errors import InputError
from pipelines.config import DEFAULT_FILE, flatten, load_config, read_yaml


def test_defaults_come_from_the_yaml_file():
    cfg = load_config()
    tree = read_yaml(DEFAULT_FILE)
    assert (cfg.data.source, cfg.training.optimizer, cfg.training.epochs) == ("digits", "adam", 20)
    assert cfg.training.batch_size == tree["training"]["batch_size"] == 32
    assert cfg.sweep.batch_sizes == ["full", 1, 32, 256] and len(cfg.sweep.optimizers) == 7


def test_seed_words_for_batch_sizes():
    assert load_config(overrides="training.batch_size=batch").training.batch_size == "full"
    assert load_config(overrides="training.batch_size=stochastic").training.batch_size == 1


def test_overrides_string_and_values():
    cfg = load_config(overrides="training.seed=3 model.hidden=[64,32] training.batch_size=full")
    assert (cfg.training.seed, cfg.model.hidden, cfg.training.batch_size) == (3, [64, 32], "full")
    cfg = load_config(values={"training.learning_rate": 1e-3, "data.source": "iris"})
    assert cfg.hyperparameters("adam")["learning_rate"] == 1e-3
    assert cfg.hyperparameters("sgd")["learning_rate"] == 1e-3


def test_alternative_file_is_merged_over_defaults(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("training:\n  epochs: 3\noptimizers:\n  adam: {learning_rate: 0.01}\n")
    cfg = load_config(str(path))
    assert cfg.training.epochs == 3
    assert cfg.optimizers["adam"] == {"learning_rate": 0.01}
    assert cfg.training.optimizer == "adam"


def test_digest_changes_with_the_config():
    assert load_config().digest() == load_config().digest()
    assert load_config().digest() != load_config(overrides="training.seed=1").digest()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("training.epochz=3", "unknown config key training.epochz: did you mean training.epochs?"),
        ("trainig.epochs=3", "unknown config key trainig: did you mean training?"),
        ("training.epochs=abc", "config value training.epochs='abc' is invalid: input should be a valid integer"),
        ("training.epochs=0", "config value training.epochs=0 is invalid: input should be greater than 0"),
        ("training.batch_size=0", "config value training.batch_size=0 is invalid"),
        ("model.api=graph", "config value model.api='graph' is invalid"),
        ("epochs", "override 'epochs' is not key=value"),
        ("training=3", "config value training=3 is invalid"),
        ("training.epochs.x=3", "config key training.epochs is a value, not a section"),
        ("data.target='unclosed", "cannot read overrides"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(InputError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


def test_malformed_yaml_gives_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: 3\n  seed: [1, 2\n")
    with pytest.raises(InputError, match=r"malformed YAML in .*bad.yaml line \d+"):
        load_config(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}
