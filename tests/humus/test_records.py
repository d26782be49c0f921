"""The Observation record refuses what the archive must never hold."""

import math

import pytest

from humus.records import Observation, QualityFlag, Source

T0 = 1_790_000_000_000_000_000


def obs(**kw):
    base = dict(site="farm-1", gateway="gw-1", probe="teros-a", quantity="vwc", time_ns=T0, value=0.25, unit="m3/m3")
    base.update(kw)
    return Observation(**base)


def test_a_valid_observation_keeps_every_field():
    o = obs(depth_cm=10.0, uncertainty=0.02, flag=QualityFlag.PASS, flag_test="gross_range",
            source=Source.CALIBRATED, model_id="teros12-mineral", model_version="1")
    assert o.series_key == ("farm-1", "gw-1", "teros-a", 10.0, "vwc", "calibrated")
    assert not o.is_spectrum


@pytest.mark.parametrize("kw, phrase", [
    (dict(site="Farm 1"), "site"),
    (dict(gateway=""), "gateway"),
    (dict(probe="x" * 65), "probe"),
    (dict(quantity="Soil Temp"), "quantity"),
    (dict(time_ns=-1), "time_ns"),
    (dict(time_ns=1.5), "time_ns"),
    (dict(time_ns=5_000_000_000 * 10**9), "time_ns"),
    (dict(value=math.inf), "value"),
    (dict(value=math.nan), "value"),
    (dict(value=True), "value"),
    (dict(uncertainty=-0.1), "uncertainty"),
    (dict(depth_cm=math.nan), "depth_cm"),
    (dict(source=Source.CALIBRATED), "model_id"),
    (dict(value=(1.0, 2.0), wavelengths_nm=(1000.0,)), "wavelengths_nm"),
    (dict(value=(1.0, math.nan), wavelengths_nm=(1000.0, 1002.0)), "spectrum"),
])
def test_invalid_observation_is_refused_with_the_field_named(kw, phrase):
    with pytest.raises(ValueError, match=phrase):
        obs(**kw)


def test_missing_value_is_nan_only_with_flag_missing():
    o = obs(value=math.nan, flag=QualityFlag.MISSING, flag_test="timeout")
    assert math.isnan(o.value)


def test_spectrum_carries_its_wavelength_axis():
    o = obs(quantity="reflectance", value=(0.1, 0.2, 0.3), wavelengths_nm=(1400.0, 1405.0, 1410.0), unit="1")
    assert o.is_spectrum and len(o.wavelengths_nm) == 3


def test_worst_flag_follows_qartod_precedence():
    F = QualityFlag
    assert F.worst(F.PASS, F.SUSPECT) is F.SUSPECT
    assert F.worst(F.NOT_EVALUATED, F.PASS) is F.PASS
    assert F.worst(F.FAIL, F.MISSING, F.SUSPECT) is F.MISSING
    assert F.worst() is F.NOT_EVALUATED


@pytest.mark.parametrize("kw, phrase", [
    (dict(probe="teros-a\n"), "probe"),
    (dict(quantity="vwc\n"), "quantity"),
    (dict(unit="m3/m3\n"), "unit"),
    (dict(flag_test="spike\x00"), "flag_test"),
    (dict(source=Source.CALIBRATED, model_id="m\ud800"), "model_id"),
    (dict(model_version="1\x9b"), "model_version"),
    (dict(flag_test="x" * 129), "flag_test"),
    (dict(depth_cm=10**400), "depth_cm"),
    (dict(wavelengths_nm=(1400.0,)), "wavelengths_nm"),
    (dict(revision=-1), "revision"),
    (dict(revision=2**31), "revision"),
    (dict(revision=True), "revision"),
])
def test_what_no_store_can_hold_exactly_is_refused_in_one_line(kw, phrase):
    with pytest.raises(ValueError, match=phrase) as e:
        obs(**kw)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_a_revision_is_kept_and_checked_on_the_fast_path_too():
    obs()  # the names are now known: the next ones take the fast path
    assert obs(revision=2).revision == 2 and obs().revision == 0
    with pytest.raises(ValueError, match="revision"):
        obs(revision=-1)
