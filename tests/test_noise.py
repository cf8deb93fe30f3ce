import itertools
import math

import numpy as np
import pytest

from components.noise import exact_noise_scale, groups_per_pass, noise_scale, partitions, sampling_factor


def _population(n=7, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, dim)) + np.linspace(0.5, -0.2, dim)
    return g, float((g.mean(0) ** 2).sum()), float(((g - g.mean(0)) ** 2).sum(1).mean())


@pytest.mark.parametrize("size", [1, 2, 3, 6, 7])
def test_sampling_factor_without_replacement_by_enumeration(size):
    g, g2, trace = _population()
    batches = [g[list(rows)].mean(0) for rows in itertools.combinations(range(len(g)), size)]
    expected = np.mean([(b**2).sum() for b in batches])
    assert expected == pytest.approx(g2 + sampling_factor(size, len(g)) * trace, rel=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_sampling_factor_with_replacement_by_enumeration(size):
    g, g2, trace = _population()
    batches = [g[list(rows)].mean(0) for rows in itertools.product(range(len(g)), repeat=size)]
    expected = np.mean([(b**2).sum() for b in batches])
    assert expected == pytest.approx(g2 + sampling_factor(size) * trace, rel=1e-12)


def test_expected_moments_give_the_exact_noise_scale():
    g, g2, trace = _population()
    expected_small = g2 + sampling_factor(2, len(g)) * trace
    result = noise_scale(np.full((1, 3), expected_small), g2, group=2, rows=len(g))
    assert result.value == pytest.approx(trace / g2, rel=1e-12)
    assert result.value == pytest.approx(exact_noise_scale(g), rel=1e-12)
    # the paper's with-replacement factors on the same without-replacement moments are biased
    naive = (expected_small - g2) / (sampling_factor(2) - sampling_factor(len(g)))
    assert abs(naive / g2 - trace / g2) / (trace / g2) > 0.1


def test_exact_from_single_rows_is_exact_with_zero_error():
    g, g2, trace = _population(n=50, dim=4)
    result = noise_scale((g**2).sum(1)[None, :], g2, group=1, rows=50, exact=True)
    assert result.value == pytest.approx(exact_noise_scale(g), rel=1e-12)
    assert result.se == 0.0 and result.measurable


def test_probe_rows_drawn_from_more_rows_give_unbiased_moments():
    # every 5-row probe out of 8 rows, each measured exactly: the averages are the 8 rows' own |G|^2 and tr(Sigma)
    g, g2, trace = _population(n=8)
    results = [
        noise_scale((g[list(p)] ** 2).sum(1)[None, :], float((g[list(p)].mean(0) ** 2).sum()), 1, 5, 8, exact=True)
        for p in itertools.combinations(range(8), 5)
    ]
    assert np.mean([r.trace for r in results]) == pytest.approx(trace, rel=1e-12)
    assert np.mean([r.gradient_sq for r in results]) == pytest.approx(g2, rel=1e-12)


def test_random_partitions_are_unbiased_and_their_spread_is_the_standard_error():
    g, g2, trace = _population(n=64, dim=5, seed=3)
    rng = np.random.default_rng(0)

    def measure(draws):
        groups = partitions(64, 4, draws, rng)
        sq = (g[groups].mean(1) ** 2).sum(1)
        return noise_scale(sq.reshape(draws, -1), g2, group=4, rows=64)

    values = np.array([measure(1).value for _ in range(4000)])
    assert values.mean() == pytest.approx(trace / g2, rel=0.01)
    results = [measure(4) for _ in range(400)]
    # the standard error of 4 draws, averaged, matches the scatter of 4-draw estimates (within 15 %)
    assert np.mean([r.se for r in results]) == pytest.approx(np.std([r.value for r in results]), rel=0.15)


def test_partitions_split_rows_into_disjoint_groups():
    groups = partitions(10, 3, 2, np.random.default_rng(0))
    assert groups.shape == (6, 3) and groups.dtype == np.int32
    for draw in (groups[:3], groups[3:]):
        assert len(set(draw.ravel())) == 9


def test_not_measurable_says_why():
    zero_mean = noise_scale(np.array([[2.0, 2.0]]), 0.0, group=1, rows=2, exact=True)
    assert not zero_mean.measurable and math.isnan(zero_mean.se)
    assert "beyond what 2 probe rows resolve" in zero_mean.reason
    no_spread = noise_scale(np.array([[1.0, 1.0]]), 1.0, group=1, rows=2, exact=True)
    assert not no_spread.measurable and "variance estimate is not positive" in no_spread.reason
    # a huge noise scale seen through few probe rows out of many: |G|^2 cannot be told from 0
    far = noise_scale(np.array([[10.0, 10.0]]), 1.0, group=1, rows=2, population=1000, exact=True)
    assert not far.measurable


def test_groups_per_pass_fits_the_memory():
    assert groups_per_pass(17226, 256) == 256 * 2**20 // (4 * 17226)
    assert groups_per_pass(10**9, 1) == 1


def _variants(noise, se=None, unmeasured=None):
    import pandas as pd

    rows = []
    for (name, size, regime, value), s, u in zip(
        noise, se or [None] * len(noise), unmeasured or [None] * len(noise), strict=True
    ):
        rows.append(
            {"variant": name, "batch_size": size, "regime": regime, "status": "finished", "noise_scale": value}
            | ({"noise_scale_se": s} if se else {})
            | ({"noise_scale_unmeasured": u} if unmeasured else {})
        )
    return pd.DataFrame(rows)


def test_each_batch_size_is_compared_with_its_own_variants_noise_scale():
    from components.compare import noise_scale_note

    table = _variants(
        [
            ("adam-bs1", 1, "stochastic", 300.0),
            ("sgd-bs1", 1, "stochastic", 40.0),
            ("adam-bs256", 256, "minibatch", 100.0),  # 2.56 x its noise scale: well above
            ("sgd-bs256", 256, "minibatch", 200.0),  # 1.28 x: near
            ("adam-full", 1257, "batch", float("nan")),
        ],
        se=[0.0] * 4 + [float("nan")],
    )
    note = noise_scale_note(table)
    assert "each variant's own at the end of its training" in note and "(exact):" in note
    assert ": batch size 1: well below it (under half) in 2 of 2 (noise scales 40 to 300 rows); " in note
    assert (
        "; batch size 256: near it in 1, well above it (over twice) in 1 of 2 (noise scales 100 to 200 rows);" in note
    )
    assert note.endswith("; not measurable at the end: adam-full.")


def test_the_note_says_estimated_and_counts_unmeasurable_epochs():
    from components.compare import noise_scale_note

    table = _variants([("adam-full", 1257, "batch", 500.0)], se=[25.0], unmeasured=[2])
    note = noise_scale_note(table)
    assert "(estimated; standard errors up to 5%):" in note
    assert "full batch (1257 rows): well above it (over twice) in 1 of 1 (noise scales 500 rows)." in note
    assert note.endswith("2 measurement(s) along the way could not be made (none is filled in from another).")
