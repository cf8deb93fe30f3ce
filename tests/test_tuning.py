import math

import numpy as np
import pandas as pd
import pytest

from components.compare import VariantRecord, comparison_table
from components.train import check_stops
from components.trajectory import first_reach, loss_rises, recent_drop, roughness
from components.tuning import (
    beyond_edge,
    log_grid,
    lr_slope,
    range_test_choice,
    range_test_rates,
    rungs,
    scaled_rate,
    successive_halving,
    survivors,
)
from components.tuning_report import inclusion_lines, slope_lines


def test_the_grid_is_logarithmic_around_the_configured_rate():
    assert log_grid(0.01, [0.1, 0.3, 1, 3, 10]) == [0.001, 0.003, 0.01, 0.03, 0.1]


def test_the_grid_grows_past_the_edge_where_the_best_sits_with_the_edge_step():
    grid = [0.001, 0.003, 0.01, 0.03, 0.1]
    assert beyond_edge(grid, 0.1) == pytest.approx(0.333)  # the last step was x3.33
    assert beyond_edge(grid, 0.001) == pytest.approx(0.000333)  # the first step was x3
    assert beyond_edge(grid, 0.01) is None
    assert beyond_edge([0.01], 0.01) is None


def test_rungs_are_the_budget_divided_by_the_rate():
    assert rungs(20, 3, 3) == [2, 7, 20]
    assert rungs(5, 3, 3) == [1, 2, 5]
    assert rungs(1, 3, 3) == [1]
    assert rungs(20, 2, 1) == [20]


def test_survivors_are_the_best_share_and_the_loss_breaks_ties():
    scores = {0.1: (0.9, 0.5), 0.3: (0.9, 0.3), 0.01: (0.5, 1.0), 1.0: (math.nan, math.nan), 0.03: (0.8, 0.6)}
    assert survivors(scores, higher=True, rate=3) == [0.3, 0.1]  # ceil(5 / 3) = 2; equal accuracy, lower loss
    maes = {0.1: (2.0, 1.0), 0.3: (1.0, 1.0), 1.0: (math.inf, math.inf)}
    assert survivors(maes, higher=False, rate=3) == [0.3]


def _peak_at(best):
    """A validation score that peaks at learning rate `best` and rises with the epochs, the same at every rung."""
    trained = {}

    def score(lr, epoch):
        trained[lr] = epoch
        return 1 - (math.log10(lr) - math.log10(best)) ** 2 / 10 - 1 / (epoch + 1), 0.0

    return score, trained


def test_successive_halving_finds_the_best_rate_and_only_the_winner_trains_all_epochs():
    score, trained = _peak_at(0.03)
    search = successive_halving([0.001, 0.003, 0.01, 0.03, 0.1], 20, score, higher=True, rate=3, levels=3)
    assert search.chosen == 0.03 and not search.at_edge
    assert trained == {0.001: 2, 0.003: 2, 0.01: 7, 0.03: 20, 0.1: 2}  # 5 x 2 + 2 x 5 + 13 = 33 epochs
    assert sum(trained.values()) == 31 + 2  # 1.65 trainings for a five-point grid
    stopped = {t.learning_rate: t.stopped_early for t in search.trials}
    assert stopped == {0.001: True, 0.003: True, 0.01: True, 0.03: False, 0.1: True}
    assert all(set(t.scores) <= {2, 7, 20} for t in search.trials)


def test_a_best_on_the_edge_extends_the_grid_and_is_reported_when_it_stays_there():
    score, trained = _peak_at(0.3)
    search = successive_halving([0.001, 0.003, 0.01, 0.03, 0.1], 20, score, higher=True, extensions=2)
    assert search.chosen == 0.333 and not search.at_edge  # 0.1 -> 0.333 -> 1.11, and 0.333 beats 1.11
    assert sorted(trained) == [0.001, 0.003, 0.01, 0.03, 0.1, 0.333, 1.11]
    far, _ = _peak_at(100.0)
    stuck = successive_halving([0.001, 0.003, 0.01, 0.03, 0.1], 6, far, higher=True, extensions=1)
    assert stuck.chosen == 0.333 and stuck.at_edge


def test_a_diverged_trial_never_wins():
    def score(lr, epoch):
        return (math.nan, math.nan) if lr > 0.05 else (lr, 1.0)

    search = successive_halving([0.01, 0.03, 0.1], 6, score, higher=True)
    assert search.chosen == 0.03 and not search.at_edge


def test_the_range_test_picks_the_steepest_fall_of_a_known_curve():
    rates = range_test_rates(1e-6, 10.0, 200)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(10.0)
    x = np.log10(rates)
    # The loss falls fastest at lr = 1e-3 (the logistic's midpoint), bottoms out, then blows up past 1.
    curve = 2.0 - 1.5 / (1 + np.exp(-4 * (x + 3))) + np.where(x > 0, np.expm1(3 * x), 0.0)
    noisy = curve + np.random.default_rng(0).normal(scale=0.02, size=len(curve))
    chosen = range_test_choice(rates, noisy)
    assert 10**-3.15 < chosen < 10**-2.85
    assert range_test_choice(rates, np.full(200, np.nan)) == pytest.approx(1e-6)  # nothing usable: the lowest


def test_scaling_rules_and_the_measured_slope():
    assert scaled_rate(0.1, 32, 256, "linear") == pytest.approx(0.8)
    assert scaled_rate(0.1, 32, 256, "sqrt") == pytest.approx(0.283)
    sizes = [1, 32, 256, 1257]
    assert lr_slope(sizes, [0.01 * (b / 32) ** 0.5 for b in sizes]) == pytest.approx(0.5)
    assert lr_slope(sizes, [0.01 * b for b in sizes]) == pytest.approx(1.0)
    assert math.isnan(lr_slope([32, 32], [0.1, 0.2]))


