import math

import numpy as np
import pandas as pd
import pytest

from components.claims import claims_table
from pipelines.study import sweep
from tests.conftest import tiny

UPDATES = "Batch descent makes fewer updates than stochastic descent"
RISES = "Batch descent converges stably; stochastic 'shoots': its training loss rises at fewer checks"
ROUGH = "Batch descent converges stably; stochastic 'shoots': its training loss is smoother"
FASTER = "Stochastic descent converges faster (to the target)"
GENERAL = "Stochastic descent escapes poor optima: it generalizes better (smaller train-test gap)"
SHARPER = "Larger batches end in sharper minima (Keskar et al. 2016)"
RELATION = "Sharper minima show a larger generalization gap"
SIZES = {"batch": 1000, "minibatch": 32, "stochastic": 1}


def _variant(regime, optimizer="adam", seed=0, status="finished", **values):
    row = {
        "variant": f"{optimizer}-{regime}-seed{seed}",
        "group": f"{optimizer}-{regime}",
        "seed": seed,
        "optimizer": optimizer,
        "batch_size": SIZES[regime],
        "regime": regime,
        "status": status,
        "test_rows": 270,
        "test_accuracy": 0.9,
        "final_train_accuracy": 0.95,
        "generalization_gap": 0.05,
        "updates": 1000.0 / SIZES[regime],
    }
    return row | values


def _verdicts(rows, metric="accuracy", higher=True):
    claims = claims_table(pd.DataFrame(rows), metric, higher)
    return dict(zip(claims["claim"], claims["this data"], strict=True)), claims.set_index("claim")


@pytest.mark.parametrize(("stochastic", "verdict"), [(1050, "too close to call"), (1300, "agrees"), (800, "disagrees")])
def test_one_seed_difference_must_exceed_ten_percent(stochastic, verdict):
    rows = [_variant("batch", updates=1000.0), _variant("stochastic", updates=float(stochastic))]
    verdicts, claims = _verdicts(rows)
    assert verdicts[UPDATES] == verdict
    margin = 0.1 * max(1000, stochastic)
    assert claims.loc[UPDATES, "difference needed"] == f"{margin:.4g} (one seed: 10% of the larger)"


def test_with_seeds_the_difference_must_exceed_twice_the_seed_spread():
    batch = [1.0, 3.0, 2.0]  # sd 1
    stochastic = [4.0, 8.0, 6.0]  # sd 2
    rows = [_variant("batch", seed=s, seconds_to_target=v) for s, v in enumerate(batch)]
    rows += [_variant("stochastic", seed=s, seconds_to_target=v) for s, v in enumerate(stochastic)]
    verdicts, claims = _verdicts(rows)
    margin = 2 * math.sqrt(1**2 + 2**2)  # 4.47 > 6 - 2 = 4
    assert claims.loc[FASTER, "difference needed"] == f"{margin:.4g} (2 x seed spread)"
    assert verdicts[FASTER] == "too close to call"
    rows = [r | {"seconds_to_target": r["seconds_to_target"] * (3 if r["regime"] == "stochastic" else 1)} for r in rows]
    assert _verdicts(rows)[0][FASTER] == "disagrees"  # 18 s against 2 s, spread 6: stochastic is slower


def test_diverged_and_collapsed_variants_never_reach_the_target():
    rows = [_variant("batch", optimizer=o, seconds_to_target=6.0) for o in ("adam", "sgd", "rmsprop")]
    rows += [
        _variant("stochastic", optimizer="adam", seconds_to_target=2.0),
        _variant("stochastic", optimizer="sgd", status="diverged", seconds_to_target=1.0),
        _variant("stochastic", optimizer="rmsprop", status="collapsed", seconds_to_target=np.nan),
        _variant("stochastic", optimizer="adagrad", status="failed", seconds_to_target=0.5),
    ]
    verdicts, claims = _verdicts(rows)
    assert claims.loc[FASTER, "stochastic"] == math.inf  # two of three never got there: the median never did
    assert verdicts[FASTER] == "disagrees"
    rows = [r | {"seconds_to_target": np.nan} for r in rows]
    assert _verdicts(rows)[0][FASTER] == "too close to call (neither reached it)"


def test_stable_against_shooting_is_judged_on_the_training_loss_not_on_batch_scatter():
    rows = [
        _variant("batch", loss_noise=0.0, train_loss_rises=0.0, train_loss_roughness=0.002),
        _variant("stochastic", loss_noise=0.7, train_loss_rises=0.05, train_loss_roughness=0.004),
    ]
    verdicts, _ = _verdicts(rows)
    assert verdicts[RISES] == "too close to call"  # 5 points of checks: under the 0.1 that counts
    assert verdicts[ROUGH] == "too close to call"  # 0.002 apart: under the 0.01 that counts
    rows[1] |= {"train_loss_rises": 0.4, "train_loss_roughness": 0.08}
    verdicts, _ = _verdicts(rows)
    assert verdicts[RISES] == verdicts[ROUGH] == "agrees"
    assert _verdicts([{k: v for k, v in r.items() if k != "train_loss_rises"} for r in rows])[0][RISES] == (
        "not measured"
    )


