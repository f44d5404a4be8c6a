"""The regularized incomplete beta function and its inverse, against closed forms and scipy."""

import math

import numpy
import pytest

from diffusion_blocks.schedules.incomplete_beta import (
    inverse_regularized_incomplete_beta,
    regularized_incomplete_beta,
)

XS = [0.0, 2.0**-40, 2.0**-7, 0.25, 0.5, 0.75, 1 - 2.0**-7, 1 - 2.0**-40, 1.0]  # 1 - x exact


@pytest.mark.parametrize("x", XS)
def test_closed_forms(x):
    assert regularized_incomplete_beta(x, 1.0, 1.0) == pytest.approx(x, abs=1e-15)
    assert regularized_incomplete_beta(x, 3.5, 1.0) == pytest.approx(x**3.5, abs=1e-15)
    assert regularized_incomplete_beta(x, 1.0, 2.5) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-15)
    assert regularized_incomplete_beta(x, 2.0, 2.0) == pytest.approx(3 * x**2 - 2 * x**3, abs=1e-15)
    arcsine = 2 / math.pi * math.atan2(math.sqrt(x), math.sqrt(1 - x))  # Beta(1/2, 1/2)
    assert regularized_incomplete_beta(x, 0.5, 0.5) == pytest.approx(arcsine, abs=1e-14)


def test_symmetry():
    for a, b in ((0.6, 0.6), (0.3, 4.0), (12.0, 2.5)):
        for x in XS:
            total = regularized_incomplete_beta(x, a, b) + regularized_incomplete_beta(1 - x, b, a)
            assert total == pytest.approx(1.0, abs=1e-14)


def test_inverse_round_trip():
    for a, b in ((0.6, 0.6), (0.5, 0.7), (2.0, 3.0), (40.0, 0.3), (0.05, 50.0), (0.3, 40.0)):
        for p in (1e-300, 1e-12, 1e-4, 0.1, 0.5, 0.9, 0.99):
            x = inverse_regularized_incomplete_beta(p, a, b)
            assert 0 <= x <= 1
            assert regularized_incomplete_beta(x, a, b) == pytest.approx(p, rel=1e-10, abs=1e-15)
    assert inverse_regularized_incomplete_beta(0.0, 0.6, 0.6) == 0.0
    assert inverse_regularized_incomplete_beta(1.0, 0.6, 0.6) == 1.0


def test_against_scipy():
    special = pytest.importorskip("scipy.special")
    rng = numpy.random.default_rng(0)
    for _ in range(2000):
        a, b = rng.uniform(0.05, 50, 2)
        x, p = rng.uniform(size=2)
        assert regularized_incomplete_beta(x, a, b) == pytest.approx(special.betainc(a, b, x), abs=1e-13)
        assert inverse_regularized_incomplete_beta(p, a, b) == pytest.approx(special.betaincinv(a, b, p), abs=1e-12)


def test_inverse_rejects_probabilities_outside_0_1():
    with pytest.raises(ValueError, match="p must"):
        inverse_regularized_incomplete_beta(1.5, 1.0, 1.0)
