"""Check the study notes' claims about batch, mini-batch and stochastic descent against a sweep's numbers.

A claim compares one measured quantity between two regimes, as the median over each regime's variants. It says
`agrees` or `disagrees` only when the difference is larger than its noise, else `too close to call`: the noise is
the seed-to-seed spread when the sweep has seeds; with one seed, a stated minimum difference and, for test scores,
the sampling noise of a score on the test rows. `not comparable`: the regimes ended at different stages (one has
not fitted its training rows, or is still learning fast); `not measured`: the sweep lacks the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.report import cell, markdown_table

REGIMES = ("batch", "minibatch", "stochastic")
WORDS = {"batch": "batch", "minibatch": "mini-batch", "stochastic": "stochastic"}
Z = 2.0  # a difference counts when it exceeds twice its standard error (about 95 % for a normal error)
MIN_RELATIVE = 0.10  # with one seed, a difference counts when it is over 10 % of the larger value
FIT_FRACTION = 0.9  # fitted: a regime's median training score within 10 % of the best variant's in the sweep
STILL_LEARNING = 0.2  # train_loss_recent_drop above this: the loss still fell by over 20 % in the last quarter
MIN_CORRELATION = 0.3  # a rank correlation weaker than this says nothing, however many variants
MIN_VARIANTS = 4  # fewer variants than this cannot show a relation
MAE_NOISE = math.sqrt(math.pi / 2 - 1)  # sd / mean of |e|, e normal: an MAE's noise is MAE_NOISE x MAE / sqrt(rows)


@dataclass(frozen=True)
class Claim:
    """A claim of the study notes: `column` is lower for the `low` regime than for the `high` one."""

    text: str
    column: str
    unit: str
    low: str
    high: str
    floor: float = 0.0  # with one seed, the smallest difference that counts, in the column's units
    stage: str = ""  # "fitted" | "levelled": what the two regimes must have done to be comparable; only
    # variants that learned (finished) count then, else collapsed ones too (they ran; they learned nothing)
    never_reached: bool = False  # diverged and collapsed variants count, as never reaching the target


STABLE = "Batch descent converges stably; stochastic 'shoots'"
CLAIMS = (
    Claim("Batch descent makes fewer updates than stochastic descent", "updates", "updates", "batch", "stochastic"),
    Claim(f"{STABLE}: its training loss rises at fewer checks", "train_loss_rises", "share of checks", "batch",
          "stochastic", floor=0.1),
    Claim(f"{STABLE}: its training loss is smoother", "train_loss_roughness", "log-loss scatter", "batch",
          "stochastic", floor=0.01),
    Claim("Batch descent needs more memory than mini-batch", "train_peak_memory_mb", "MiB", "minibatch", "batch",
          floor=1.0),
    Claim("Mini-batch needs more memory than stochastic", "train_peak_memory_mb", "MiB", "stochastic", "minibatch",
          floor=1.0),
    Claim("Stochastic descent cannot use parallel hardware (fewer rows/s)", "samples_per_second", "rows/s",
          "stochastic", "minibatch"),
    Claim("Stochastic descent converges faster (to the target)", "seconds_to_target", "s", "stochastic", "batch",
          never_reached=True),
    Claim("Stochastic descent escapes poor optima: it generalizes better (smaller train-test gap)",
          "generalization_gap", "{metric} gap", "stochastic", "batch", stage="fitted"),
    Claim("Larger batches end in sharper minima (Keskar et al. 2016)", "sharpness_top_eigenvalue",
          "top Hessian eigenvalue", "stochastic", "batch", stage="levelled"),
)  # fmt: skip
RELATION = "Sharper minima show a larger generalization gap"


def claims_table(table: pd.DataFrame, metric: str, higher_is_better: bool) -> pd.DataFrame:
    """One row per claim: the median per regime, the difference that counts, and what this sweep says."""
    seeded = _has_seeds(table)
    rows = [_row(c, table, metric, higher_is_better, seeded) for c in CLAIMS]
    rows.append(_relation(table, metric))
    return pd.DataFrame(rows)


def _row(claim: Claim, table: pd.DataFrame, metric: str, higher: bool, seeded: bool) -> dict:
    used = _variants(table, claim)
    medians = {r: _median(used, claim.column, r) for r in REGIMES}
    a, b = medians[claim.low], medians[claim.high]
    margin, needed = _margin(claim, used, a, b, metric, seeded)
    row = {"claim": claim.text, "measured": claim.unit.format(metric=metric), **{WORDS[r]: medians[r] for r in REGIMES}}
    row["difference needed"] = needed
    if math.isnan(a) or math.isnan(b):
        return row | {"this data": "not measured"}
    apart = _stage(claim, table, metric, higher)
    if apart:
        return row | {"this data": f"not comparable ({apart})"}
    if math.isinf(a) and math.isinf(b):
        return row | {"this data": "too close to call (neither reached it)"}
    difference = b - a  # never reaching the target (inf) is slower than any time
    verdict = "agrees" if difference > margin else "disagrees" if difference < -margin else "too close to call"
    return row | {"this data": verdict}


def _variants(table: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The variants a claim counts: those that ran to the end; for time to the target also those that diverged."""
    if claim.stage:
        return table[table["status"] == "finished"]
    if not claim.never_reached:
        return table[table["status"].isin(["finished", "collapsed"])]
    used = table[table["status"].isin(["finished", "diverged", "collapsed"])].copy()
    if claim.column in used:
        used[claim.column] = used[claim.column].where(used["status"] == "finished").fillna(math.inf)
    return used


