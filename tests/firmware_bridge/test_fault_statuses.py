"""Every fault switch gives its documented status on every driver, and the driver then reads OK again.

One table instead of one copy of the same test per driver. The expected
statuses are the fault tables of docs/firmware_bridge.md ("Fault switches"
for SDI-12, "Statuses by fault switch" for the Modbus, spectral and
line-ASCII drivers). Each case runs the real driver (from the driver
registry) against its simulator (from the simulator registry) on a real pty.
Tests that check more than the status (retry counts, messages, unplug,
references) stay in the per-driver modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pytest

from firmware_bridge.drivers import get_driver
from firmware_bridge.reading import DriverStatus, Reading
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.registry import get_model

S = DriverStatus


def _ascii_temp_keeps_125_c(reading: Reading, fw: Any) -> None:
    assert reading.values["soil_temp"].value == 125.0


def _modbus_keeps_100_percent_moisture(reading: Reading, fw: Any) -> None:
    assert reading.values["moisture"].value == 100.0


def _nir_keeps_the_spectrum(reading: Reading, fw: Any) -> None:
    assert reading.spectrum.saturated and max(reading.spectrum.values) == 65535
    assert "integration_ms" in reading.message


def _as7265x_keeps_the_spectrum_and_switches_the_led_off(reading: Reading, fw: Any) -> None:
    assert reading.spectrum is not None and reading.spectrum.saturated
    assert "full scale" in reading.message and "gain" in reading.message
    assert fw.led is False


@dataclass(frozen=True)
class Rig:
    """One driver against its simulator, tuned so that a TIMEOUT costs little."""

    driver: str                                   # driver registry name, also the simulator model name
    address: str
    seed: int
    options: Mapping[str, Any]                    # driver options for every case
    statuses: Mapping[str, DriverStatus]          # fault switch -> documented status
    slow_answer_s: float                          # beyond the driver's whole retry window
    settle_s: float                               # lets the late answer arrive before the recovery poll
    stuck_after: int                              # reads after stuck_value is set until STUCK
    fault_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)   # simulator parameters
    saturated: Callable[[Reading, Any], None] | None = None   # what a SATURATED reading keeps


FRAME_FAULTS = {"no_answer": S.TIMEOUT, "slow_answer_s": S.TIMEOUT, "corrupt_crc": S.CRC_ERROR,
                "partial_frame": S.PARTIAL, "garbage": S.GARBLED, "stuck_value": S.STUCK}

RIGS = (
    Rig("ascii-temp", "", 11, {"timeout_s": 0.3},
        {**FRAME_FAULTS, "saturation": S.SATURATED}, slow_answer_s=0.6, settle_s=0.4,
        stuck_after=3, fault_options={"stuck_value": {"stuck_polls": 3}}, saturated=_ascii_temp_keeps_125_c),
    Rig("modbus-soil", "1", 7, {"timeout_s": 0.25},
        {**FRAME_FAULTS, "saturation": S.SATURATED}, slow_answer_s=0.6, settle_s=0.5,
        stuck_after=3, fault_options={"stuck_value": {"stuck_polls": 3}},
        saturated=_modbus_keeps_100_percent_moisture),
    Rig("nir-spectrometer", "", 9, {"integration_ms": 10, "timeout_s": 0.25},
        {**FRAME_FAULTS, "saturation": S.SATURATED}, slow_answer_s=0.5, settle_s=0.6,
        stuck_after=2, fault_options={"stuck_value": {"stuck_polls": 2},
                                      "saturation": {"integration_ms": 100}},   # 10 ms cannot reach full scale
        saturated=_nir_keeps_the_spectrum),
    # The AT protocol carries no checksum: corrupt_crc has nothing to corrupt and the reading stays OK.
    Rig("as7265x", "", 5, {"integration_cycles": 10, "timeout_s": 0.25},
        {**FRAME_FAULTS, "corrupt_crc": S.OK, "saturation": S.SATURATED}, slow_answer_s=0.5, settle_s=0.6,
        stuck_after=2, fault_options={"stuck_value": {"stuck_polls": 2}},
        saturated=_as7265x_keeps_the_spectrum_and_switches_the_led_off),
    # SDI-12 has no saturation switch. Its simulator repeats the values of the poll before the fault,
    # so that poll is the first of the default stuck_polls = 5 identical readings.
    Rig("teros12", "0", 1, {"response_timeout_s": 0.25}, FRAME_FAULTS,
        slow_answer_s=1.2, settle_s=0.0, stuck_after=4, params={"measure_s": 0}),
)

CASES = [pytest.param(rig, fault, status, id=f"{rig.driver}-{fault}-{status.name}")
         for rig in RIGS for fault, status in rig.statuses.items()]


@pytest.mark.parametrize("rig, fault, status", CASES)
def test_each_fault_switch_gives_its_documented_status_then_the_driver_reads_again(
        rig: Rig, fault: str, status: DriverStatus, run_probe, transports) -> None:
    faults = FaultSwitches()
    fw = get_model(rig.driver).load()(rig.address, rig.seed, faults, **rig.params)
    probe = run_probe(fw, rig.driver)
    cls = get_driver(rig.driver)
    transport = transports(probe.link, cls.serial_settings, min_backoff_s=0.05, max_backoff_s=0.2)
    driver = cls(transport, f"{rig.driver}-1", rig.address, {**rig.options, **rig.fault_options.get(fault, {})})

    first = driver.read()
    assert first.ok, first.message
    setattr(faults, fault, rig.slow_answer_s if fault == "slow_answer_s" else True)
    if fault == "stuck_value":
        statuses = [driver.read().status for _ in range(rig.stuck_after + 1)]
        assert statuses == [S.OK] * (rig.stuck_after - 1) + [S.STUCK, S.STUCK]
    else:
        reading = driver.read()
        assert reading.status is status, reading.message
        if status is S.SATURATED:
            rig.saturated(reading, fw)
    faults.clear()
    if fault == "slow_answer_s":
        time.sleep(rig.settle_s)            # the late answer arrives; the next poll must discard it
    after = driver.read()
    assert after.status is S.OK, after.message
