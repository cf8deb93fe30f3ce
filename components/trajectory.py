"""Read a variant's path from its validation checks (after 2^k updates and at every epoch's end).

Each check holds the updates and training seconds so far, and the loss and metric of the weights at that
moment on the validation rows and on a fixed sample of training rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def first_reach(checks: pd.DataFrame, key: str, higher: bool, target: float | None) -> dict[str, float]:
    """The first check at which `key` reached `target`: its updates, (fractional) epoch and training seconds."""
    if target is None or key not in checks or checks.empty:
        return {}
    hit = checks[checks[key] >= target] if higher else checks[checks[key] <= target]
    if hit.empty:
        return {}
    row = hit.iloc[0]
    return {"updates": float(row["updates"]), "epoch": float(row["epoch"]), "seconds": float(row["train_seconds"])}


def loss_rises(checks: pd.DataFrame) -> float:
    """Share of consecutive checks at which the training loss (fixed sample) rose: 0 for a steady descent."""
    loss = _column(checks, "train_loss")
    if len(loss) < 2:
        return math.nan
    return float(np.mean(np.diff(loss) > 0))


def roughness(checks: pd.DataFrame) -> float:
    """Scatter of the log training loss around its own trend at the epoch ends: RMS of second differences / sqrt 6.

    For a smooth descent (whatever its speed, on a log scale) it is near 0; a loss that jumps up and down
    from epoch to epoch has it of the order of the jumps. NaN with fewer than three epochs.
    """
    loss = _column(_epoch_ends(checks), "train_loss")
    if len(loss) < 3 or np.any(loss <= 0):
        return math.nan
    second = np.diff(np.log(loss), n=2)
    return float(np.sqrt(np.mean(second**2) / 6))


def recent_drop(checks: pd.DataFrame) -> float:
    """Relative fall of the training loss over the last quarter of the epochs: 0.5 = it halved, ~0 = levelled off."""
    loss = _column(_epoch_ends(checks), "train_loss")
    if len(loss) < 2:
        return math.nan
    back = max(1, round(len(loss) / 4))
    before, after = loss[-1 - back], loss[-1]
    return float((before - after) / before) if before > 0 else math.nan


def _epoch_ends(checks: pd.DataFrame) -> pd.DataFrame:
    if checks.empty or "epoch" not in checks:
        return checks
    return checks[np.isclose(checks["epoch"], np.round(checks["epoch"]))]


def _column(checks: pd.DataFrame, key: str) -> np.ndarray:
    if key not in checks:
        return np.array([])
    values = checks[key].to_numpy(dtype=float)
    return values[np.isfinite(values)]
