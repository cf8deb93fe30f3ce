"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 of McCandlish et al. (2018), from squared norms of mean
gradients over groups of rows: exact when the groups are single rows covering the probe, else an estimate.

The rows are a finite set drawn without replacement, so the paper's formulas (written for draws with replacement)
get the finite-population factor: without it B_simple is inflated by 1 / (1 - b / (n - 1)) and |G|^2 can come out
negative once the batch is a large share of the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseScale:
    """One measurement of the noise scale: NaN `value` when it could not be measured (`reason` says why)."""

    value: float
    se: float  # standard error over repeated measurements on the same rows; 0 = exact
    gradient_sq: float  # |G|^2: the squared norm of the mean gradient
    trace: float  # tr(Sigma): the summed per-row gradient variance
    reason: str = ""

    @property
    def measurable(self) -> bool:
        return math.isfinite(self.value)


def sampling_factor(size: int, rows: int | None = None) -> float:
    """f with E|g_b|^2 = |G|^2 + f tr(Sigma) for the mean gradient g_b of `size` rows.

    Drawn without replacement from `rows` rows: f = (rows - size) / (size (rows - 1)), 0 when the batch is all of
    them; drawn with replacement (or from endless rows, `rows` None): f = 1 / size.
    """
    if rows is None:
        return 1.0 / size
    return (rows - size) / (size * (rows - 1))


def noise_scale(
    group_sq: np.ndarray, mean_sq: float, group: int, rows: int, population: int | None = None, exact: bool = False
) -> NoiseScale:
    """B_simple of the `population` rows (the probe rows themselves when None) from gradient norms on the probe.

    `group_sq[d, j]` is |mean gradient of group j|^2 in draw d, where each draw splits the `rows` probe rows at
    random into disjoint groups of `group` rows; `mean_sq` is |mean gradient of all `rows` rows|^2. Both moments
    are unbiased (E group_sq = |G|^2 + f tr(Sigma), see sampling_factor). `exact`: one draw of single rows that
    covers every probe row, so tr(Sigma) and |G|^2 of the probe rows are computed, not estimated.
    """
    group_sq = np.atleast_2d(np.asarray(group_sq, dtype=np.float64))
    f = sampling_factor(group, rows)
    traces = (group_sq.mean(axis=1) - mean_sq) / f  # one estimate of the probe rows' tr(Sigma) per draw
    n = population or rows
    # The probe rows as a sample of `population` rows: their variance is the population's times (n-1)/n * m/(m-1)
    # on average, and their |mean gradient|^2 exceeds the population's by tr(Sigma) times the sampling factor.
    scale = 1.0 if n == rows else rows * (n - 1) / ((rows - 1) * n)
    traces = traces * scale
    trace = float(traces.mean())
    factor = 0.0 if n == rows else sampling_factor(rows, n)
    g2 = float(mean_sq) - trace * factor
    if not (math.isfinite(trace) and math.isfinite(g2)):
        return NoiseScale(math.nan, math.nan, g2, trace, "the gradients are not finite")
    if trace <= 0:
        return NoiseScale(math.nan, math.nan, g2, trace, "the gradient variance estimate is not positive")
    if g2 <= 0:
        return NoiseScale(math.nan, math.nan, g2, trace, f"the noise scale is beyond what {rows} probe rows resolve")
    value = trace / g2
    if exact:
        se = 0.0
    elif len(traces) > 1:
        # d value / d trace = (1 + value * factor) / g2: the spread of the draws, carried to the ratio
        se = float(traces.std(ddof=1) / math.sqrt(len(traces)) * (1 + value * factor) / g2)
    else:
        se = math.nan
    return NoiseScale(value, se, g2, trace)


def exact_noise_scale(per_example: np.ndarray) -> float:
    """B_simple of a set of rows from their per-example gradients (one row each): tr(Sigma) / |G|^2."""
    per_example = np.asarray(per_example, dtype=np.float64)
    mean = per_example.mean(axis=0)
    trace = float(((per_example - mean) ** 2).sum(axis=1).mean())
    return trace / float((mean**2).sum())


def partitions(rows: int, group: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` random splits of range(rows) into rows // group disjoint groups: int32 (draws * groups, group)."""
    k = rows // group
    return np.concatenate([rng.permutation(rows)[: k * group].reshape(k, group) for _ in range(draws)]).astype(np.int32)


def groups_per_pass(parameters: int, memory_mb: float) -> int:
    """How many groups' gradients (float32, `parameters` each) one vectorised pass may hold in `memory_mb` MiB."""
    return max(1, int(memory_mb * 2**20 // (4 * parameters)))
