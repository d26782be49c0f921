"""Moisture and EC: worked numbers from the published equations, flags instead of clipping."""

import math

import numpy as np
import pytest

from calibration.moisture import (PolynomialCalibration, ec_at_25c, polynomial_vwc, teros12_permittivity,
                                  teros12_vwc, topp_vwc)
from humus.records import QualityFlag


def test_teros12_mineral_equation_worked_example():
    # METER TEROS 12 manual Eq. 5: 3.879e-4 * 2500 - 0.6956 = 0.27415
    r = teros12_vwc(2500)
    assert r.value == pytest.approx(0.27415, abs=1e-12)
    assert r.uncertainty == 0.03
    assert r.flag is QualityFlag.PASS and r.flag_test == ""


def test_teros12_soilless_equation_worked_example():
    # Eq. 6 at RAW 2500: 6.771e-10*2500³ - 5.105e-6*2500² + 1.302e-2*2500 - 10.848
    expected = 6.771e-10 * 15.625e9 - 5.105e-6 * 6.25e6 + 32.55 - 10.848
    assert expected == pytest.approx(0.3754375)
    assert teros12_vwc(2500, media="soilless").value == pytest.approx(expected, abs=1e-12)


def test_teros12_permittivity_air_reading_is_about_one():
    # Eq. 7: RAW 1800 -> (2.887e-9*1800³ - 2.080e-5*1800² + 5.276e-2*1800 - 43.39)² ≈ 1.0465
    r = teros12_permittivity(1800)
    assert r.value == pytest.approx((2.887e-9 * 1800**3 - 2.080e-5 * 1800**2 + 5.276e-2 * 1800 - 43.39) ** 2)
    assert r.value == pytest.approx(1.0465, abs=1e-3)
    assert r.flag is QualityFlag.PASS


def test_topp_equation_worked_examples():
    # Topp et al. 1980: ε = 20 -> -0.053 + 0.584 - 0.22 + 0.0344 = 0.3454
    r = topp_vwc([4.0, 20.0])
    assert r.value[1] == pytest.approx(0.3454, abs=1e-12)
    assert r.value[0] == pytest.approx(-0.053 + 0.1168 - 0.0088 + 0.0002752, abs=1e-12)
    assert list(r.flag) == [QualityFlag.PASS, QualityFlag.PASS]


def test_vectorised_over_arrays_with_per_element_flags():
    raw = np.array([1500.0, 2500.0, 3500.0, np.nan])
    r = teros12_vwc(raw)
    assert r.value.shape == (4,) and r.uncertainty.shape == (4,)
    assert list(r.flag) == [QualityFlag.FAIL, QualityFlag.PASS, QualityFlag.SUSPECT, QualityFlag.MISSING]
    assert list(r.flag_test) == ["raw_range", "", "raw_range_high", "missing"]


def test_slightly_negative_water_content_is_suspect_not_fail():
    # Topp at ε = 1.5: -0.053 + 0.0438 - 0.0012375 + 0.0000145 = -0.0104 (air gap around the rods?)
    r = topp_vwc(1.5)
    assert r.value == pytest.approx(-0.0104230, abs=1e-6)
    assert r.flag is QualityFlag.SUSPECT and r.flag_test == "vwc_below_zero"


def test_out_of_limit_values_are_flagged_not_clipped():
    r = teros12_vwc(1500)                      # below the air reading: impossible count
    assert r.value == pytest.approx(3.879e-4 * 1500 - 0.6956)
    assert r.value < 0
    assert r.flag is QualityFlag.FAIL
    r = topp_vwc(90.0)                          # more than water
    assert r.value > 1.0 and r.flag is QualityFlag.FAIL


def test_polynomial_calibration_from_config_coefficients():
    cal = PolynomialCalibration(coefficients=(-0.5, 3e-4), input="raw", uncertainty=0.015, max_vwc=0.45)
    r = polynomial_vwc([2500.0, 3400.0], cal)
    assert r.value == pytest.approx([0.25, 0.52])
    assert list(r.uncertainty) == [0.015, 0.015]
    assert list(r.flag) == [QualityFlag.PASS, QualityFlag.SUSPECT]
    assert r.flag_test[1] == "raw_range_high" or r.flag_test[1] == "vwc_above_range"


