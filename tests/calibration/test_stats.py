"""The pure-Python quantiles that keep calibration free of scipy, against scipy.stats."""

import pytest
from scipy import stats

from calibration._stats import chi2_ppf, f_ppf, norm_ppf, t_ppf


@pytest.mark.parametrize("p,df", [(0.975, 1), (0.975, 3), (0.8, 10), (0.99, 200), (0.05, 4.5)])
def test_student_t_quantile(p, df):
    assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


@pytest.mark.parametrize("p,d1,d2", [(0.99, 5, 100), (0.95, 1, 3), (0.99, 20, 400), (0.5, 2, 7)])
def test_f_quantile(p, d1, d2):
    assert f_ppf(p, d1, d2) == pytest.approx(stats.f.ppf(p, d1, d2), rel=1e-9)


@pytest.mark.parametrize("p,df", [(0.99, 5), (0.95, 0.7), (0.99, 300), (0.5, 1.3)])
def test_chi2_quantile(p, df):
    assert chi2_ppf(p, df) == pytest.approx(stats.chi2.ppf(p, df), rel=1e-9)


def test_normal_quantile():
    assert norm_ppf(0.975) == pytest.approx(1.959963985, abs=1e-8)
