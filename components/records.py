"""A variant's per-epoch metrics and validation checks as the comparison reads them: from the tracking store, or
from what training returned, in exactly the same shape (the sweep compares from memory, `compare` rebuilds)."""

from __future__ import annotations

import math
import sys

import pandas as pd

# The per-epoch metrics the comparison reads (step = epoch, from 1).
EPOCH_KEYS = ["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae", "epoch_seconds", "updates"]
EPOCH_KEYS += ["noise_scale", "noise_scale_se", "noise_scale_unmeasured", "loss_noise"]
# The validation checks (after 2^k updates and every epoch's end), logged as by_update/<key> with step = updates.
CHECK_KEYS = ["epoch", "train_seconds", "val_loss", "val_accuracy", "val_mae", "train_loss", "train_accuracy"]
CHECK_KEYS += ["train_mae"]


def points_frame(points: dict[str, list[tuple[int, float]]], step: str) -> pd.DataFrame:
    """(step, value) points per metric as one frame, one row per step: a column for each metric that has any."""
    columns = {key: pd.Series(dict(values), dtype=float) for key, values in points.items() if values}
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = step
    return frame.reset_index()


def stored(value: float) -> float:
    """A metric value as MLflow's database store keeps it: infinities become the largest finite floats."""
    value = float(value)
    return math.copysign(sys.float_info.max, value) if math.isinf(value) else value


def result_frames(history: list[dict], checks: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-epoch records and the validation checks training returned, as frames the store would give back."""
    epochs = {key: [(i, stored(r[key])) for i, r in enumerate(history, start=1) if key in r] for key in EPOCH_KEYS}
    by_update = {key: [(int(c["updates"]), stored(c[key])) for c in checks if key in c] for key in CHECK_KEYS}
    return with_seconds(points_frame(epochs, "epoch")), points_frame(by_update, "updates")


def with_seconds(history: pd.DataFrame) -> pd.DataFrame:
    """The history with `seconds`: wall-clock seconds since the variant started, at each epoch's end."""
    if "epoch_seconds" in history:
        history["seconds"] = history["epoch_seconds"].cumsum()
    return history
