"""One reading -> raw, flagged and calibrated observations; failures recorded, never lost."""

from __future__ import annotations

import math
import time

from collector.config import CalibrationSettings, GatewayConfig, GatewaySettings, ProbeSettings, QcSettings, GrossRangeQc
from collector.pipeline import ProbePipeline
from collector.calibrate import Calibrator
from firmware_bridge.reading import DriverStatus, RawValue, Reading
from humus.records import QualityFlag, Source

QUANTITIES = {"raw_counts": "counts", "soil_temp": "degC", "ec_bulk": "uS/cm"}


def pipeline(**probe) -> ProbePipeline:
    cfg = GatewayConfig(gateway=GatewaySettings(site="s1", id="gw1"))
    p = ProbeSettings(id="t1", driver="teros12", port="/dev/null", interval_s=60, depth_cm=10, **probe)
    return ProbePipeline(cfg, p, QUANTITIES)


def reading(status=DriverStatus.OK, **values) -> Reading:
    return Reading(probe="t1", time_ns=time.time_ns(), status=status,
                   values={k: RawValue(v, QUANTITIES[k]) for k, v in values.items()})


def test_a_failed_poll_records_every_quantity_as_missing_with_the_driver_status():
    obs, _ = pipeline().process(reading(DriverStatus.TIMEOUT), 0)
    assert {o.quantity for o in obs} == set(QUANTITIES)
    assert all(math.isnan(o.value) and o.flag is QualityFlag.MISSING and o.flag_test == "timeout" for o in obs)


def test_raw_values_are_kept_beside_the_calibrated_value_with_model_and_uncertainty():
    p = pipeline(calibration={"vwc": CalibrationSettings(model="teros12_vwc", input="raw_counts")})
    obs, _ = p.process(reading(raw_counts=2500.0, soil_temp=21.0, ec_bulk=300.0), 0)
    raw = {o.quantity: o for o in obs if o.source is Source.RAW}
    cal = [o for o in obs if o.source is Source.CALIBRATED]
    assert raw["raw_counts"].value == 2500.0 and raw["raw_counts"].depth_cm == 10
    assert len(cal) == 1 and cal[0].quantity == "vwc"
    assert math.isclose(cal[0].value, 3.879e-4 * 2500 - 0.6956)
    assert cal[0].model_id == "teros12-vwc-mineral" and cal[0].model_version and cal[0].uncertainty == 0.03


def test_a_calibration_that_raises_keeps_the_raw_value_and_flags_the_calibrated_one_missing():
    p = pipeline(calibration={"vwc": CalibrationSettings(model="teros12_vwc", input="raw_counts")})
    p.calibrators[0]._fn = lambda x: 1 / 0
    obs, _ = p.process(reading(raw_counts=2500.0, soil_temp=21.0, ec_bulk=300.0), 0)
    cal = [o for o in obs if o.source is Source.CALIBRATED][0]
    assert math.isnan(cal.value) and cal.flag is QualityFlag.MISSING and cal.flag_test == "calibration_error"
    assert [o.value for o in obs if o.quantity == "raw_counts"] == [2500.0]


def test_qc_flags_the_value_and_names_the_test():
    p = pipeline(qc={"soil_temp": QcSettings(gross_range=GrossRangeQc((-40, 60), (-5, 35)))})
    obs, state = p.process(reading(raw_counts=2500.0, soil_temp=45.0, ec_bulk=300.0), 60 * 10**9)
    t = [o for o in obs if o.quantity == "soil_temp"][0]
    assert t.flag is QualityFlag.SUSPECT and t.flag_test == "gross_range"
    assert "t1/soil_temp/raw" in state


def test_a_reading_taken_with_an_unsynchronised_clock_is_suspect():
    obs, _ = pipeline().process(reading(raw_counts=2500.0, soil_temp=21.0, ec_bulk=300.0), 0, clock_synced=False)
    assert all(o.flag is QualityFlag.SUSPECT and o.flag_test == "clock_unsynced" for o in obs)


def test_a_stuck_probe_keeps_its_values_flagged_suspect():
    obs, _ = pipeline().process(reading(DriverStatus.STUCK, raw_counts=2500.0, soil_temp=21.0, ec_bulk=300.0), 0)
    assert all(o.flag is QualityFlag.SUSPECT and o.flag_test == "stuck" and not math.isnan(o.value) for o in obs)


def test_ec25_calibrator_reads_two_raw_quantities():
    c = Calibrator("ec25", CalibrationSettings(model="ec25", input="ec_bulk", temperature_input="soil_temp"))
    v = c.apply(reading(raw_counts=2500.0, soil_temp=25.0, ec_bulk=300.0))
    assert math.isclose(v.value, 300.0, rel_tol=0.01) and v.unit == "uS/cm"
