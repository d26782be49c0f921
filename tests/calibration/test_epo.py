"""EPO removes a synthetic moisture effect so a dry-soil model works on wet spectra."""

import numpy as np
import pytest

from calibration.epo import fit_epo
from calibration.model import fit_spectral_model


def _wet(wl, dry, seed):
    """Add a moisture effect: water bands at 1450 and 1940 nm plus a baseline rise, by moisture m."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.05, 0.35, dry.shape[0])[:, None]
    water = (0.8 * np.exp(-0.5 * ((wl - 1450) / 40.0) ** 2) + 1.5 * np.exp(-0.5 * ((wl - 1940) / 50.0) ** 2)
             + 0.3 * (wl - 1000) / 1500)
    return dry + m * water


def test_projection_removes_the_directions_of_the_differences():
    rng = np.random.default_rng(3)
    dirs = np.linalg.qr(rng.normal(size=(50, 2)))[0]
    dry = rng.normal(size=(30, 50))
    wet = dry + rng.normal(size=(30, 2)) @ dirs.T
    epo = fit_epo(wet, dry, 2)
    assert np.abs(epo.apply(wet) - epo.apply(dry)).max() < 1e-10
    p = epo.projection()
    assert p @ p == pytest.approx(p, abs=1e-12)            # a projection
    assert p == pytest.approx(p.T, abs=1e-12)              # orthogonal
    assert epo.apply(dry[0]) == pytest.approx(dry[0] @ p, abs=1e-12)


def test_dry_model_with_epo_predicts_wet_spectra_of_unseen_soils(synthetic):
    wl, dry, c = synthetic(140, seed=4)
    wet = _wet(wl, dry, seed=5)
    fit_idx, test_idx = np.arange(0, 100), np.arange(100, 140)
    # SG first derivative only: a linear chain keeps the additive moisture effect additive, as EPO assumes.
    chain = ({"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1},)
    plain = fit_spectral_model(wl, dry[fit_idx], c[fit_idx], model_id="dry", max_components=8, folds=5,
                               preprocessing=chain)
    with_epo = fit_spectral_model(wl, dry[fit_idx], c[fit_idx], model_id="dry-epo", max_components=8, folds=5,
                                  preprocessing=chain, epo_pairs=(wet[:60], dry[:60]), epo_components=2)

    def rmse(model, x):
        return np.sqrt(np.mean((np.array([model.predict(wl, row).value for row in x]) - c[test_idx]) ** 2))

    wet_plain, wet_epo, dry_plain = rmse(plain, wet[test_idx]), rmse(with_epo, wet[test_idx]), \
        rmse(plain, dry[test_idx])
    assert wet_plain > 0.5 * c.std()                        # the moisture effect ruins the dry model
    assert wet_epo < 0.05 * wet_plain                       # EPO removes it
    assert wet_epo < 2 * dry_plain + 0.01                   # as good as on dry soil
    assert with_epo.meta["epo"] == {"n_components": 2, "pairs": 60}


def test_epo_refuses_unpaired_spectra():
    with pytest.raises(ValueError, match="paired"):
        fit_epo(np.zeros((3, 10)), np.zeros((4, 10)), 1)
