"""Defaults chosen by cross-validation: parsimonious components, EPO dimension, method and scale, all recorded."""

import numpy as np
import pytest

from calibration.fit import fold_ids
from calibration.model import LocalSettings, fit_spectral_model
from calibration.selection import parsimonious_choice, randomization_p


def test_randomization_test_keeps_the_simpler_model_when_the_difference_is_noise():
    rng = np.random.default_rng(0)
    base = rng.chisquare(1, 200)
    noise = rng.normal(0, 0.3, 200)
    errs = np.column_stack([base * 1.5, base + noise - noise.mean() + 0.005, base])   # k = 1, 2, 3
    chosen, best = parsimonious_choice([errs])
    assert best == 2 and chosen == 1                      # 0.5 % worse is noise; 50 % worse is not
    assert randomization_p([errs], 0, 2) < 0.01 < randomization_p([errs], 1, 2)


def test_groups_of_errors_are_summed_and_flipped_separately():
    rng = np.random.default_rng(1)
    dry = np.column_stack([rng.chisquare(1, 50)] * 2)
    shift = np.column_stack([rng.chisquare(1, 30) * 4, rng.chisquare(1, 30)])
    chosen, best = parsimonious_choice([dry, shift])
    assert best == 1 and chosen == 1                      # the shifts decide


def test_flat_cv_curve_gives_fewer_components_than_its_minimum(nirsoil):
    wl, x, y = nirsoil
    m = fit_spectral_model(wl, x[:100], y[:100], model_id="p", max_components=15, folds=5, transform="sqrt")
    comp = m.meta["selection"]["components"]
    assert m.pls.n_components == comp["chosen"] <= comp["cv_minimum_at"]
    assert len(comp["rmsecv_by_components"]) == 15 and "van der Voet" in m.meta["selection"]["rule"]


def test_a_minimum_at_the_ceiling_is_a_warning_not_a_silent_choice(synthetic):
    wl, x, c = synthetic(80, seed=1)
    m = fit_spectral_model(wl, x, c, model_id="ceil", max_components=1, folds=5)
    assert any("ceiling of 1" in w for w in m.meta["selection"]["warnings"])
    m = fit_spectral_model(wl, x, c, model_id="ok", max_components=8, folds=5)
    assert not any("ceiling" in w for w in m.meta["selection"]["warnings"])


def test_auto_method_compares_global_and_local_by_cv_and_records_why(skewed):
    wl, x, y = skewed(150, seed=5)
    m = fit_spectral_model(wl, x, y, model_id="auto", max_components=8, folds=5, method="auto", transform="sqrt",
                           local=LocalSettings(40, 2, 6))
    rec = m.meta["selection"]["method"]
    assert rec["chosen"] in ("global", "local", "blend") and rec["reason"]
    assert "global" in rec["rmsecv_model_scale"] and len(rec["rmsecv_model_scale"]) == 2
    assert (m.local is None) == (rec["chosen"] == "global")
    small = fit_spectral_model(wl[:], x[:60], y[:60], model_id="small", max_components=8, folds=5, method="auto")
    assert small.meta["selection"]["method"]["chosen"] == "global"
    assert "local PLS is tried from 120" in small.meta["selection"]["method"]["local_skipped"]


def test_epo_components_are_chosen_from_held_out_pairs_and_recorded(synthetic):
    wl, dry, c = synthetic(60, seed=7)
    rng = np.random.default_rng(8)
    water = np.exp(-0.5 * ((wl - 1940) / 50.0) ** 2)
    slope = (wl - 1000) / 1500
    m_ = rng.uniform(0.05, 0.3, (60, 1))
    wet = dry + m_ * water + rng.uniform(0, 0.05, (60, 1)) * slope
    model = fit_spectral_model(wl, dry[:40], c[:40], model_id="e", max_components=8, folds=5,
                               preprocessing=[{"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1}],
                               epo_pairs=(wet[:40], dry[:40]))
    rec = model.meta["selection"]["epo_components"]
    assert 1 <= rec["chosen"] <= 8 and model.meta["epo"]["n_components"] == rec["chosen"]
    assert len(rec["tried"]) == 8 and all("wet_rmse_model_scale" in v for v in rec["tried"].values())
    preds = np.array([model.predict(wl, row).value for row in wet[40:]])
    assert np.sqrt(np.mean((preds - c[40:]) ** 2)) < 0.25 * c.std()


def test_folds_never_split_a_group():
    groups = np.repeat(np.arange(30), 3)
    fold = fold_ids(90, 5, 0, groups)
    assert all(len(set(fold[groups == g])) == 1 for g in range(30))
    assert sorted(np.bincount(fold)) == [18] * 5


def test_spectra_of_low_rank_lower_the_ceiling_and_say_so():
    rng = np.random.default_rng(0)
    wl = np.linspace(1000, 2500, 50)
    a = rng.normal(size=(60, 3))
    x = a @ rng.normal(size=(3, 50))                       # three independent spectral shapes only
    m = fit_spectral_model(wl, x, a[:, 0], model_id="rank3", max_components=20, folds=5, preprocessing=[])
    assert m.pls.n_components <= 3
    assert any("ceiling lowered to 3" in w for w in m.meta["selection"]["warnings"])
