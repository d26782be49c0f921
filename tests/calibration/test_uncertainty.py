"""Prediction uncertainty that is calibrated: per sample, larger where the model is weaker, right in every tercile."""

import numpy as np
import pytest

from calibration.model import SpectralModel, content_hash, fit_spectral_model
from calibration.model_file import ModelFileError
from calibration.uncertainty import UncertaintyModel, coverage, fit_uncertainty


@pytest.fixture(scope="module")
def skewed_model(skewed):
    wl, x, y = skewed(400, seed=1)
    return fit_spectral_model(wl, x, y, model_id="skewed", max_components=10, folds=5, transform="auto")


def _within_targets(cov):
    """±1u covers 68 ± 5 % and ±2u 95 ± 3 %, overall and in each tercile of the reference values."""
    parts = [cov] + cov["terciles"]
    return all(0.63 <= p["one_sigma"] <= 0.73 and 0.92 <= p["two_sigma"] <= 0.98 for p in parts)


def test_cross_validated_coverage_is_recorded_and_on_target(skewed_model):
    cov = skewed_model.meta["uncertainty"]["coverage_cv"]
    assert cov["n"] == 400 and len(cov["terciles"]) == 3
    assert _within_targets(cov), cov


def test_held_out_coverage_is_on_target_in_every_tercile_where_one_rmsecv_is_not(skewed_model, skewed):
    wl, x, y = skewed(1500, seed=2)
    preds = [skewed_model.predict(wl, row) for row in x]
    values = np.array([p.value for p in preds])
    u = np.array([p.uncertainty for p in preds])
    assert _within_targets(coverage(y, values, u))
    # The old single figure: low-carbon soils over-covered, high-carbon ones under-covered.
    flat = coverage(y, values, np.full_like(u, skewed_model.meta["training"]["rmsecv"]))
    assert flat["terciles"][0]["one_sigma"] > 0.9 and flat["terciles"][2]["one_sigma"] < 0.7


def test_uncertainty_grows_with_the_carbon_level_and_ranks_the_errors(skewed_model, skewed):
    wl, x, y = skewed(600, seed=3)
    preds = [skewed_model.predict(wl, row) for row in x]
    values = np.array([p.value for p in preds])
    u = np.array([p.uncertainty for p in preds])
    low, high = values < np.quantile(values, 0.2), values > np.quantile(values, 0.8)
    assert u[high].mean() > 3 * u[low].mean()
    order = np.argsort(np.argsort(u)), np.argsort(np.argsort(np.abs(values - y)))
    assert np.corrcoef(*order)[0, 1] > 0.4                    # Spearman rank correlation with the actual error


def test_uncertainty_model_round_trips_through_the_model_file(skewed_model, tmp_path, skewed):
    wl, x, _ = skewed(5, seed=4)
    loaded = SpectralModel.load(skewed_model.save(tmp_path / "m.npz"))
    assert [loaded.predict(wl, r).uncertainty for r in x] == [skewed_model.predict(wl, r).uncertainty for r in x]
    meta = skewed_model.meta["uncertainty"]
    assert UncertaintyModel.from_meta(meta, skewed_model.arrays).to_meta() == meta


def test_mondrian_scales_follow_the_error_level_of_each_bin():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 5.0, 800)
    obs = pred + rng.normal(0, 0.1 * pred)                     # error sd 10 % of the level
    t2, q = rng.chisquare(3, 800), rng.chisquare(20, 800)
    m = fit_uncertainty(pred, obs, t2, q, 3)
    assert len(m.scales) == 5 and m.coef[3] > 0.5               # the level term carries the growth
    u = m.many(pred, t2, q, np.sqrt(pred))
    assert np.corrcoef(u, 0.1 * pred)[0, 1] > 0.9
    assert 0.63 <= m.coverage_cv["one_sigma"] <= 0.73


