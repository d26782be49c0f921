"""Spectral preprocessing against hand-computed values and scipy's reference filter."""

import numpy as np
import pytest
from scipy.signal import savgol_filter

from calibration.spectra import SavitzkyGolay, absorbance, reflectance, resample, savgol_coefficients, snv
from humus.records import QualityFlag


def test_reflectance_from_counts_with_dark_and_white():
    r = reflectance([600.0, 350.0], dark=[100.0, 100.0], white=[1100.0, 600.0], white_reflectance=0.99)
    assert r.value == pytest.approx([0.5 * 0.99, 0.5 * 0.99])
    assert r.flag is QualityFlag.PASS


def test_reflectance_with_white_not_above_dark_fails():
    r = reflectance([600.0, 350.0], dark=[100.0, 100.0], white=[1100.0, 100.0])
    assert r.flag is QualityFlag.FAIL and r.flag_test == "white_reference"
    assert np.isnan(r.value[1])


def test_reflectance_above_white_is_suspect():
    r = reflectance([1500.0], dark=[100.0], white=[1100.0])
    assert r.value[0] == pytest.approx(1.4)
    assert r.flag is QualityFlag.SUSPECT and r.flag_test == "reflectance_range"


def test_absorbance_is_log10_of_inverse_reflectance():
    a = absorbance([1.0, 0.1, 0.01, 0.0])
    assert a[:3] == pytest.approx([0.0, 1.0, 2.0])
    assert np.isnan(a[3])


def test_snv_centres_and_scales_each_spectrum():
    x = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]])
    z = snv(x)
    assert z[0] == pytest.approx([-1.0, 0.0, 1.0])          # sd (ddof 1) of 1,2,3 is 1
    assert z.mean(axis=1) == pytest.approx([0, 0])
    assert z.std(axis=1, ddof=1) == pytest.approx([1, 1])


def test_savgol_coefficients_match_the_classic_table():
    # Savitzky & Golay (1964) table: 5-point quadratic smoothing weights (-3, 12, 17, 12, -3)/35
    assert savgol_coefficients(5, 2) == pytest.approx(np.array([-3, 12, 17, 12, -3]) / 35)
    # 5-point first derivative: (-2, -1, 0, 1, 2)/10
    assert savgol_coefficients(5, 2, deriv=1) == pytest.approx(np.array([-2, -1, 0, 1, 2]) / 10)


@pytest.mark.parametrize("window,poly,deriv,delta", [(11, 2, 1, 1.0), (7, 3, 2, 2.0), (5, 2, 0, 1.0),
                                                     (21, 3, 1, 8.0), (15, 4, 3, 1.0)])
def test_savgol_matches_scipy_including_edges(window, poly, deriv, delta, nirsoil):
    _, x, _ = nirsoil
    sg = SavitzkyGolay(window, poly, deriv, delta)
    ref = savgol_filter(x, window, poly, deriv=deriv, delta=delta, axis=-1)
    assert np.abs(sg(x) - ref).max() < 1e-10 * max(1.0, np.abs(ref).max())
    assert np.abs(sg(x[3]) - ref[3]).max() < 1e-10 * max(1.0, np.abs(ref).max())
    assert np.abs(sg.matrix(x.shape[1]) @ x[3] - ref[3]).max() < 1e-10 * max(1.0, np.abs(ref).max())


def test_savgol_refuses_impossible_settings():
    with pytest.raises(ValueError, match="odd"):
        SavitzkyGolay(10, 2)
    with pytest.raises(ValueError, match="deriv"):
        SavitzkyGolay(11, 2, 3)


def test_resample_interpolates_linearly_and_never_extrapolates():
    out = resample([1000.0, 1010.0, 1020.0], [1.0, 2.0, 4.0], [1005.0, 1015.0, 1030.0])
    assert out[:2] == pytest.approx([1.5, 3.0])
    assert np.isnan(out[2])
    many = resample([1000.0, 1010.0, 1020.0], [[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]], [1010.0, 1015.0])
    assert many == pytest.approx(np.array([[2.0, 3.0], [0.0, 0.5]]))
