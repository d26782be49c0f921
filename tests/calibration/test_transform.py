"""The square-root target scale: back-transform with its bias term, chosen by CV, stored in the model file."""

import json

import numpy as np
import pytest

from calibration.model import SpectralModel, content_hash, fit_spectral_model
from calibration.transform import TargetTransform


def test_sqrt_back_transform_adds_the_residual_variance_and_never_goes_negative():
    tf = TargetTransform("sqrt", 0.04)
    assert tf.forward([0.0, 4.0, 9.0]) == pytest.approx([0.0, 2.0, 3.0])
    # E[y] = E[v]^2 + Var(v): 2^2 + 0.04; a negative v is 0 on the sqrt scale.
    assert tf.inverse(np.array([-1.0, 0.0, 2.0])) == pytest.approx([0.04, 0.04, 4.04])
    assert TargetTransform().inverse(-1.5) == -1.5
    with pytest.raises(ValueError, match=">= 0"):
        tf.forward([1.0, -0.1])
    with pytest.raises(ValueError, match="expected one of"):
        TargetTransform("log")


def _skewed(n, seed):
    """Spectra linear in √c (a Beer-Lambert band saturating with carbon); c right-skewed like soils."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(1000.0, 2500.0, 80)
    c = rng.lognormal(0.0, 0.8, n)
    band = np.exp(-0.5 * ((wl - 1700.0) / 60.0) ** 2)
    x = 0.4 + 0.1 * np.sqrt(c)[:, None] * band + rng.normal(0, 2e-4, (n, 80))
    return wl, x, c


def test_auto_keeps_sqrt_when_it_lowers_the_cv_error_and_predicts_better():
    wl, x, c = _skewed(160, 3)
    none = fit_spectral_model(wl, x[:120], c[:120], model_id="n", preprocessing=(), max_components=6, folds=5)
    auto = fit_spectral_model(wl, x[:120], c[:120], model_id="a", preprocessing=(), max_components=6, folds=5,
                              transform="auto")
    tt = auto.meta["target_transform"]
    assert tt["name"] == "sqrt" and tt["requested"] == "auto"
    assert tt["rmsecv_by_transform"]["sqrt"] < tt["rmsecv_by_transform"]["none"]
    assert 0 < tt["residual_var"] < 0.01
    err = {m.id: np.sqrt(np.mean([(m.predict(wl, row).value - v) ** 2 for row, v in zip(x[120:], c[120:])]))
           for m in (none, auto)}
    assert err["a"] < 0.5 * err["n"]


def test_auto_falls_back_to_no_transform_for_negative_targets():
    wl, x, c = _skewed(60, 4)
    m = fit_spectral_model(wl, x, c - 1.0, model_id="neg", preprocessing=(), max_components=4, folds=5,
                           transform="auto")
    assert m.meta["target_transform"]["name"] == "none"
    with pytest.raises(ValueError, match=">= 0"):
        fit_spectral_model(wl, x, c - 1.0, model_id="neg", preprocessing=(), max_components=4, folds=5,
                           transform="sqrt")


def test_sqrt_model_round_trips_and_version_1_files_still_load(tmp_path):
    wl, x, c = _skewed(80, 5)
    m = fit_spectral_model(wl, x, c, model_id="s", preprocessing=(), max_components=4, folds=5, transform="sqrt")
    loaded = SpectralModel.load(m.save(tmp_path / "s.npz"))
    assert loaded.meta["format_version"] == 2 and loaded.transform == m.transform
    assert loaded.predict(wl, x[0]).value == pytest.approx(m.predict(wl, x[0]).value, rel=1e-12)
    # A format-1 file (written before target transforms existed) loads as an untransformed model.
    old = fit_spectral_model(wl, x, c, model_id="v1", preprocessing=(), max_components=4, folds=5)
    meta = {k: v for k, v in old.meta.items() if k != "target_transform"}
    meta["format_version"] = 1
    meta["content_hash"] = content_hash(meta, old.arrays)
    path = SpectralModel(meta, old.arrays).save(tmp_path / "v1.npz")
    v1 = SpectralModel.load(path)
    assert v1.transform.name == "none"
    assert v1.predict(wl, x[3]).value == pytest.approx(old.predict(wl, x[3]).value, rel=1e-12)
    assert json.loads(json.dumps(v1.describe()))["format_version"] == 1