def test_old_model_files_keep_the_leverage_uncertainty(skewed_model, skewed):
    wl, x, _ = skewed(1, seed=5)
    meta = {k: v for k, v in skewed_model.meta.items() if k != "uncertainty"}
    old = SpectralModel(meta, skewed_model.arrays)
    p = old.predict(wl, x[0])
    tr = meta["training"]
    assert p.uncertainty == pytest.approx(tr["rmsecv"] * np.sqrt(1 + 1 / tr["n"] + p.t2 / (tr["n"] - 1)))


def _clustered(n, seed, local):
    """Errors whose size depends on where the sample sits in score space (local=True) or on nothing (False)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 3))
    pred = rng.uniform(1.0, 3.0, n)
    sd = np.where(scores[:, 0] > 0.5, 0.5, 0.05) if local else np.full(n, 0.2)
    return pred, pred + rng.normal(0, sd), rng.chisquare(3, n), rng.chisquare(20, n), scores


def test_neighbour_term_is_kept_where_errors_cluster_in_score_space_and_dropped_where_they_do_not():
    pred, obs, t2, q, scores = _clustered(600, 0, True)
    m = fit_uncertainty(pred, obs, t2, q, 3, scores=scores)
    assert m.uses_neighbours and m.neighbour_choice["used"] and m.coef[4] > 0.5
    # On new samples the neighbour term separates the two error regimes (a tenfold step in the error):
    # without it ±2u covers 43 % of the noisy region and 99.9 % of the quiet one. 20 neighbours blur the
    # step at its edge, so the noisy region stays somewhat under-covered.
    p2, o2, t2b, q2, s2 = _clustered(2000, 1, True)
    u = m.many(p2, t2b, q2, np.zeros(2000), s2)
    e, noisy = np.abs(p2 - o2), s2[:, 0] > 0.5
    assert np.mean(e[noisy] <= 2 * u[noisy]) > 0.85 and np.mean(e[~noisy] <= 2 * u[~noisy]) < 0.97
    assert 0.5 < np.mean(e[noisy] <= u[noisy]) < np.mean(e[~noisy] <= u[~noisy]) < 0.78
    again = UncertaintyModel.from_meta(m.to_meta(), m.arrays())
    assert np.array_equal(again.many(p2, t2b, q2, np.zeros(2000), s2), u)
    assert again(p2[0], t2b[0], q2[0], 0.0, s2[0]) == pytest.approx(u[0])
    assert not fit_uncertainty(pred, obs, t2, q, 3).uses_neighbours          # no scores: no neighbour term
    pred, obs, t2, q, scores = _clustered(600, 2, False)
    noise = fit_uncertainty(pred, obs, t2, q, 3, scores=scores)
    assert not noise.uses_neighbours and noise.neighbour_choice["used"] is False and noise.arrays() == {}


def test_a_newer_uncertainty_version_or_missing_neighbour_arrays_are_refused_with_one_line(skewed_model, tmp_path):
    import json

    def save(meta, arrays, name):
        meta = {**meta, "content_hash": content_hash(meta, arrays)}
        path = tmp_path / name
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
        return path

    newer = {**skewed_model.meta, "uncertainty": {**skewed_model.meta["uncertainty"], "version": 3}}
    with pytest.raises(ModelFileError, match="uncertainty version 3: this Humus reads 1, 2") as e:
        SpectralModel.load(save(newer, skewed_model.arrays, "v3.npz"))
    assert "\n" not in str(e.value)
    unc = {**skewed_model.meta["uncertainty"], "version": 2, "coef": skewed_model.meta["uncertainty"]["coef"] + [0.3],
           "neighbours": {"n": 20, "nn_ref": 0.01, "arrays": ["uncertainty_scores", "uncertainty_errors"]}}
    with pytest.raises(ModelFileError, match="uncertainty_scores"):
        SpectralModel.load(save({**skewed_model.meta, "uncertainty": unc}, skewed_model.arrays, "nn.npz"))
