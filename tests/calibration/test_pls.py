"""PLS against scikit-learn's PLSRegression on real soil spectra (sklearn is the test-only reference)."""

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from calibration.pls import cross_validate, fit_pls
from calibration.spectra import SavitzkyGolay, snv


@pytest.fixture(scope="module")
def preprocessed(nirsoil):
    _, x, y = nirsoil
    return snv(SavitzkyGolay(5, 2, 1)(x)), y


@pytest.mark.parametrize("k", [1, 4, 10, 15])
def test_predictions_match_sklearn_pls_regression(preprocessed, k):
    z, y = preprocessed
    train, test = slice(0, 90), slice(90, None)
    ours = fit_pls(z[train], y[train], k)
    ref = PLSRegression(n_components=k, scale=False).fit(z[train], y[train])
    expected = np.ravel(ref.predict(z[test]))
    assert np.abs(ours.predict(z[test]) - expected).max() < 1e-9 * np.abs(expected).max()
    assert np.abs(ours.coef - np.ravel(ref.coef_)).max() < 1e-9 * np.abs(ref.coef_).max()


def test_scores_match_sklearn_up_to_sign(preprocessed):
    z, y = preprocessed
    ours = fit_pls(z, y, 6)
    ref = PLSRegression(n_components=6, scale=False).fit(z, y)
    t_ours = (z - ours.x_mean) @ ours.rotations
    t_ref = ref.transform(z)
    assert np.abs(np.abs(t_ours) - np.abs(t_ref)).max() < 1e-9 * np.abs(t_ref).max()


def test_cross_validation_picks_the_minimum_rmsecv(preprocessed):
    z, y = preprocessed
    cv = cross_validate(z, y, 12, folds=5)
    assert cv.rmsecv.shape == (12,)
    assert cv.n_components == int(np.argmin(cv.rmsecv)) + 1
    # Cross-validated error is honest: never below the in-sample error of the same model.
    fitted = fit_pls(z, y, cv.n_components).predict(z)
    assert cv.rmsecv[cv.n_components - 1] > np.sqrt(np.mean((fitted - y) ** 2))
    assert cv.rmsecv[cv.n_components - 1] < y.std()          # and better than predicting the mean


def test_too_many_components_is_refused(preprocessed):
    z, y = preprocessed
    with pytest.raises(ValueError, match="components"):
        fit_pls(z[:5], y[:5], 5)
