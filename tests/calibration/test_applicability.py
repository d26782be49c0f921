"""A spectral model the probe cannot feed is a configuration problem naming the probe, the model and the ranges."""

import numpy as np
import pytest

from calibration.model import check_applicable, fit_spectral_model


@pytest.fixture(scope="module")
def model(nirsoil):
    wl, x, y = nirsoil                 # 1100-2492 nm every 8 nm
    return fit_spectral_model(wl, x[:60], y[:60], model_id="ciso-lab", version="2", max_components=5, folds=5)


def test_probe_covering_the_grid_is_fine(model):
    assert check_applicable(model, np.arange(1000.0, 2600.0, 4.0), "reflectance", probe="nir-a") == []


def test_probe_missing_the_short_end_is_named_with_both_ranges(model):
    problems = check_applicable(model, np.arange(1350.0, 2501.0, 2.0), "absorbance", probe="nir-b")
    assert len(problems) == 1
    p = problems[0]
    assert p.startswith("probe nir-b: spectral model ciso-lab v2 needs 1100-2492 nm")
    assert "measures 1350-2500 nm" in p and "MISSING" in p
    # and the prediction itself would indeed be MISSING for every reading
    wl = np.arange(1350.0, 2501.0, 2.0)
    assert model.predict(wl, np.full(wl.shape, 0.3) + 1e-4 * wl).flag_test == "spectrum_incomplete"


def test_coarse_probe_other_kinds_and_missing_references(model):
    coarse = check_applicable(model, np.linspace(1100, 2500, 18), "reflectance", probe="as")
    assert len(coarse) == 1 and "every 82.4 nm" in coarse[0]
    assert "spectrum kind 'transmittance'" in check_applicable(model, np.arange(1100.0, 2500.0, 4.0),
                                                               "transmittance")[0]
    assert "dark and white references" in check_applicable(model, np.arange(1100.0, 2500.0, 4.0), "counts",
                                                           has_references=False)[0]
    assert "reports none" in check_applicable(model, None, None, probe="teros")[0]
