"""Spectral models: the full gateway chain matches the reference chain, files are self-describing."""

import json
import zipfile

import numpy as np
import pytest
from scipy.signal import savgol_filter
from sklearn.cross_decomposition import PLSRegression

from calibration.model import DEFAULT_PREPROCESSING, LocalSettings, ModelFileError, SpectralModel, fit_spectral_model
from calibration.spectra import snv
from humus.records import QualityFlag


@pytest.fixture(scope="module")
def fitted(nirsoil):
    wl, x, y = nirsoil
    return fit_spectral_model(wl, x[:100], y[:100], model_id="ciso-test", version="3", target="Ciso",
                              max_components=12, folds=5)


def test_prediction_chain_matches_scipy_savgol_snv_and_sklearn(fitted, nirsoil):
    wl, x, y = nirsoil
    k = fitted.pls.n_components
    z_train = snv(savgol_filter(x[:100], 11, 2, deriv=1, axis=-1))
    z_test = snv(savgol_filter(x[100:], 11, 2, deriv=1, axis=-1))
    ref = PLSRegression(n_components=k, scale=False).fit(z_train, y[:100])
    preds = [fitted.predict(wl, row) for row in x[100:]]
    assert np.array([p.value for p in preds]) == pytest.approx(np.ravel(ref.predict(z_test)), abs=1e-9)
    # Hotelling T² and Q residual against the calibration set, computed the textbook way.
    t_train, t = ref.transform(z_train), ref.transform(z_test)
    t2 = (t**2 / t_train.var(axis=0, ddof=1)).sum(axis=1)
    resid = (z_test - z_train.mean(axis=0)) - t @ ref.x_loadings_.T
    assert np.array([p.t2 for p in preds]) == pytest.approx(t2, rel=1e-8)
    assert np.array([p.q for p in preds]) == pytest.approx((resid**2).sum(axis=1), rel=1e-8)


def test_prediction_carries_uncertainty_model_id_and_version(fitted, nirsoil):
    wl, x, _ = nirsoil
    p = fitted.predict(wl, x[110])
    assert (p.model_id, p.model_version) == ("ciso-test", "3")
    assert p.uncertainty == pytest.approx(fitted.uncertainty(p.value, p.t2, p.q, 0.0))   # calibration.uncertainty
    assert 0 < p.uncertainty < 5 * fitted.meta["training"]["rmsecv"]
    assert p.flag in (QualityFlag.PASS, QualityFlag.SUSPECT)


def test_spectrum_far_outside_the_calibration_is_suspect(fitted, nirsoil):
    wl, x, _ = nirsoil
    odd = x[110] + 0.3 * np.exp(-0.5 * ((wl - 1900) / 15.0) ** 2)      # an absorption band no soil here had
    p = fitted.predict(wl, odd)
    assert p.q > fitted.q_limit
    assert p.flag is not QualityFlag.PASS and np.isfinite(p.value)
    if p.value >= 0:      # a negative carbon content is worse than out of domain: FAIL prediction_negative
        assert p.flag is QualityFlag.SUSPECT and p.flag_test == "applicability_domain"


def test_negative_prediction_of_a_content_fails(nirsoil):
    wl, x, y = nirsoil
    chain = [{"op": "savgol", "window": 11, "polyorder": 2, "deriv": 1}]     # linear: a direction can be aimed
    m = fit_spectral_model(wl, x[:100], y[:100], model_id="lin", max_components=8, folds=5, preprocessing=chain)
    from calibration.spectra import SavitzkyGolay
    sg = SavitzkyGolay(11, 2, 1).matrix(wl.shape[0])
    d = -(sg.T @ m.pls.coef)                                 # lowers the prediction fastest
    p0 = m.predict(wl, x[100])
    step = (p0.value + 1.0) / (-(sg @ d) @ m.pls.coef)       # to a prediction of -1 %C
    p = m.predict(wl, x[100] + step * d)
    assert p.value == pytest.approx(-1.0, abs=1e-6)
    assert p.flag is QualityFlag.FAIL and p.flag_test == "prediction_negative"


