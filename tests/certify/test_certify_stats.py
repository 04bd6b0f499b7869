"""The statistics behind the certificates: Clopper-Pearson bounds and the binomial test."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bastion.certify import binomial_test_p_value, certified_accuracy, clopper_pearson_lower
from bastion.errors import ConfigError, DataError


def test_clopper_pearson_known_values() -> None:
    # all successes: P(Bin(n, p) >= n) = p^n = alpha
    assert float(clopper_pearson_lower(100, 100, 0.001)) == pytest.approx(0.001 ** (1 / 100))
    assert float(clopper_pearson_lower(10_000, 10_000, 0.001)) == pytest.approx(
        0.001 ** (1 / 10_000), rel=1e-12
    )
    assert float(clopper_pearson_lower(0, 50, 0.05)) == 0.0
    # one success in n: P(Bin(n, p) >= 1) = 1 - (1 - p)^n = alpha
    assert float(clopper_pearson_lower(1, 20, 0.05)) == pytest.approx(1 - 0.95 ** (1 / 20))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (7, 10), (50, 100), (9_000, 10_000), (99, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_scipy_and_inverts_the_tail(k: int, n: int, alpha: float) -> None:
    low = float(clopper_pearson_lower(k, n, alpha))
    expected = stats.binomtest(k, n).proportion_ci(1 - 2 * alpha, method="exact").low
    assert low == pytest.approx(expected, rel=1e-9)
    assert float(stats.binom.sf(k - 1, n, low)) == pytest.approx(alpha, rel=1e-6)


def test_clopper_pearson_is_vectorised_and_monotone() -> None:
    k = torch.arange(0, 101)
    low = clopper_pearson_lower(k, 100, 0.01)
    assert low.shape == (101,) and low.dtype == torch.float64
    assert bool((low.diff() > 0).all()) and float(low[-1]) < 1.0


@pytest.mark.parametrize(("k", "n"), [(5, 10), (0, 7), (60, 100), (62, 100), (3, 40), (40, 40)])
def test_binomial_p_value_matches_scipy(k: int, n: int) -> None:
    expected = stats.binomtest(k, n, 0.5).pvalue
    assert float(binomial_test_p_value(k, n)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("k", "n", "alpha"), [(-1, 10, 0.1), (11, 10, 0.1), (0, 0, 0.1), (1, 2, 0.0), (1, 2, 1.5)]
)
def test_bad_counts_or_alpha(k: int, n: int, alpha: float) -> None:
    with pytest.raises(ConfigError):
        clopper_pearson_lower(k, n, alpha)


def test_certified_accuracy_counts_correct_examples_within_radius() -> None:
    radii = [0.1, 0.6, 0.0, 1.2]
    correct = [True, True, False, True]
    assert certified_accuracy(radii, correct, [0.0, 0.5, 1.0, 2.0]) == [0.75, 0.5, 0.25, 0.0]
    assert certified_accuracy(torch.tensor([0.5]), torch.tensor([True]), [0.5]) == [1.0]
    with pytest.raises(DataError, match="differ in length"):
        certified_accuracy([0.1], [True, False], [0.0])
    with pytest.raises(ConfigError, match="radius_grid"):
        certified_accuracy([0.1], [True], [-0.5])
    with pytest.raises(ConfigError, match="radius_grid"):
        certified_accuracy([0.1], [True], [math.nan])