def test_polynomial_calibration_is_loadable_from_toml_table(tmp_path):
    from humus.config import ConfigError, load_section

    cal = load_section(PolynomialCalibration, {"coefficients": [0.1, 0.02], "input": "permittivity"},
                       file="g.toml", key="probe.calibration")
    assert cal.coefficients == (0.1, 0.02)
    assert polynomial_vwc(10.0, cal).value == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="input"):
        load_section(PolynomialCalibration, {"coefficients": [0.1], "input": "volts"}, file="g.toml")


def test_ec_temperature_correction_to_25c():
    # Sheets & Hendrickx (1995): factor 0.4470 + 1.4034 exp(-T/26.815)
    r = ec_at_25c([1000.0, 1000.0], [25.0, 10.0])
    assert r.value[0] == pytest.approx(1000 * (0.4470 + 1.4034 * np.exp(-25 / 26.815)))
    assert r.value[0] == pytest.approx(1000.0, rel=1e-3)     # 25 °C is (nearly) unchanged
    assert r.value[1] == pytest.approx(1413.54, abs=0.01)    # cold soil reads low: corrected upwards
    assert r.uncertainty[0] == pytest.approx((0.05 * 1000 + 10) * 0.99944, rel=1e-4)


def test_ec_flags_frozen_soil_and_negative_ec():
    r = ec_at_25c([500.0, -5.0], [-2.0, 20.0])
    assert list(r.flag) == [QualityFlag.SUSPECT, QualityFlag.FAIL]
    assert list(r.flag_test) == ["ec_frozen_soil", "ec_physical_limits"]
    assert r.value[1] < 0                        # not clipped


def test_unknown_media_is_refused():
    with pytest.raises(ValueError, match="media"):
        teros12_vwc(2500, media="peat")


def test_topp_uncertainty_carries_the_permittivity_uncertainty():
    # dθ/dε = 2.92e-2 - 1.1e-3 ε + 1.29e-5 ε²; at ε = 10: 0.01919; with ±1: sqrt(0.013² + 0.01919²)
    r = topp_vwc(10.0)
    assert r.uncertainty == pytest.approx(math.hypot(0.013, 2.92e-2 - 1.1e-2 + 1.29e-3), rel=1e-9)
    assert topp_vwc(10.0, permittivity_uncertainty=0.0).uncertainty == pytest.approx(0.013)
    # a numerical derivative of the equation agrees with the analytic slope
    h = 1e-5
    slope = (topp_vwc(10.0 + h).value - topp_vwc(10.0 - h).value) / (2 * h)
    assert topp_vwc(10.0, permittivity_uncertainty=2.0).uncertainty == pytest.approx(math.hypot(0.013, 2 * slope))
    # above 40 the TEROS 12 specification is 15 % of ε
    assert topp_vwc(50.0).uncertainty > topp_vwc(30.0).uncertainty


def test_moisture_calibration_for_another_driver_is_a_configuration_problem():
    from calibration.applicability import check_moisture_calibration

    assert check_moisture_calibration("teros12_vwc", "teros12", probe="t1") == []
    problems = check_moisture_calibration("teros12_vwc", "modbus-soil", probe="m1")
    assert len(problems) == 1 and "probe m1 (driver modbus-soil)" in problems[0] and "RAW counts" in problems[0]
    ec = check_moisture_calibration("ec25", "teros12", probe="t1")
    assert len(ec) == 1 and "second time" in ec[0]
    assert check_moisture_calibration("ec25", "modbus-soil") == []
    assert check_moisture_calibration("polynomial_vwc", "modbus-soil", polynomial_input="raw")
    assert check_moisture_calibration("topp_vwc", "teros12", input_unit="counts")
