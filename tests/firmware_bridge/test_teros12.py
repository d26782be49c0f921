"""The TEROS-12 driver against its simulator: values, determinism, retries and replug
(the status of each fault switch is in test_fault_statuses.py)."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import DriverStatus, get_driver
from firmware_bridge.drivers.base import DriverConfigError
from firmware_bridge.drivers.teros12 import Teros12Driver
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.sdi12 import Sdi12BusFirmware, Teros12Sensor, make_firmware
from firmware_bridge.sim.soil import SoilModel

FAST = {"response_timeout_s": 0.25}


@pytest.fixture
def driver_on(transports):
    def make(sim, address="0", **options) -> Teros12Driver:
        t = transports(sim.link, Teros12Driver.serial_settings, min_backoff_s=0.05, max_backoff_s=0.1)
        return Teros12Driver(t, f"probe-{address}", address, {**FAST, **options})
    return make


def test_the_registry_gives_the_teros12_driver_with_sdi12_line_settings():
    cls = get_driver("teros12")
    assert cls is Teros12Driver
    assert str(cls.serial_settings) == "1200 7E1"
    with pytest.raises(KeyError, match="known drivers: .*teros12"):
        get_driver("teros13")


def test_a_reading_has_raw_counts_temperature_and_ec_with_units(sdi_bus, driver_on):
    r = driver_on(sdi_bus("0")).read()
    assert r.status is DriverStatus.OK, r.message
    assert {k: v.unit for k, v in r.values.items()} == {"raw_counts": "counts", "soil_temp": "degC",
                                                         "ec_bulk": "uS/cm"}
    theta = 3.879e-4 * r.values["raw_counts"].value - 0.6956      # METER mineral soil calibration
    assert 0.03 <= theta <= 0.48
    assert -10 < r.values["soil_temp"].value < 40
    assert 0 < r.values["ec_bulk"].value < 2000
    assert r.probe == "probe-0" and r.time_ns > 0


@pytest.mark.parametrize("command,crc", [("M", True), ("M", False), ("C", True), ("R", True), ("R", False)])
def test_every_measurement_command_reads_the_probe(sdi_bus, driver_on, command, crc):
    sim = sdi_bus("0", measure_s=0)
    r = driver_on(sim, command=command, crc=crc).read()
    assert r.ok, r.message
    expected = {"M": "0M!", "C": "0C!", "R": "0R0!"}[command]
    if crc:
        expected = expected.replace(command, command + "C", 1)
    assert sim.sensor("0").commands[0] == expected


def test_several_probes_share_one_bus_and_one_transport(sdi_bus, transports):
    sim = sdi_bus("0,1,2")
    t = transports(sim.link, Teros12Driver.serial_settings)
    readings = [Teros12Driver(t, f"p{a}", a, FAST).read() for a in "012"]
    assert [r.status for r in readings] == [DriverStatus.OK] * 3
    assert len({r.values["raw_counts"].value for r in readings}) == 3      # each sensor has its own noise


def _series(seed: int, n: int) -> list[list[str]]:
    sensor = Teros12Sensor("0", seed, FaultSwitches())
    return [sensor.measure() for _ in range(n)]


def test_values_are_deterministic_under_a_seed():
    assert _series(4, 20) == _series(4, 20)
    assert _series(4, 20) != _series(5, 20)


def test_readings_follow_the_shared_soil_through_days_and_rain():
    sensor = Teros12Sensor("0", 11, FaultSwitches(), hours_per_measurement=1.0)
    soil = SoilModel(11, depth_cm=10.0)
    rows = [[float(v) for v in sensor.measure()] for _ in range(24 * 30)]
    for hour, (raw, temp, ec) in enumerate(rows):
        state = soil.state(hour * 3600.0)
        assert 3.879e-4 * raw - 0.6956 == pytest.approx(state.vwc, abs=0.002)   # METER mineral calibration
        assert temp == pytest.approx(state.temperature_c, abs=0.2)
    raws = [r[0] for r in rows]
    assert 1900 < min(raws) and max(raws) < 2800 and max(raws) - min(raws) > 100      # wetting and drying
    first_day = [r[1] for r in rows[:24]]
    assert max(first_day) - min(first_day) > 2                                          # diurnal wave at 10 cm


def test_no_answer_is_a_timeout(sdi_bus, driver_on):
    sim = sdi_bus("0")
    sim.faults.no_answer = True
    r = driver_on(sim).read()
    assert r.status is DriverStatus.TIMEOUT and "no answer" in r.message and not r.values


def test_an_answer_slower_than_all_attempts_is_a_timeout_and_does_not_spoil_the_next_poll(sdi_bus, driver_on):
    sim = sdi_bus("0")
    sim.faults.slow_answer_s = 1.2
    drv = driver_on(sim, attempts=2)
    assert drv.read().status is DriverStatus.TIMEOUT
    sim.faults.clear()
    r = drv.read()
    assert r.ok, r.message


def test_a_corrupted_crc_is_a_crc_error_after_the_retries(sdi_bus, driver_on):
    sim = sdi_bus("0")
    sim.faults.corrupt_crc = True
    drv = driver_on(sim)
    r = drv.read()
    assert r.status is DriverStatus.CRC_ERROR and "failed 3 times" in r.message
    assert drv.bus.retries == 2


def test_garbage_bytes_are_garbled(sdi_bus, driver_on):
    sim = sdi_bus("0")
    sim.faults.garbage = True
    drv = driver_on(sim)
    statuses = {drv.read().status for _ in range(3)}
    assert statuses == {DriverStatus.GARBLED}


def test_a_value_a_teros12_cannot_report_is_out_of_range(run_probe, transports):
    class Hot(Teros12Sensor):
        def measure(self):
            return ["+2200.00", "+85.0", "+120"]
    probe = run_probe(Sdi12BusFirmware([Hot("0", 1, FaultSwitches(), measure_s=0)]))
    drv = Teros12Driver(transports(probe.link, Teros12Driver.serial_settings), "hot", "0", FAST)
    r = drv.read()
    assert r.status is DriverStatus.OUT_OF_RANGE and "soil_temp=85" in r.message
    assert r.values["soil_temp"].value == 85.0


def test_unplug_is_absent_and_after_replug_the_same_driver_reads_again(sdi_bus, driver_on):
    sim = sdi_bus("0", measure_s=0)
    drv = driver_on(sim)
    assert drv.read().ok
    old = sim.probe.device
    sim.probe.unplug()
    first = drv.read()
    assert first.status is DriverStatus.ABSENT and str(sim.link) in first.message
    assert drv.read().status is DriverStatus.ABSENT
    keep = os.openpty()                          # make sure the new pty gets another /dev/pts name
    try:
        assert sim.probe.replug() != old
        deadline = time.monotonic() + 3.0        # back-off is at most 0.1 s here
        seen = []
        while True:                              # the next polls read again (a loaded machine may miss some)
            r = drv.read()
            seen.append(r.status)
            if r.ok or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.ok, (r.message, seen)
    finally:
        os.close(keep[0])
        os.close(keep[1])


def test_a_port_held_by_another_process_is_busy(sdi_bus, driver_on, transports):
    sim = sdi_bus("0")
    holder = transports(sim.link, Teros12Driver.serial_settings)
    holder.ensure_open()
    assert driver_on(sim).read().status is DriverStatus.BUSY


def test_impossible_configuration_is_refused_when_the_driver_is_built(transports, tmp_path):
    t = transports(tmp_path / "x", Teros12Driver.serial_settings)
    with pytest.raises(DriverConfigError, match="address"):
        Teros12Driver(t, "p", "#")
    with pytest.raises(DriverConfigError, match="command"):
        Teros12Driver(t, "p", "0", {"command": "Q"})
    with pytest.raises(DriverConfigError, match="unknown option.*colour"):
        Teros12Driver(t, "p", "0", {"colour": "red"})


class Scripted:
    """Firmware that answers every command with the given bytes."""

    def __init__(self) -> None:
        self.answer = b""

    def receive(self, data, now):
        return [(0.0, self.answer)] if self.answer else []

    def tick(self, now):
        return []


@pytest.fixture(scope="module")
def scripted_driver(tmp_path_factory):
    from firmware_bridge.sim.pty import PtyProbe
    from firmware_bridge.transport import SerialTransport
    fw = Scripted()
    probe = PtyProbe(fw, tmp_path_factory.mktemp("scripted") / "sdi").start()
    t = SerialTransport(str(probe.link), Teros12Driver.serial_settings)
    yield fw, Teros12Driver(t, "fuzz", "0", {"response_timeout_s": 0.05, "attempts": 1, "stuck_polls": 0})
    t.close()
    probe.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=60) | st.sampled_from([b"0\r\n", b"00013\r\n", b"0+1+2+3\r\n", b"0001\r\n"]))
def test_any_answer_gives_a_status_never_an_exception(scripted_driver, answer):
    fw, drv = scripted_driver
    fw.answer = answer
    r = drv.read()
    assert r.status is not DriverStatus.ERROR, r.message
    assert r.status is not DriverStatus.OK or len(r.values) == 3


def test_make_firmware_refuses_unknown_parameters():
    with pytest.raises(ValueError, match="unknown teros12 parameter.*colour.*known: depth_cm"):
        make_firmware("0", 1, FaultSwitches(), colour=3)


def test_a_probe_replugged_between_polls_is_read_on_the_first_poll_after(sdi_bus, driver_on):
    sim = sdi_bus("0", measure_s=0)
    drv = driver_on(sim)
    assert drv.read().ok
    sim.probe.unplug()
    sim.probe.replug()                     # same or new /dev/pts name: either way noticed before writing
    r = drv.read()
    assert r.ok, r.message


def test_several_probes_measure_concurrently_and_each_gets_its_status(sdi_bus, transports):
    from firmware_bridge.drivers.teros12 import read_concurrently
    sim = sdi_bus("0,1,2")
    t = transports(sim.link, Teros12Driver.serial_settings)
    drivers = [Teros12Driver(t, f"p{a}", a, {**FAST, "attempts": 1}) for a in "013"]
    readings = read_concurrently(drivers)
    assert [r.probe for r in readings] == ["p0", "p1", "p3"]
    assert [r.status for r in readings] == [DriverStatus.OK, DriverStatus.OK, DriverStatus.TIMEOUT]
    assert sim.sensor("0").commands == ["0CC!", "0D0!"] and sim.sensor("1").commands == ["1CC!", "1D0!"]
    sim.probe.unplug()
    assert {r.status for r in read_concurrently(drivers)} == {DriverStatus.ABSENT}
