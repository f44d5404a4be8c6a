"""The regularized incomplete beta function I_x(a, b) and its inverse (the Beta(a, b) quantile), in float64."""

import math

CONTINUED_FRACTION_TERMS = 300
TINY = 1e-300  # keeps the modified Lentz recurrences away from division by zero
EPSILON = 2.0**-52
LOG_SMALLEST_X = math.log(5e-324)  # the smallest positive float64
NEWTON_ITERATIONS = 300


def regularized_incomplete_beta(x, a, b):
    """I_x(a, b), the Beta(a, b) distribution function, by its continued fraction (DLMF 8.17.22)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only left of the mean; use I_x(a,b) = 1 - I_{1-x}(b,a)
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b) - math.log(a)
    return math.exp(log_front) * _continued_fraction(x, a, b)


def inverse_regularized_incomplete_beta(p, a, b):
    """The x in [0, 1] with I_x(a, b) = p: the Beta(a, b) quantile; p > 1/2 is solved as 1 - x of the mirror image."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be between 0 and 1, got {p}")
    if p == 0 or p == 1:
        return float(p)
    if p > 0.5:  # I_x(a, b) = 1 - I_{1-x}(b, a), and 1 - p is exact here
        return 1.0 - _lower_quantile(1.0 - p, b, a)
    return _lower_quantile(p, a, b)


def _lower_quantile(p, a, b):
    """Newton's method on log I = log p in y = log x (exact for the tail I ~ x^a / (a B)), inside a bisected bracket."""
    log_p, log_beta = math.log(p), _log_beta(a, b)
    low, high = LOG_SMALLEST_X, 0.0
    y = min((log_p + math.log(a) + log_beta) / a, math.log(0.5))  # the small-x tail, solved for x
    for _ in range(NEWTON_ITERATIONS):
        x = math.exp(y)
        value = regularized_incomplete_beta(x, a, b)
        if value == p:
            return x
        if value < p:
            low = y
        else:
            high = y
        candidate = 0.5 * (low + high)
        if 0 < value and x < 1:
            slope = math.exp(a * y + (b - 1) * math.log1p(-x) - log_beta - math.log(value))  # d log I / d log x
            newton = y - (math.log(value) - log_p) / slope
            if low < newton < high:
                candidate = newton
        if abs(candidate - y) <= EPSILON * max(1.0, abs(y)):
            return math.exp(candidate)
        y = candidate
    return math.exp(y)


def _continued_fraction(x, a, b):
    """1 / (1 + d1 / (1 + d2 / (1 + ...))) of DLMF 8.17.22; the denominator by the modified Lentz method."""
    c, d = 1.0, 0.0
    denominator = 1.0
    for n in range(1, CONTINUED_FRACTION_TERMS):
        coefficient = _fraction_coefficient(n, x, a, b)
        d = 1.0 + coefficient * d
        d = 1.0 / (d if abs(d) > TINY else TINY)
        c = 1.0 + coefficient / c
        c = c if abs(c) > TINY else TINY
        factor = c * d
        denominator *= factor
        if abs(factor - 1.0) < EPSILON:
            break
    return 1.0 / denominator


def _fraction_coefficient(n, x, a, b):
    """d_n of DLMF 8.17.22.

    d_2m = m(b - m)x / ((a + 2m - 1)(a + 2m)),  d_2m+1 = -(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)).
    """
    m = n // 2
    if n % 2 == 0:
        return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
    return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))


def _log_beta(a, b):
    """log B(a, b) = log Gamma(a) + log Gamma(b) - log Gamma(a + b)."""
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
