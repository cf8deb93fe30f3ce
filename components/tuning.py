"""Choosing each variant's own learning rate, on validation rows only: the pure rules.

Log grids and their edges, synchronous successive halving (Jamieson & Talwalkar 2016), the range
test's rule (Smith 2017), batch-size scaling rules (Goyal et al. 2017; Malladi et al. 2022) and the
measured slope of the best learning rate against the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Exponents of the batch-size scaling rules: lr(b) = lr(b0) * (b / b0) ** exponent.
SCALING = {"linear": 1.0, "sqrt": 0.5}


def log_grid(center: float, factors: Sequence[float]) -> list[float]:
    """The learning rates center x factor, lowest first."""
    return sorted({_round(center * f) for f in factors})


def beyond_edge(tried: Sequence[float], best: float) -> float | None:
    """The next learning rate past the edge where `best` sits (same ratio as the edge's last step), else None."""
    rates = sorted(tried)
    if len(rates) < 2 or best not in (rates[0], rates[-1]):
        return None
    if best == rates[-1]:
        return _round(best * rates[-1] / rates[-2])
    return _round(best * rates[0] / rates[1])


def rungs(epochs: int, rate: int, levels: int) -> list[int]:
    """Epochs at which successive halving compares the trials: epochs / rate**k for k < levels, at least 1."""
    return sorted({max(1, round(epochs / rate**k)) for k in range(levels)})


def survivors(scores: dict[float, tuple[float, float]], higher: bool, rate: int) -> list[float]:
    """The best ceil(n / rate) learning rates by (metric, loss); a non-finite metric ranks last."""
    keep = math.ceil(len(scores) / rate)
    return sorted(scores, key=lambda lr: rank_key(scores[lr], higher))[:keep]


def rank_key(score: tuple[float, float], higher: bool) -> tuple[float, float]:
    """Sort key, smaller is better: the metric first, the loss breaks ties (accuracy often ties)."""
    metric, loss = score
    metric = metric if math.isfinite(metric) else (-math.inf if higher else math.inf)
    loss = loss if math.isfinite(loss) else math.inf
    return (-metric if higher else metric, loss)


@dataclass
class Trial:
    """One learning rate of a variant's search: its score at each rung it reached."""

    learning_rate: float
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)  # epoch -> (metric, loss)
    stopped_early: bool = False

    @property
    def last(self) -> tuple[float, float]:
        return self.scores[max(self.scores)]


@dataclass
class Search:
    """What a variant's search tried and chose."""

    trials: list[Trial]
    chosen: float
    at_edge: bool


def successive_halving(
    grid: Sequence[float],
    epochs: int,
    score: Callable[[float, int], tuple[float, float]],
    higher: bool,
    rate: int = 3,
    levels: int = 3,
    extensions: int = 2,
    on_stop: Callable[[Trial], None] | None = None,
) -> Search:
    """Search `grid` by synchronous successive halving; `score(lr, epoch)` trains trial lr on to `epoch`.

    Every trial reaches the first rung; when the best then sits on the grid's edge the grid grows one step
    that way (at most `extensions` times). At each rung the best ceil(n / rate) go on; the last one standing
    trains for all `epochs`, so the chosen learning rate's training is the search's own. `on_stop` hears of
    each trial as soon as it is stopped early.
    """
    steps = rungs(epochs, rate, levels)
    trials = {lr: Trial(lr) for lr in grid}
    for lr, trial in trials.items():
        trial.scores[steps[0]] = score(lr, steps[0])
    for _ in range(extensions):
        best = min(trials, key=lambda lr: rank_key(trials[lr].last, higher))
        beyond = beyond_edge(list(trials), best)
        if beyond is None or beyond in trials:
            break
        trials[beyond] = Trial(beyond)
        trials[beyond].scores[steps[0]] = score(beyond, steps[0])
    alive = list(trials)
    for step in steps[1:]:
        kept = survivors({lr: trials[lr].last for lr in alive}, higher, rate)
        for lr in sorted(set(alive) - set(kept)):
            trials[lr].stopped_early = True
            if on_stop is not None:
                on_stop(trials[lr])
        alive = kept
        for lr in alive:
            trials[lr].scores[step] = score(lr, step)
    chosen = min(alive, key=lambda lr: rank_key(trials[lr].last, higher))
    rates = sorted(trials)
    return Search(sorted(trials.values(), key=lambda t: t.learning_rate), chosen, chosen in (rates[0], rates[-1]))


def range_test_rates(start: float, stop: float, updates: int) -> np.ndarray:
    """Learning rates growing exponentially from `start` to `stop` over `updates` updates."""
    return start * (stop / start) ** (np.arange(updates) / max(1, updates - 1))


def range_test_smoothed(losses: np.ndarray, window: int = 9) -> np.ndarray:
    """The range test's losses up to where they blow up (non-finite, or above 4x the lowest so far), smoothed
    by a centred moving average of `window` updates: centred, so the curve does not lag behind the learning
    rate as an exponential average would."""
    losses = np.asarray(losses, dtype=float)
    end = 0
    while end < len(losses) and math.isfinite(losses[end]) and losses[end] <= 4 * np.min(losses[: end + 1]):
        end += 1
    return pd.Series(losses[:end]).rolling(window, center=True, min_periods=1).mean().to_numpy()


def range_test_choice(rates: np.ndarray, losses: np.ndarray, window: int = 9) -> float:
    """The range test's rule: the learning rate where the smoothed loss falls fastest (per log learning rate),
    looking only before the smoothed minimum (past it, larger rates make the loss rise)."""
    rates, smooth = np.asarray(rates, dtype=float), range_test_smoothed(losses, window)
    lowest = int(np.argmin(smooth)) if len(smooth) >= 3 else 0
    if lowest < 2:
        return float(rates[0])
    slope = np.gradient(smooth[: lowest + 1], np.log(rates[: lowest + 1]))
    return _round(float(rates[int(np.argmin(slope))]))


def scaled_rate(reference_rate: float, reference_batch: int, batch_size: int, rule: str) -> float:
    """A learning rate scaled from the reference batch size by a rule: linear (Goyal 2017) or sqrt (Malladi 2022)."""
    return _round(reference_rate * (batch_size / reference_batch) ** SCALING[rule])


def lr_slope(batch_sizes: Sequence[float], rates: Sequence[float]) -> float:
    """Least-squares slope of log(learning rate) against log(batch size); NaN with fewer than two sizes."""
    sizes, lrs = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(rates, float))
    if len(set(sizes.tolist())) < 2:
        return math.nan
    return float(np.polyfit(sizes, lrs, 1)[0])


def _round(lr: float) -> float:
    """Three significant digits: 0.0031622776 -> 0.00316, so names and params read well and compare equal."""
    return float(f"{lr:.3g}")
