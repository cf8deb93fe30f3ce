"""What a sweep's summary says about its learning rates: how they were chosen and at what cost, the measured
link between batch size and learning rate, and pairs of optimizers that look under-tuned (Choi et al. 2019)."""

from __future__ import annotations

import math

import pandas as pd

from components.tuning import SCALING, lr_slope

METHODS = {
    "config": "as configured per optimizer (tuning.method: none): one learning rate for every batch size",
    "grid": "by a grid search per variant around each optimizer's configured rate, with successive halving, "
    "on the validation rows only",
    "range_test": "by a learning-rate range test per variant (Smith 2017), on training rows",
    "scaled": "scaled from a reference batch size by a rule",
}
# (more general, special case): tuned fairly, the general optimizer never loses to the one it includes.
INCLUDES = (("momentum", "sgd"), ("nesterov", "sgd"), ("adam", "rmsprop"))


def tuning_lines(table: pd.DataFrame) -> list[str]:
    """How the learning rates were chosen, what it cost, and which sit on the edge of their grid."""
    if "lr_chosen_by" not in table or table.empty:
        return []
    methods = [m for m in dict.fromkeys(table["lr_chosen_by"].dropna()) if m in METHODS]
    how = "; ".join(f"{METHODS[m]} ({(table['lr_chosen_by'] == m).sum()} runs)" for m in methods)
    lines = [f"\n**Learning rates** chosen {how}."]
    trials = table["trials"].fillna(0).sum()
    if trials:
        tuning = table["tuning_seconds"].fillna(0).sum()
        lines.append(
            f"Finding them took {trials:.0f} trial runs and {tuning:.3g} s of work (training, validation and "
            "tracking of the trials) beyond training at the chosen rates; `trials` and `tuning_seconds` in "
            "comparison.csv give it per variant."
        )
    edge = table.loc[table["lr_at_edge"].fillna(False).astype(bool), "variant"].tolist()
    if edge:
        lines.append(
            f"At the edge of their grid even after extending it (the best may lie further out): {', '.join(edge)}."
        )
    return lines


def slope_lines(table: pd.DataFrame) -> list[str]:
    """Per optimizer: the slope of log(chosen learning rate) against log(batch size), next to the scaling rules."""
    searched = table[table["lr_chosen_by"].isin(["grid", "range_test"]) & ~table["lr_at_edge"].astype(bool)]
    searched = searched[searched["status"].isin(["finished", "collapsed"])].drop_duplicates("group")
    parts = []
    for optimizer, rows in searched.groupby("optimizer", sort=False):
        slope = lr_slope(rows["batch_size"], rows["learning_rate"])
        if math.isfinite(slope):
            sizes = ", ".join(str(b) for b in sorted(rows["batch_size"]))
            nearest = min(SCALING, key=lambda rule: abs(SCALING[rule] - slope))
            parts.append(f"{optimizer} {slope:.2f} (batch sizes {sizes}; nearest: {nearest})")
    if not parts:
        return []
    return [
        "\n**Learning rate against batch size**, measured: the slope of log(best learning rate) against "
        "log(batch size) per optimizer, where the linear rule (Goyal et al. 2017) says 1 and the square-root "
        "rule (Malladi et al. 2022) says 0.5: " + "; ".join(parts) + ". Variants whose best sits on the edge "
        "of the grid are left out."
    ]


def inclusion_lines(table: pd.DataFrame, key: str, higher: bool, spread: pd.Series | None = None) -> list[str]:
    """Pairs where a more general optimizer ends below one it includes, at the same batch size, by more than noise.

    Noise is the two variants' seed spreads combined when there are seeds (`spread`: sd per group), else 1
    point of accuracy (or 1% of the error for regression).
    """
    finals = table[table["status"].isin(["finished", "collapsed"])]
    means = finals.groupby(["optimizer", "batch_size"])[f"final_{key}"].mean()
    groups = finals.drop_duplicates(["optimizer", "batch_size"]).set_index(["optimizer", "batch_size"])["group"]
    found = []
    for general, special in INCLUDES:
        for size in sorted({b for o, b in means.index if o == general}):
            if (special, size) not in means:
                continue
            a, b = means[(general, size)], means[(special, size)]
            noise = math.nan
            if spread is not None and groups[(general, size)] in spread and groups[(special, size)] in spread:
                noise = math.hypot(spread[groups[(general, size)]], spread[groups[(special, size)]])
            if not math.isfinite(noise):  # one seed (or one finished seed): a stated minimum instead
                noise = 0.01 if higher else 0.01 * abs(b)
            worse = b - a if higher else a - b
            if worse > noise:
                found.append(f"{groups[(general, size)]} ends below {groups[(special, size)]} ({a:.4g} vs {b:.4g})")
    if not found:
        return []
    return [
        "\n**Likely under-tuned** (Choi et al. 2019: tuned fairly, a more general optimizer never loses to one it "
        "includes, as momentum and Nesterov include SGD and Adam includes RMSprop): " + "; ".join(found) + "."
    ]