def _median(table: pd.DataFrame, column: str, regime: str) -> float:
    if column not in table:
        return math.nan
    values = table.loc[table["regime"] == regime, column].dropna()
    return float(values.median()) if len(values) else math.nan


def _margin(claim: Claim, used: pd.DataFrame, a: float, b: float, metric: str, seeded: bool) -> tuple[float, str]:
    """The smallest difference that counts, and how it was set."""
    if seeded:
        spreads = [_seed_spread(used, claim.column, r) for r in (claim.low, claim.high)]
        if not any(math.isnan(s) for s in spreads):
            margin = Z * math.hypot(*spreads)
            return margin, f"{cell(margin)} ({Z:g} x seed spread)"
    alone = "seed spread unknown" if seeded else "one seed"
    ends = [abs(v) for v in (a, b) if math.isfinite(v)]
    margin, why = MIN_RELATIVE * max(ends, default=0.0), f"{MIN_RELATIVE:.0%} of the larger"
    if claim.floor > margin:
        margin, why = claim.floor, "the least that matters"
    if claim.column == "generalization_gap":
        noise, rows = _score_noise(used, claim, metric)
        if noise > margin:
            margin, why = noise, f"{Z:g} x the noise of a score on {rows:.0f} test rows"
    return margin, f"{cell(margin)} ({alone}: {why})"


def _seed_spread(table: pd.DataFrame, column: str, regime: str) -> float:
    """The median over the regime's variants of the standard deviation of `column` across their seeds."""
    if column not in table:
        return math.nan
    rows = table[(table["regime"] == regime) & np.isfinite(table[column].astype(float))]
    sds = rows.groupby("group")[column].std(ddof=1).dropna()
    return float(sds.median()) if len(sds) else math.nan


def _score_noise(used: pd.DataFrame, claim: Claim, metric: str) -> tuple[float, float]:
    """Z x the standard error of the difference of the two regimes' test scores, from the test rows' count."""
    test = f"test_{metric}"
    if "test_rows" not in used or test not in used:
        return math.nan, math.nan
    rows = float(used["test_rows"].median())
    errors = []
    for regime in (claim.low, claim.high):
        score = _median(used, test, regime)
        if metric == "accuracy":
            errors.append(math.sqrt(score * (1 - score) / rows))  # binomial: each row right or wrong
        else:
            errors.append(MAE_NOISE * score / math.sqrt(rows))
    return Z * math.hypot(*errors), rows


def _stage(claim: Claim, table: pd.DataFrame, metric: str, higher: bool) -> str:
    """Why the two regimes cannot be compared on this claim ('' when they can)."""
    finished = table[table["status"] == "finished"]
    regimes = (claim.low, claim.high)
    if claim.stage == "fitted" and f"final_train_{metric}" in finished:
        train = finished[f"final_train_{metric}"].dropna()
        best = train.max() if higher else train.min()
        for r in regimes:
            score = _median(finished, f"final_train_{metric}", r)
            if (score < FIT_FRACTION * best) if higher else (score > best / FIT_FRACTION):
                return f"{WORDS[r]} has not fitted its training rows: train {metric} {score:.3g}, best {best:.3g}"
    if claim.stage == "levelled" and "train_loss_recent_drop" in finished:
        for r in regimes:
            drop = _median(finished, "train_loss_recent_drop", r)
            if drop > STILL_LEARNING:
                return f"{WORDS[r]} is still learning: its training loss fell {drop:.0%} in the last quarter"
    return ""


def _relation(table: pd.DataFrame, metric: str) -> dict:
    """Across the variants that have levelled off: the rank correlation of sharpness and generalization gap."""
    x, y = "sharpness_top_eigenvalue", "generalization_gap"
    row = {
        "claim": RELATION,
        "measured": "rank correlation (Spearman) of the two",
        **{WORDS[r]: math.nan for r in REGIMES},
    }
    finished = table[table["status"] == "finished"]
    if x not in finished or y not in finished or finished[[x, y]].dropna().empty:
        return row | {"difference needed": "", "this data": "not measured"}
    both = finished.dropna(subset=[x, y])
    if "train_loss_recent_drop" in both:
        both = both[both["train_loss_recent_drop"] <= STILL_LEARNING]
    n = len(both)
    if n < MIN_VARIANTS:
        row["difference needed"] = f"{MIN_VARIANTS} variants that levelled off"
        return row | {"this data": f"not comparable (only {n} variants have levelled off)"}
    needed = max(MIN_CORRELATION, Z / math.sqrt(n - 1))
    row["difference needed"] = f"rho beyond ±{needed:.2f} ({n} variants levelled off)"
    rho = float(both[x].rank().corr(both[y].rank()))
    if math.isnan(rho):  # one of them equal across all variants
        return row | {"this data": "too close to call (no spread)"}
    verdict = "agrees" if rho > needed else "disagrees" if rho < -needed else "too close to call"
    return row | {"this data": f"{verdict} (rho {rho:.2f})"}


def _has_seeds(table: pd.DataFrame) -> bool:
    finished = table[table["status"] == "finished"]
    return "group" in finished and not finished.empty and finished.groupby("group")["seed"].nunique().max() > 1


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as Markdown."""
    shown = claims.rename(columns={"claim": "claim (study notes)"})
    return markdown_table(shown)