def test_reflectance_and_counts_input_give_the_same_prediction(fitted, nirsoil):
    wl, x, _ = nirsoil
    a = x[105]
    r = 10.0 ** -a
    dark, white = np.full_like(a, 200.0), np.full_like(a, 30200.0)
    counts = dark + r * (white - dark)
    ref = fitted.predict(wl, a).value
    assert fitted.predict(wl, r, kind="reflectance").value == pytest.approx(ref, abs=1e-9)
    assert fitted.predict(wl, counts, kind="counts", dark=dark, white=white).value == pytest.approx(ref, abs=1e-9)
    assert fitted.predict(wl, counts, kind="counts").flag is QualityFlag.MISSING


def test_spectrum_on_another_grid_is_resampled(fitted, nirsoil):
    wl, x, _ = nirsoil
    fine = np.arange(wl[0], wl[-1] + 0.5, 2.0)
    a_fine = np.interp(fine, wl, x[101])
    assert fitted.predict(fine, a_fine).value == pytest.approx(fitted.predict(wl, x[101]).value, abs=1e-9)
    narrow = fine[fine < 2000]
    p = fitted.predict(narrow, np.interp(narrow, wl, x[101]))
    assert p.flag is QualityFlag.MISSING and p.flag_test == "spectrum_incomplete"


def test_model_file_round_trip_is_self_describing(fitted, nirsoil, tmp_path):
    wl, x, _ = nirsoil
    path = fitted.save(tmp_path / "m.npz")
    loaded = SpectralModel.load(path)
    assert (loaded.id, loaded.version, loaded.content_hash) == ("ciso-test", "3", fitted.content_hash)
    assert loaded.predict(wl, x[102]) == fitted.predict(wl, x[102])
    meta = loaded.describe()
    assert meta["preprocessing"] == [dict(s) for s in DEFAULT_PREPROCESSING]
    for key in ("n", "rmsecv", "r2cv", "rpd", "rpiq", "rmsec"):
        assert key in meta["training"]
    assert meta["content_hash"].startswith("sha256:")
    # numpy alone, no pickle, reads it
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["id"] == "ciso-test"
        assert z["wavelengths_nm"] == pytest.approx(wl)


