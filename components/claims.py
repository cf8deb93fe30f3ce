"""Check the study notes' claims about batch, mini-batch and stochastic descent against a sweep's numbers.

Each claim compares the median of one measured quantity across the three regimes (over the finished
variants of each regime) and says whether this sweep agrees, disagrees, or cannot tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from components.report import markdown_table

REGIMES = ("batch", "minibatch", "stochastic")
WORDS = {"batch": "batch", "minibatch": "mini-batch", "stochastic": "stochastic"}


@dataclass(frozen=True)
class Claim:
    """A claim of the study notes: `quantity` is lower (or higher) for `low` than for `high`."""

    text: str
    column: str
    unit: str
    low: str  # the regime the claim says has the smaller value
    high: str


CLAIMS = (
    Claim("Batch descent makes fewer updates than stochastic descent", "updates", "updates", "batch", "stochastic"),
    Claim("Batch descent converges stably; stochastic 'shoots'", "loss_noise", "loss noise", "batch", "stochastic"),
    Claim("Batch descent needs more memory than mini-batch", "train_peak_memory_mb", "MiB", "minibatch", "batch"),
    Claim("Mini-batch needs more memory than stochastic", "train_peak_memory_mb", "MiB", "stochastic", "minibatch"),
    Claim(
        "Stochastic descent cannot use parallel hardware (fewer rows/s)",
        "samples_per_second",
        "rows/s",
        "stochastic",
        "minibatch",
    ),
    Claim("Stochastic descent converges faster (to the target)", "seconds_to_target", "s", "stochastic", "batch"),
)


def claims_table(table: pd.DataFrame, test_column: str, higher_is_better: bool) -> pd.DataFrame:
    """One row per claim: the median per regime and whether this sweep agrees with the claim."""
    usable = table[table["status"] == "finished"]
    rows = [_row(c.text, usable, c.column, c.unit, c.low, c.high) for c in CLAIMS]
    # Generalization: the notes say noisy (stochastic, mini-batch) descent escapes poor optima that trap
    # batch descent, so it should score better on rows it never trained on.
    low, high = ("batch", "stochastic") if higher_is_better else ("stochastic", "batch")
    text = "Stochastic descent escapes poor optima: it generalizes better (test score)"
    rows.append(_row(text, usable, test_column, test_column.removeprefix("test_"), low, high))
    return pd.DataFrame(rows)


def _row(text: str, table: pd.DataFrame, column: str, unit: str, low: str, high: str) -> dict:
    medians = {r: _median(table, column, r) for r in REGIMES}
    a, b = medians[low], medians[high]
    if math.isnan(a) or math.isnan(b):
        verdict = "not measured"
    else:
        verdict = "agrees" if a < b else "disagrees" if a > b else "no difference"
    return {"claim": text, "measured": unit, **{WORDS[r]: medians[r] for r in REGIMES}, "this data": verdict}


def _median(table: pd.DataFrame, column: str, regime: str) -> float:
    if column not in table:
        return math.nan
    values = table.loc[table["regime"] == regime, column]
    if column.endswith("_to_target"):
        values = values.fillna(math.inf)  # never reached: slower than any variant that did
    values = values.dropna()
    return float(values.median()) if len(values) else math.nan


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as Markdown."""
    shown = claims.rename(columns={"claim": "claim (study notes)"})
    return markdown_table(shown)