def test_checks_pause_after_powers_of_two_and_at_every_epoch_end():
    assert check_stops(0, 10) == [1, 2, 4, 8, 10]
    assert check_stops(10, 10) == [6, 10]  # the 16th update falls in the second epoch
    assert check_stops(20, 10) == [10]  # and nothing between 20 and 30 is a power of two
    assert check_stops(0, 1) == [1] and check_stops(7, 1) == [1]  # full batch: every epoch end


def _checks(loss, epochs=None):
    epochs = epochs if epochs is not None else list(range(1, len(loss) + 1))
    return pd.DataFrame({"epoch": epochs, "train_loss": loss, "updates": epochs, "train_seconds": epochs})


def test_trajectory_of_the_training_loss():
    assert loss_rises(_checks([3.0, 2.0, 2.5, 1.0])) == pytest.approx(1 / 3)
    assert loss_rises(_checks([2.0, 2.0, 2.0])) == 0  # frozen weights: never rises
    smooth = _checks(list(np.exp(-0.3 * np.arange(20))))
    assert roughness(smooth) == pytest.approx(0, abs=1e-9)  # any steady exponential fall is smooth on a log scale
    jumpy = _checks([1.0, 2.0] * 10)
    assert roughness(jumpy) == pytest.approx(np.sqrt((2 * np.log(2)) ** 2 / 6))
    assert recent_drop(_checks([8.0, 4.0, 2.0, 1.0])) == pytest.approx(0.5)  # the last quarter: one epoch
    assert recent_drop(_checks([1.0] * 8)) == 0
    mid = _checks([2.0, 1.5, 1.0], epochs=[0.5, 1.0, 2.0])
    assert roughness(mid) != roughness(mid) and loss_rises(mid) == 0  # two epoch ends only: NaN
    reached = first_reach(mid.assign(val_accuracy=[0.5, 0.9, 0.95]), "val_accuracy", True, 0.9)
    assert reached == {"updates": 1.0, "epoch": 1.0, "seconds": 1.0}


def _record(name, val, size=32, baseline=0.1, status="FINISHED", **final):
    history = pd.DataFrame({"epoch": [1, 2], "val_accuracy": [val, val], "val_loss": [1.0, 1.0]})
    params = {"optimizer": name.split("-")[0], "batch_size": str(size), "regime": "minibatch", "seed": "0"}
    params["learning_rate"] = str(final.pop("lr", 0.01))
    final = {"baseline_val_accuracy": baseline, "test_accuracy": val, **final}
    tags = {"descent.lr_chosen_by": "grid", "descent.lr_at_edge": "false"}
    return VariantRecord(name, f"id-{name}", status, params, history, final, tags=tags)


def test_a_variant_that_learned_nothing_is_collapsed_not_finished():
    records = [_record("momentum-bs1", 0.13, size=1), _record("adam-bs1", 0.97, size=1), _record("sgd-bs1", 0.2, 1)]
    table = comparison_table(records, "classification", None, collapse_threshold=0.1).set_index("variant")
    assert table.loc["momentum-bs1", "status"] == "collapsed"  # (0.13 - 0.1) / 0.9 = 0.033 < 0.1
    assert table.loc["momentum-bs1", "val_skill"] == pytest.approx(0.03 / 0.9)
    assert table.loc["sgd-bs1", "status"] == "finished"  # (0.2 - 0.1) / 0.9 = 0.11
    assert table.index[0] == "adam-bs1" and table.index[-1] == "momentum-bs1"  # collapsed ranks last

    def regression(name, mse):
        h = pd.DataFrame({"epoch": [1], "val_mae": [1.0], "val_loss": [mse]})
        final = {"baseline_val_loss": 100.0}
        return VariantRecord(name, name, "FINISHED", {"optimizer": "sgd", "batch_size": "1"}, h, final)

    reg = comparison_table([regression("a", 95.0), regression("b", 50.0)], "regression", None).set_index("variant")
    assert reg.loc["a", "status"] == "collapsed" and reg.loc["a", "val_skill"] == pytest.approx(0.05)  # R^2
    assert reg.loc["b", "status"] == "finished" and reg.loc["b", "val_skill"] == pytest.approx(0.5)


def test_inclusion_check_names_a_general_optimizer_that_loses_to_the_one_it_includes():
    table = comparison_table(
        [_record("momentum-bs32", 0.80), _record("sgd-bs32", 0.95), _record("adam-bs32", 0.945)],
        "classification",
        None,
    )
    text = " ".join(inclusion_lines(table, "val_accuracy", True))
    assert "momentum-bs32 ends below sgd-bs32 (0.8 vs 0.95)" in text
    close = comparison_table([_record("adam-bs32", 0.945), _record("rmsprop-bs32", 0.95)], "classification", None)
    assert inclusion_lines(close, "val_accuracy", True) == []  # half a point: within one point


def test_slope_of_the_chosen_learning_rates_against_batch_size():
    records = [_record(f"sgd-bs{b}", 0.9, size=b, lr=0.01 * b / 32) for b in (8, 32, 128)]
    records.append(_record("sgd-bs512", 0.9, size=512, lr=99.0))
    records[-1].tags["descent.lr_at_edge"] = "true"  # left out: its best may lie further out
    [line] = slope_lines(comparison_table(records, "classification", None))
    assert "sgd 1.00 (batch sizes 8, 32, 128; nearest: linear)" in line
