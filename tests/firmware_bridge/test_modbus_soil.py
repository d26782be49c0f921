"""Modbus RTU soil sensor: driver (minimalmodbus over SerialTransport) against the simulated slave on a pty."""

from __future__ import annotations

import contextlib
import struct
import time

import minimalmodbus
import pytest
from hypothesis import given, settings, strategies as st

from firmware_bridge.drivers.base import DriverConfigError
from firmware_bridge.drivers.modbus_maps import MAPS, get_map
from firmware_bridge.drivers.modbus_soil import ModbusSoilDriver
from firmware_bridge.reading import DriverStatus
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.modbus_soil import crc16_modbus, make_firmware, with_crc
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.soil import SoilModel
from firmware_bridge.transport import SerialTransport


@contextlib.contextmanager
def sensor(tmp_path, *, address="1", seed=7, options=None, **params):
    faults = FaultSwitches()
    fw = make_firmware(address, seed, faults, **params)
    link = tmp_path / "ttyRS485"
    with PtyProbe(fw, link) as probe:
        transport = SerialTransport(str(link), ModbusSoilDriver.serial_settings, min_backoff_s=0.05, max_backoff_s=0.2)
        opts = {"timeout_s": 0.25, **(options or {})}
        driver = ModbusSoilDriver(transport, "soil-1", address, opts)
        try:
            yield driver, fw, faults, probe
        finally:
            transport.close()


def test_crc16_modbus_matches_the_catalogue_check_value_and_the_spec_example():
    # CRC-16/MODBUS check value for "123456789" (Greg Cook's CRC catalogue).
    assert crc16_modbus(b"123456789") == 0x4B37
    # Modbus over Serial Line V1.02, 6.2.2 example: request 02 07 -> CRC 0x1241, sent 41 12.
    assert with_crc(bytes([0x02, 0x07])) == bytes([0x02, 0x07, 0x41, 0x12])


def test_simulator_crc_agrees_with_minimalmodbus_on_many_frames():
    import random
    rng = random.Random(1)
    for _ in range(200):
        frame = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        assert struct.pack("<H", crc16_modbus(frame)) == minimalmodbus._calculate_crc(frame)


def test_soil_3in1_reads_moisture_temperature_and_ec_from_the_shared_soil_model(tmp_path):
    with sensor(tmp_path, seed=3) as (driver, fw, _faults, _probe):
        reading = driver.read()
    assert reading.status is DriverStatus.OK, reading.message
    truth = SoilModel(3).state(0.0)
    assert set(reading.values) == {"moisture", "soil_temp", "ec"}
    assert reading.values["moisture"].unit == "%"
    assert reading.values["moisture"].value == pytest.approx(truth.vwc * 100, abs=0.5)
    assert reading.values["soil_temp"].value == pytest.approx(truth.temperature_c, abs=0.5)
    assert reading.values["soil_temp"].unit == "degC"
    assert reading.values["ec"].value == pytest.approx(truth.ec_us_cm, abs=3)
    assert fw.requests == 1


def test_seven_in_one_model_uses_its_own_register_map(tmp_path):
    with sensor(tmp_path, address="5", options={"model": "jxbs-3001-7in1"}, model="jxbs-3001-7in1") as (driver, *_):
        reading = driver.read()
    assert reading.status is DriverStatus.OK, reading.message
    assert set(reading.values) == {"moisture", "soil_temp", "ec", "ph", "nitrogen", "phosphorus", "potassium"}
    assert 5.0 < reading.values["ph"].value < 8.0
    assert reading.values["nitrogen"].unit == "mg/kg"


def test_register_map_decodes_signed_temperature_as_the_manual_prints_it():
    field = {f.quantity: f for f in get_map("soil-3in1").fields}["soil_temp"]
    assert field.decode(0xFF9B) == pytest.approx(-10.1)     # manual: FF9B H = -101 -> -10.1 °C
    assert field.decode(0x00FA) == pytest.approx(25.0)
    assert field.encode(-10.1) == 0xFF9B
    assert MAPS["jxbs-3001-7in1"].span == (0x0006, 0x0020 - 0x0006 + 1)


def test_raw_request_bytes_are_answered_as_the_manual_describes(tmp_path):
    """Byte-level: a hand-built request 01 03 0000 0003 gets 01 03 06 <6 bytes> CRC."""
    fw = make_firmware("1", 3, FaultSwitches())
    request = with_crc(bytes.fromhex("010300000003"))
    assert request.hex() == "010300000003" + "05cb"   # as printed in such manuals
    [(_, reply)] = fw.receive(request, 0.0)
    assert reply[:3] == bytes([1, 3, 6]) and len(reply) == 11
    assert reply[-2:] == struct.pack("<H", crc16_modbus(reply[:-2]))
    assert fw.receive(with_crc(bytes.fromhex("020300000003")), 0.0) == []      # another slave's request
    bad = bytearray(request); bad[-1] ^= 0xFF
    assert fw.receive(bytes(bad), 0.0) == []                                    # bad CRC: discarded


def test_wrong_address_times_out(tmp_path):
    with sensor(tmp_path, address="1") as (driver, *_):
        driver2 = ModbusSoilDriver(driver.transport, "soil-9", "9", {"timeout_s": 0.2})
        reading = driver2.read()
    assert reading.status is DriverStatus.TIMEOUT
    assert "address" in reading.message