def test_altered_model_file_is_refused(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y_loadings"] = arrays["y_loadings"] * 1.01
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(ModelFileError, match="hash mismatch"):
        SpectralModel.load(tmp_path / "tampered.npz")


@pytest.mark.parametrize("content,match", [(b"sample,1100\n", "not a Humus model"), (None, "not found")])
def test_bad_model_file_gives_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        SpectralModel.load(path)
    bad_zip = tmp_path / "other.npz"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("x.npy", b"garbage")
    with pytest.raises(ModelFileError):
        SpectralModel.load(bad_zip)


def test_small_model_fits_from_arrays_for_the_demo(synthetic):
    wl, x, c = synthetic(80, seed=1)
    model = fit_spectral_model(wl, x, c, model_id="demo-soc", max_components=8, folds=5)
    wl2, x2, c2 = synthetic(20, seed=2)
    preds = np.array([model.predict(wl2, row).value for row in x2])
    assert np.sqrt(np.mean((preds - c2) ** 2)) < 0.25 * c2.std()          # R² above 0.9


def test_local_pls_model_predicts_and_round_trips(nirsoil, tmp_path):
    wl, x, y = nirsoil
    model = fit_spectral_model(wl, x[:100], y[:100], model_id="ciso-local", max_components=10, folds=5,
                               local=LocalSettings(40, 2, 6))
    loaded = SpectralModel.load(model.save(tmp_path / "local.npz"))
    preds = np.array([loaded.predict(wl, row).value for row in x[100:]])
    assert np.sqrt(np.mean((preds - y[100:]) ** 2)) < y[100:].std()
    assert loaded.meta["local"] == {"neighbours": 40, "min_components": 2, "max_components": 6, "blend": False}


def test_fit_refuses_missing_values(nirsoil):
    wl, x, y = nirsoil
    y = y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_spectral_model(wl, x, y, model_id="x")


def test_unusable_spectra_come_back_missing_never_raise(fitted, nirsoil):
    wl, x, _ = nirsoil
    flat = fitted.predict(wl, np.full(wl.shape, 0.5))
    assert flat.flag is QualityFlag.MISSING and flat.flag_test == "spectrum_flat" and np.isnan(flat.value)
    short = fitted.predict(wl[:-3], x[0])
    assert short.flag is QualityFlag.MISSING and short.flag_test == "spectrum_shape"
    holes = x[0].copy()
    holes[10] = np.nan
    assert fitted.predict(wl, holes).flag is QualityFlag.MISSING


def test_reflectance_trained_model_takes_reflectance_by_default(nirsoil):
    wl, x, y = nirsoil
    r = 10.0 ** -x
    model = fit_spectral_model(wl, r[:100], y[:100], model_id="refl", input="reflectance", max_components=8,
                               folds=5)
    same = fit_spectral_model(wl, x[:100], y[:100], model_id="abs", max_components=8, folds=5)
    assert model.meta["input"] == "reflectance"
    assert model.predict(wl, r[105]).value == pytest.approx(same.predict(wl, x[105]).value, abs=1e-9)


def test_local_pls_averages_the_nested_models(nirsoil):
    from calibration.model import _local_pls
    from calibration.pls import fit_pls

    _, x, y = nirsoil
    fit = fit_pls(x[:60], y[:60], 9)
    expected = np.mean([fit.truncate(k).predict(x[60:66]) for k in range(3, 10)], axis=0)
    expected = np.clip(expected, y[:60].min(), y[:60].max())
    assert _local_pls(x[:60], y[:60], x[60:66], LocalSettings(60, 3, 9)) == pytest.approx(expected, abs=1e-10)


def test_local_pls_never_predicts_beyond_its_neighbours_values(nirsoil):
    from calibration.model import _local_pls

    _, x, y = nirsoil
    from calibration.pls import fit_pls

    b = fit_pls(x[:60], y[:60], 3).coef
    step = 10.0 * (y[:60].max() - y[:60].min()) * b / (b @ b)   # far along the regression direction
    mean = x[:60].mean(axis=0)
    p = _local_pls(x[:60], y[:60], np.vstack([mean + step, mean - step]), LocalSettings(60, 3, 9))
    assert y[:60].min() <= p.min() and p.max() <= y[:60].max()
    assert p.max() - p.min() > 0.5 * (y[:60].max() - y[:60].min())   # clipped at both ends, not flattened


def test_blended_local_model_averages_local_and_global_predictions(nirsoil):
    from calibration.model import _local_pls

    wl, x, y = nirsoil
    blended = fit_spectral_model(wl, x[:100], y[:100], model_id="b", max_components=8, folds=5,
                                 local=LocalSettings(40, 2, 6, blend=True))
    glob = fit_spectral_model(wl, x[:100], y[:100], model_id="g", max_components=8, folds=5)
    z = blended.chain(x[105])
    corr = np.corrcoef(np.vstack([z, blended.arrays["library_x"]]))[0, 1:]
    nn = np.argsort(-corr)[:40]
    local = _local_pls(blended.arrays["library_x"][nn], y[:100][nn], z[None, :], LocalSettings(40, 2, 6))[0]
    expected = 0.5 * (local + glob.predict(wl, x[105]).value)
    assert blended.predict(wl, x[105]).value == pytest.approx(expected, abs=1e-9)


def test_local_component_ceiling_follows_the_global_choice_unless_given(nirsoil):
    wl, x, y = nirsoil
    model = fit_spectral_model(wl, x[:100], y[:100], model_id="ceil", max_components=12, folds=5, method="local")
    k = model.meta["pls"]["n_components"]
    assert model.meta["local"]["max_components"] == max(3, min(k, 58))
    assert model.meta["selection"]["local_components"]["max"] == model.meta["local"]["max_components"]
    given = fit_spectral_model(wl, x[:100], y[:100], model_id="given", max_components=12, folds=5, method="local",
                               local=LocalSettings(60, 3, 15))
    assert given.meta["local"]["max_components"] == 15
    assert "local_components" not in given.meta["selection"]
