"""Applicability domain: limits that flag about the nominal share, and a moisture check whatever the preprocessing."""

import numpy as np
import pytest

from calibration.dataset import read_spectral_csv
from calibration.domain import band_depth_weights, domain_limits, fit_moisture_index
from calibration.model import fit_spectral_model
from humus.records import QualityFlag

SG = {"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1}


@pytest.fixture(scope="module")
def paired(request):
    """(wavelengths, spectra, soilC, state, sample) of the 25 paired soils shipped with the tests."""
    from pathlib import Path
    ds = read_spectral_csv(Path(__file__).parent / "data" / "soilspec_epo_subset.csv")
    return (ds.wavelengths_nm, ds.spectra, ds.numeric("soilC"), np.array(ds.columns["state"]),
            np.array(ds.columns["sample"]))


def test_limits_flag_the_nominal_share_of_cross_validated_calibration_spectra(skewed):
    wl, x, y = skewed(400, seed=1)
    m = fit_spectral_model(wl, x, y, model_id="d", max_components=10, folds=5, transform="sqrt")
    d = m.meta["domain"]
    assert d["level"] == 0.99 and d["flagged_cv"] == pytest.approx(0.01, abs=0.005)
    wl2, x2, _ = skewed(2000, seed=2)
    preds = [m.predict(wl2, row) for row in x2]
    flagged = np.mean([p.t2 > m.t2_limit or p.q > m.q_limit for p in preds])
    assert flagged < 0.04                  # new spectra like the calibration ones: about 1 %, not 10 %


def test_union_of_empirical_quantiles_keeps_the_nominal_share():
    rng = np.random.default_rng(0)
    t2, q = rng.chisquare(5, 1000) * rng.uniform(1, 3, 1000), rng.lognormal(0, 1, 1000)
    t2_lim, q_lim, method = domain_limits(t2, q, 0.95)
    assert np.mean((t2 > t2_lim) | (q > q_lim)) == pytest.approx(0.05, abs=0.005)
    assert "empirical" in method
    small = domain_limits(t2[:40], q[:40], 0.95)
    assert small[0] > 0 and small[1] > 0 and "moment" in small[2]


@pytest.mark.parametrize("chain", [[SG, {"op": "snv"}], [SG], [{"op": "snv"}]], ids=["sg+snv", "sg", "snv"])
def test_wet_spectra_reaching_a_dry_model_are_flagged_whatever_the_preprocessing(paired, chain):
    wl, x, y, state, sample = paired
    train_soils = sorted(set(sample), key=int)[:20]
    dry_train = (state == "dry") & np.isin(sample, train_soils)
    m = fit_spectral_model(wl, x[dry_train], y[dry_train], model_id="dry", preprocessing=chain, max_components=8,
                           folds=5, transform="sqrt")
    assert m.meta["moisture"]["basis"] == "calibration"
    wet = [m.predict(wl, row) for row in x[state == "wet"]]
    assert all(p.flag is not QualityFlag.PASS for p in wet)
    assert all(p.moisture > m.moisture.limit for p in wet)    # the moisture check alone catches every one
    dry_new = [m.predict(wl, row) for row in x[(state == "dry") & ~np.isin(sample, train_soils)]]
    assert sum(p.moisture > m.moisture.limit for p in dry_new) <= 1        # of 5 dry soils not in the fit


def test_epo_model_flags_only_spectra_wetter_than_its_pairs(paired):
    wl, x, y, state, sample = paired
    soils = sorted(set(sample), key=int)
    dry = np.array([np.flatnonzero((sample == s) & (state == "dry"))[0] for s in soils])
    wet = np.array([np.flatnonzero((sample == s) & (state == "wet"))[0] for s in soils])
    m = fit_spectral_model(wl, x[dry], y[dry], model_id="epo", preprocessing=[SG], max_components=6, folds=5,
                           epo_pairs=(x[wet], x[dry]), epo_components=2, transform="sqrt")
    assert m.meta["moisture"]["basis"] == "epo_pairs"
    assert all(m.predict(wl, x[i]).flag_test != "moisture_beyond_epo_pairs" for i in wet)
    wetter = x[wet[0]] + 2.0 * (x[wet[0]] - x[dry[0]])                    # three times the wettest effect seen
    assert m.predict(wl, wetter).flag_test in ("moisture_beyond_epo_pairs", "applicability_domain")
    assert m.predict(wl, wetter).moisture > m.moisture.limit


def test_grid_without_the_water_band_has_no_moisture_check_and_says_why():
    grid = np.arange(400.0, 1100.0, 10.0)
    assert band_depth_weights(grid, ((1910, 1950), (1840, 1870), (2080, 2110))) is None
    assert fit_moisture_index(grid, np.ones((20, grid.shape[0])), 0.99) is None
    rng = np.random.default_rng(1)
    x = 0.5 + rng.normal(0, 0.01, (40, grid.shape[0])).cumsum(axis=1) * 0.05
    y = x[:, 30] * 10
    m = fit_spectral_model(grid, x, y, model_id="vis", max_components=4, folds=5)
    assert m.moisture is None and "1940 nm" in m.meta["moisture"]["reason"]


def test_band_depth_is_zero_on_a_straight_baseline_and_positive_in_a_band():
    grid = np.arange(1800.0, 2150.0, 5.0)
    w = band_depth_weights(grid, ((1910, 1950), (1840, 1870), (2080, 2110)))
    assert (0.3 + 1e-4 * grid) @ w == pytest.approx(0.0, abs=1e-12)
    band = 0.1 * np.exp(-0.5 * ((grid - 1930) / 20) ** 2)
    assert band @ w > 0.05
