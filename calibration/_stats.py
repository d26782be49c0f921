"""Distribution quantiles in pure Python, so calibration needs numpy only (scipy is test-only).

Regularised incomplete beta by its continued fraction (modified Lentz
method) and regularised lower incomplete gamma by its series / continued
fraction, as in Press, W.H. et al. *Numerical Recipes*, 3rd ed. (2007),
sections 6.2 and 6.4; quantiles by bisection on the CDF. Checked against
scipy.stats in tests/calibration.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

_EPS, _TINY, _ITER = 1e-15, 1e-300, 500


def _betacf(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _ITER):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def gammainc(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x)."""
    if x <= 0.0:
        return 0.0
    lg = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return total * math.exp(lg)
    b = x + 1.0 - a
    c, d = 1.0 / _TINY, 1.0 / b
    h = d
    for i in range(1, _ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return 1.0 - math.exp(lg) * h


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def f_cdf(x: float, d1: float, d2: float) -> float:
    return 0.0 if x <= 0 else betainc(d1 / 2.0, d2 / 2.0, d1 * x / (d1 * x + d2))


def chi2_cdf(x: float, df: float) -> float:
    return gammainc(df / 2.0, x / 2.0)


def _quantile(cdf, p: float, lo: float, hi: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability {p}: expected 0 < p < 1")
    while cdf(hi) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, abs(hi)):
            break
    return 0.5 * (lo + hi)


def t_pdf(t: float, df: float) -> float:
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)   # pure function of two numbers; trend simulations repeat them
def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with `df` degrees of freedom.

    Newton's method on the CDF from the normal quantile (a few CDF calls: trend
    simulations call this thousands of times), bisection if Newton strays.
    """
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if not 0.5 < p < 1.0:
        raise ValueError(f"probability {p}: expected 0 < p < 1")
    x = norm_ppf(p)
    # Cornish-Fisher start (Abramowitz & Stegun 26.7.5, first two terms)
    x = x + (x**3 + x) / (4 * df) + (5 * x**5 + 16 * x**3 + 3 * x) / (96 * df * df)
    for _ in range(30):
        f = t_cdf(x, df) - p
        d = t_pdf(x, df)
        if not d > 0:
            break
        step = f / d
        x_new = x - step
        if not (x_new > 0 and math.isfinite(x_new)):
            break
        if abs(step) <= 1e-13 * max(1.0, abs(x_new)):
            return x_new
        x = x_new
    return _quantile(lambda v: t_cdf(v, df), p, 0.0, 10.0)


@lru_cache(maxsize=4096)   # pure function of two numbers; trend simulations repeat them
def f_ppf(p: float, d1: float, d2: float) -> float:
    return _quantile(lambda x: f_cdf(x, d1, d2), p, 0.0, 10.0)


@lru_cache(maxsize=4096)   # pure function of two numbers; trend simulations repeat them
def chi2_ppf(p: float, df: float) -> float:
    return _quantile(lambda x: chi2_cdf(x, df), p, 0.0, max(10.0, 2.0 * df))


def norm_ppf(p: float) -> float:
    return NormalDist().inv_cdf(p)