def test_generalization_compares_gaps_against_the_test_rows_noise():
    rows = [
        _variant("batch", test_accuracy=0.9, generalization_gap=0.06),
        _variant("stochastic", test_accuracy=0.95, generalization_gap=0.03),
    ]
    verdicts, claims = _verdicts(rows)
    noise = 2 * math.sqrt(0.9 * 0.1 / 270 + 0.95 * 0.05 / 270)
    needed = f"{noise:.4g} (one seed: 2 x the noise of a score on 270 test rows)"
    assert claims.loc[GENERAL, "difference needed"] == needed
    assert verdicts[GENERAL] == "too close to call"  # 0.03 apart, noise 0.044
    rows[0]["generalization_gap"] = 0.1
    assert _verdicts(rows)[0][GENERAL] == "agrees"


def test_generalization_is_not_comparable_when_a_regime_has_not_fitted_its_rows():
    # the digits case: batch descent under-trained, with the smaller gap
    rows = [
        _variant("batch", final_train_accuracy=0.167, test_accuracy=0.156, generalization_gap=0.011),
        _variant("stochastic", final_train_accuracy=1.0, test_accuracy=0.97, generalization_gap=0.03),
    ]
    verdict = _verdicts(rows)[0][GENERAL]
    assert verdict.startswith("not comparable (batch has not fitted its training rows")
    mae = [
        _variant("batch", final_train_mae=50.0, test_mae=52.0, generalization_gap=2.0),
        _variant("stochastic", final_train_mae=40.0, test_mae=45.0, generalization_gap=5.0),
    ]
    assert _verdicts(mae, "mae", False)[0][GENERAL].startswith("not comparable (batch")  # 50 > 40 / 0.9


def test_sharpness_claims_not_comparable_while_still_learning_and_not_measured_without_columns():
    assert _verdicts([_variant("batch"), _variant("stochastic")])[0][SHARPER] == "not measured"
    assert _verdicts([_variant("batch"), _variant("stochastic")])[0][RELATION] == "not measured"
    rows = [
        _variant("batch", sharpness_top_eigenvalue=80.0, train_loss_recent_drop=0.5),
        _variant("stochastic", sharpness_top_eigenvalue=20.0, train_loss_recent_drop=0.01),
    ]
    assert _verdicts(rows)[0][SHARPER].startswith("not comparable (batch is still learning")
    rows[0]["train_loss_recent_drop"] = 0.05
    assert _verdicts(rows)[0][SHARPER] == "agrees"


@pytest.mark.parametrize(("sign", "verdict"), [(1, "agrees (rho 1.00)"), (-1, "disagrees (rho -1.00)")])
def test_sharper_minima_larger_gap_by_rank_correlation(sign, verdict):
    sharp = [1.0, 2.0, 5.0, 9.0, 20.0, 40.0]
    rows = [
        _variant(["stochastic", "minibatch", "batch"][i % 3], optimizer=f"o{i}", sharpness_top_eigenvalue=s,
                 generalization_gap=0.1 + sign * 0.01 * i, train_loss_recent_drop=0.01)
        for i, s in enumerate(sharp)
    ]  # fmt: skip
    verdicts, claims = _verdicts(rows)
    assert verdicts[RELATION] == verdict
    assert claims.loc[RELATION, "difference needed"] == f"rho beyond ±{2 / math.sqrt(5):.2f} (6 variants levelled off)"
    rows[0]["train_loss_recent_drop"] = rows[1]["train_loss_recent_drop"] = rows[2]["train_loss_recent_drop"] = 0.9
    assert _verdicts(rows)[0][RELATION] == "not comparable (only 3 variants have levelled off)"


def test_frozen_weights_make_no_claim_about_convergence_or_generalization_agree(store):
    # The whole pipeline (training, validation checks, comparison table), at a learning rate that moves nothing.
    grid = {"sweep.optimizers": ["adam"], "sweep.batch_sizes": ["full", 16, 1], "training.epochs": 6}
    frozen = {"optimizers.adam.learning_rate": 1e-12, "sweep.collapse_threshold": 0.1, "sweep.target": 0.3}
    table = sweep(tiny(**grid, **frozen))["table"]
    assert table.set_index("regime").loc["stochastic", "loss_noise"] > 0.1  # the old measure of 'shooting'
    assert (table["status"] == "collapsed").all()
    assert (table["train_loss_rises"] == 0).all() and (table["train_loss_roughness"] < 1e-6).all()
    verdicts, _ = _verdicts(table.to_dict("records"))
    assert verdicts[RISES] == verdicts[ROUGH] == "too close to call"
    assert verdicts[UPDATES] == "agrees"  # counting updates needs no learning
    for claim in (FASTER, GENERAL):
        assert verdicts[claim] != "agrees", (claim, verdicts[claim])
