import math

import numpy as np
import pandas as pd
import pytest

from components.compare import CONFIDENCE, paired_interval, seed_table, seed_verdict

T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (printed tables: 4.303)


def _table(values: dict[str, list[float | None]], task: str = "classification") -> pd.DataFrame:
    key = "final_val_accuracy" if task == "classification" else "final_val_mae"
    rows = []
    for group, finals in values.items():
        for seed, value in enumerate(finals):
            rows.append(
                {
                    "variant": f"{group}-seed{seed}",
                    "group": group,
                    "seed": seed,
                    "status": "finished" if value is not None else "diverged",
                    key: value if value is not None else np.nan,
                    "test_" + key.removeprefix("final_val_"): value,
                    "train_seconds": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_a_constant_paired_lead_is_a_clear_winner_that_unpaired_spreads_would_hide():
    # the runner-up trails by exactly one point on every seed; across seeds both vary by two points
    table = _table({"adam-bs32": [0.90, 0.92, 0.88], "rmsprop-bs32": [0.89, 0.91, 0.87]})
    verdict = seed_verdict(table, "classification")
    assert verdict.startswith("adam-bs32 leads rmsprop-bs32 by 1 points on average over 3 paired seeds")
    assert verdict.endswith(": a clear winner (the interval excludes 0).")


def test_a_known_paired_difference_gives_the_t_interval():
    table = _table({"adam-bs32": [0.92, 0.93, 0.94], "sgd-bs32": [0.91, 0.91, 0.91]})  # differences 1, 2, 3 points
    mean, low, high = paired_interval(np.array([0.01, 0.02, 0.03]))
    half = T_975_2 * 0.01 / math.sqrt(3)  # sd of 1, 2, 3 points is 1 point
    assert (mean, low, high) == pytest.approx((0.02, 0.02 - half, 0.02 + half))
    assert low < 0 < high
    verdict = seed_verdict(table, "classification")
    assert verdict == (
        f"No clear winner: adam-bs32 leads sgd-bs32 by 2 points on average over 3 paired seeds "
        f"(95% interval {100 * (0.02 - half):.2g} to {100 * (0.02 + half):.2g}), an interval that includes 0."
    )


def test_regression_leads_are_lower_errors():
    table = _table({"adam-bs32": [3.0, 3.1, 2.9], "sgd-bs32": [4.0, 4.1, 3.9]}, task="regression")
    verdict = seed_verdict(table, "regression")
    assert verdict.startswith("adam-bs32 leads sgd-bs32 by 1 mae on average over 3 paired seeds")
    assert "a clear winner" in verdict


def test_no_verdict_without_two_finished_seeds_each():
    table = _table({"adam-bs32": [0.95, 0.96, 0.94], "sgd-bs32": [0.90, None, None]})
    seeds = seed_table(table, "classification")
    assert math.isnan(seeds.set_index("variant").loc["sgd-bs32", "sd_val_accuracy"])  # not 0
    assert seed_verdict(table, "classification") == (
        "No verdict: sgd-bs32 (1) finished fewer than two seeds; a comparison across seeds needs two each."
    )
    table = _table({"adam-bs32": [0.95, 0.96, None], "sgd-bs32": [None, 0.90, 0.91]})
    assert seed_verdict(table, "classification") == (
        "No verdict: adam-bs32 and sgd-bs32 finished fewer than two seeds in common."
    )


@pytest.mark.parametrize("shared_sd", [0.02, 0.0])  # results correlated through the shared seed, or independent
def test_equal_variants_make_a_false_clear_winner_at_most_as_often_as_the_confidence_allows(shared_sd):
    rng = np.random.default_rng(0)
    draws, seeds = 20000, 3
    shared = rng.normal(0.9, shared_sd, size=(draws, seeds))
    a = shared + rng.normal(0, 0.005, size=(draws, seeds))
    b = shared + rng.normal(0, 0.005, size=(draws, seeds))
    winners = 0
    for x, y in zip(a, b, strict=True):
        best, second = (x, y) if x.mean() >= y.mean() else (y, x)  # the best by mean, as the seed table ranks
        winners += paired_interval(best - second)[1] > 0
    rate, noise = winners / draws, math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / draws)
    assert rate <= (1 - CONFIDENCE) + 2 * noise, rate
    if shared_sd == 0:  # the rule it replaces (lead > 2 x unpaired standard error) calls twice as many
        lead = np.abs(a.mean(1) - b.mean(1))
        unpaired = np.sqrt(a.var(1, ddof=1) / seeds + b.var(1, ddof=1) / seeds)
        assert np.mean(lead > 2 * unpaired) > 2 * (1 - CONFIDENCE)
    # and through the whole verdict, on a few of the same draws
    tables = [_table({"a-bs32": list(x), "b-bs32": list(y)}) for x, y in zip(a[:300], b[:300], strict=True)]
    called = np.mean(["a clear winner" in seed_verdict(t, "classification") for t in tables])
    assert called <= 0.1