def test_exception_response_is_an_error_naming_the_register_map(tmp_path):
    # The 7-in-1 map asked of a 3-in-1 is fine register-wise; a function-4 map is not: build one by reading fc 4.
    with sensor(tmp_path) as (driver, *_):
        from firmware_bridge.protocols.modbus import read_registers
        from firmware_bridge.protocols import ProtocolError
        with pytest.raises(ProtocolError) as err:
            read_registers(driver.instrument, driver.port, 0, 3, 4)
    assert err.value.status is DriverStatus.ERROR
    assert "illegal" in str(err.value) and "register map" in str(err.value)


def test_crc_error_is_retried_before_it_is_reported(tmp_path):
    with sensor(tmp_path, options={"retries": 2}) as (driver, fw, faults, _probe):
        faults.corrupt_crc = True
        assert driver.read().status is DriverStatus.CRC_ERROR
    assert fw.requests == 3


def test_unplugged_sensor_is_absent_then_read_again_after_replug(tmp_path):
    with sensor(tmp_path) as (driver, fw, faults, probe):
        assert driver.read().ok
        probe.unplug()
        assert driver.read().status is DriverStatus.ABSENT
        new = probe.replug()
        deadline = time.monotonic() + 5
        reading = driver.read()
        while not reading.ok and time.monotonic() < deadline:
            time.sleep(0.05)
            reading = driver.read()
        assert reading.ok, reading.message
        assert driver.transport.device == new


def test_bad_model_or_address_is_a_configuration_error(tmp_path):
    t = SerialTransport(str(tmp_path / "none"), ModbusSoilDriver.serial_settings)
    with pytest.raises(DriverConfigError, match="model"):
        ModbusSoilDriver(t, "p", "1", {"model": "nope"})
    with pytest.raises(DriverConfigError, match="1-247"):
        ModbusSoilDriver(t, "p", "300")


def test_exception_response_through_the_driver_is_an_error_status(tmp_path):
    """A model table naming input registers (function 4) read from a holding-register sensor."""
    from dataclasses import replace
    with sensor(tmp_path) as (driver, *_):
        driver.map = replace(driver.map, function_code=4)
        reading = driver.read()
    assert reading.status is DriverStatus.ERROR
    assert "illegal" in reading.message and reading.values == {}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 40))
def test_failure_classification_never_raises_on_arbitrary_answers(answer, wanted):
    from firmware_bridge.protocols import ProtocolError
    from firmware_bridge.protocols.modbus import TransportSerial, classify
    port = TransportSerial(SerialTransport("/nonexistent/tty", ModbusSoilDriver.serial_settings), 0.1)
    port.last_request, port.last_answer, port.last_wanted = with_crc(bytes.fromhex("010300000003")), answer, wanted
    for error in (minimalmodbus.InvalidResponseError("Checksum error in rtu mode"),
                  minimalmodbus.InvalidResponseError("Too short"), minimalmodbus.NoResponseError("x"),
                  minimalmodbus.IllegalRequestError("Slave reported illegal data address")):
        assert isinstance(classify(error, port), ProtocolError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_simulated_slave_never_raises_on_line_noise(data):
    fw = make_firmware("1", 0, FaultSwitches())
    for reply in fw.receive(data, 0.0):
        assert reply[1][0] == 1      # it only ever answers as itself


def test_two_sensors_on_one_rs485_bus_are_each_read_by_address(tmp_path):
    bus = make_firmware("1,2", 20, FaultSwitches())
    with PtyProbe(bus, tmp_path / "ttyBUS"):
        with SerialTransport(str(tmp_path / "ttyBUS"), ModbusSoilDriver.serial_settings) as transport:
            driver1 = ModbusSoilDriver(transport, "soil-1", "1", {"timeout_s": 0.25})
            driver2 = ModbusSoilDriver(transport, "soil-2", "2", {"timeout_s": 0.25})
            r1, r2 = driver1.read(), driver2.read()
    assert r1.ok and r2.ok, (r1.message, r2.message)
    assert r1.values["moisture"].value == pytest.approx(SoilModel(20).vwc(0) * 100, abs=0.5)
    assert r2.values["moisture"].value == pytest.approx(SoilModel(21).vwc(0) * 100, abs=0.5)
    assert [s.requests for s in bus.slaves] == [1, 1]


def test_simulator_parameters_are_checked_and_set_the_soil_carbon():
    fw = make_firmware("3", 1, FaultSwitches(), soc_percent=3.5, model="jxbs-3001-7in1")
    assert fw.soil.soc_percent == 3.5 and fw.map.model == "jxbs-3001-7in1"
    with pytest.raises(ValueError, match="unknown modbus-soil parameter"):
        make_firmware("1", 1, FaultSwitches(), colour=1)
    with pytest.raises(ValueError, match="expected one of"):
        make_firmware("1", 1, FaultSwitches(), model="nope")
    with pytest.raises(ValueError, match="1-247"):
        make_firmware("1,1", 1, FaultSwitches())


def test_a_probe_reports_only_the_quantities_of_its_configured_model():
    from firmware_bridge.drivers.modbus_maps import MAPS
    from firmware_bridge.drivers.modbus_soil import ModbusSoilDriver

    three = ModbusSoilDriver.quantities_for({"model": "soil-3in1"})
    seven = ModbusSoilDriver.quantities_for({"model": "jxbs-3001-7in1"})
    assert set(three) == {f.quantity for f in MAPS["soil-3in1"].fields}
    assert "nitrogen" in seven and "nitrogen" not in three
    assert set(ModbusSoilDriver.quantities_for({})) == set(three)
