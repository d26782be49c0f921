"""Recalibration of archived spectra: a second version beside the first, never over it, idempotent."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from calibration.model import fit_spectral_model
from humus.cli import main
from humus.records import Observation, QualityFlag, Source
from observatory import query, versions
from observatory.recalibrate import RecalibrationError, recalibrate
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
H = 3600 * 10**9
WL = np.linspace(1350.0, 2500.0, 64)


def _reflectance(carbon: np.ndarray) -> np.ndarray:
    return 0.3 + 0.05 * carbon[:, None] * np.sin(WL / 150.0)[None, :]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    y = rng.uniform(0.5, 4.0, 40)
    x = _reflectance(y) + rng.normal(0, 0.002, (40, len(WL)))
    path = tmp_path_factory.mktemp("model") / "soc-v2.npz"
    fit_spectral_model(WL, x, y, model_id="soc-test", version="2", input="reflectance", max_components=4, folds=4,
                       preprocessing=[{"op": "savgol", "window": 7, "polyorder": 2, "deriv": 1}]).save(path)
    return path


CARBON = np.linspace(1.0, 3.0, 12)


def _archive(url: str) -> None:
    """12 hourly readings of nir-1 (counts with dark and white references) and the gateway's v1 SOC of each."""
    dark, white = np.full(len(WL), 100.0), np.full(len(WL), 4100.0)
    counts = dark + _reflectance(CARBON) * (white - dark)
    obs = []
    for i in range(len(CARBON)):
        t = T0 + i * H
        common = dict(site="north-field", gateway="gw-1", probe="nir-1", time_ns=t, depth_cm=10.0)
        if i == 5:     # a failed poll: the gap is recorded, and stays a gap
            obs.append(Observation(quantity="spectrum", value=math.nan, unit="counts", flag=QualityFlag.MISSING,
                                   flag_test="timeout", **common))
        else:
            obs.append(Observation(quantity="spectrum", value=tuple(counts[i]), unit="counts",
                                   wavelengths_nm=tuple(WL), flag=QualityFlag.NOT_EVALUATED, **common))
            for name, ref in (("spectrum_dark", dark), ("spectrum_white", white)):
                obs.append(Observation(quantity=name, value=tuple(ref), unit="counts", wavelengths_nm=tuple(WL),
                                       **common))
        obs.append(Observation(quantity="soc", value=9.9, unit="%", uncertainty=0.4, flag=QualityFlag.PASS,
                               source=Source.CALIBRATED, model_id="soc-test", model_version="1", **common))
    s = open_store(url)
    s.write(obs)
    s.close()


def test_recalibration_writes_a_second_version_and_leaves_the_first_intact(store_url, model_file):
    from calibration.model import SpectralModel

    _archive(store_url)
    model = SpectralModel.load(model_file)
    store = open_store(store_url)
    try:
        res = recalibrate(store, model)
    finally:
        store.close()
    assert (res.spectra, res.written, res.missing, res.series) == (12, 12, 1, 1)
    (v1,) = query.series(store_url, quantity="soc", model_version="1")
    assert v1.value.tolist() == [9.9] * 12 and set(v1.model_version) == {"1"}
    (newest,) = query.series(store_url, quantity="soc")
    assert set(newest.model_version) == {"2"} and newest.flag[5] == 9
    expected = np.array([model.predict(WL, r, kind="reflectance").value for r in _reflectance(CARBON)])
    ok = np.arange(12) != 5
    assert np.allclose(newest.value[ok], expected[ok], atol=1e-9)
    assert np.allclose(newest.value[ok], CARBON[ok], atol=0.1)          # and the model is right
    # idempotent: the same run again leaves the same rows, once
    store = open_store(store_url)
    try:
        again = recalibrate(store, model)
    finally:
        store.close()
    assert again.written == 12
    every = query.series(store_url, quantity="soc", versions="all")
    assert sorted((set(s.model_version).pop(), len(s)) for s in every) == [("1", 12), ("2", 12)]
    (twice,) = query.series(store_url, quantity="soc")
    assert np.array_equal(twice.value, newest.value, equal_nan=True)


def test_another_model_under_the_same_name_is_refused(sqlite_store_url, model_file, tmp_path):
    from calibration.model import SpectralModel

    _archive(sqlite_store_url)
    store = open_store(sqlite_store_url)
    try:
        recalibrate(store, SpectralModel.load(model_file))
        rng = np.random.default_rng(4)
        y = rng.uniform(0.5, 4.0, 40)
        other = fit_spectral_model(WL, _reflectance(y) + rng.normal(0, 0.002, (40, len(WL))), y, model_id="soc-test",
                                   version="2", input="reflectance", max_components=3, folds=4,
                                   preprocessing=[{"op": "savgol", "window": 7, "polyorder": 2, "deriv": 1}])
        with pytest.raises(RecalibrationError, match="already recalibrated into this archive from another file"):
            recalibrate(store, other)
    finally:
        store.close()


def test_humus_recalibrate_reports_what_it_wrote(sqlite_store_url, model_file, capsys):
    _archive(sqlite_store_url)
    assert main(["recalibrate", "--store", sqlite_store_url, "--model", str(model_file), "--since",
                 "2026-01-01T03:00"]) == 0
    err = capsys.readouterr().err
    assert "9 values of soc from 9 spectra of 1 probe(s) written as soc-test version 2" in err
    assert "1 missing" in err
    assert main(["recalibrate", "--store", sqlite_store_url, "--model", str(model_file) + ".nope"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_calibrate_predict_applies_a_model_to_lab_spectra(model_file, tmp_path, capsys):
    data = tmp_path / "cores.csv"
    refl = _reflectance(np.array([1.5, 2.5]))
    rows = ["sample," + ",".join(f"{w:g}" for w in WL)] + [f"c{i}," + ",".join(repr(float(v)) for v in r)
                                                           for i, r in enumerate(refl)]
    data.write_text("\n".join(rows) + "\n")
    assert main(["calibrate", "predict", "--model", str(model_file), "--data", str(data)]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["sample"] for r in out] == ["c0", "c1"]
    assert [round(float(r["value"]), 1) for r in out] == [1.5, 2.5]
    assert {r["model_id"] + "@" + r["model_version"] for r in out} == {"soc-test@2"}
    assert float(out[0]["uncertainty"]) > 0


def test_variant_names_are_stable_and_short():
    q = versions.variant_quantity("soc", "nir-pls", "2026.1")
    assert q == versions.variant_quantity("soc", "nir-pls", "2026.1") and versions.base_quantity(q) == "soc"
    assert q != versions.variant_quantity("soc", "nir-pls", "2026.2")
    assert versions.catalogue_time_ns("soc", "nir-pls", "2026.1") < versions.CATALOGUE_END_NS
    assert versions.version_order("2026.10") > versions.version_order("2026.9")
