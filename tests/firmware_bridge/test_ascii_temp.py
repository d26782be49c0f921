"""Line-ASCII temperature probe: NMEA-style checksum lines, driver against the simulator on a pty."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings, strategies as st

from firmware_bridge.drivers.ascii_temp import AsciiTempDriver
from firmware_bridge.protocols.nmea import LineStatus, checksum, encode_line, parse_line, parse_measurement
from firmware_bridge.reading import DriverStatus
from firmware_bridge.sim.ascii_temp import make_firmware
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.soil import SoilModel
from firmware_bridge.transport import SerialTransport


@contextlib.contextmanager
def probe_on_pty(tmp_path, *, seed=11, options=None, **params):
    faults = FaultSwitches()
    fw = make_firmware("", seed, faults, **params)
    link = tmp_path / "ttyTEMP"
    with PtyProbe(fw, link) as probe:
        transport = SerialTransport(str(link), AsciiTempDriver.serial_settings, min_backoff_s=0.05, max_backoff_s=0.2)
        driver = AsciiTempDriver(transport, "temp-1", "", {"timeout_s": 0.3, **(options or {})})
        try:
            yield driver, fw, faults, probe
        finally:
            transport.close()


def test_checksum_is_the_nmea_xor_of_the_body():
    # NMEA 0183 example sentence: $GPGLL,5300.97914,N,00259.98174,E,125926,A*28
    assert checksum(b"GPGLL,5300.97914,N,00259.98174,E,125926,A") == 0x28
    assert parse_line(b"$GPGLL,5300.97914,N,00259.98174,E,125926,A*28\r\n").status is LineStatus.OK
    assert encode_line("T=21.37,C") == b"T=21.37,C*%02X\r\n" % checksum(b"T=21.37,C")


def test_line_statuses():
    good = encode_line("T=21.37,C")
    assert parse_line(good).body == "T=21.37,C"
    assert parse_line(good.replace(b"21", b"22")).status is LineStatus.BAD_CHECKSUM
    assert parse_line(b"T=21.37,C\r\n").status is LineStatus.OK
    assert parse_line(b"T=21.37,C\r\n", require_checksum=True).status is LineStatus.MISSING_CHECKSUM
    assert parse_line(b"T=2\x001.37\r\n").status is LineStatus.GARBLED
    assert parse_line(b"T=21.37*Z9\r\n").status is LineStatus.GARBLED
    assert parse_line(b"\r\n").status is LineStatus.EMPTY
    assert parse_measurement("T=21.37,C").value == 21.37
    assert parse_measurement("T=abc,C") is None and parse_measurement("=1") is None
    assert parse_measurement("T=nan,C") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_line_parser_never_raises_on_arbitrary_bytes(data, require):
    frame = parse_line(data, require_checksum=require)
    assert isinstance(frame.status, LineStatus)
    if frame.status is LineStatus.OK:
        parse_measurement(frame.body)


@settings(max_examples=200, deadline=None)
@given(st.floats(-55, 125, allow_nan=False).map(lambda v: round(v, 2)))
def test_encoded_lines_round_trip(value):
    frame = parse_line(encode_line(f"T={value:.2f},C"), require_checksum=True)
    assert frame.status is LineStatus.OK and parse_measurement(frame.body).value == pytest.approx(value)


def test_driver_reads_the_soil_temperature_through_a_pty(tmp_path):
    with probe_on_pty(tmp_path, seed=11) as (driver, fw, _f, _p):
        reading = driver.read()
    assert reading.status is DriverStatus.OK, reading.message
    assert reading.values["soil_temp"].unit == "degC"
    assert reading.values["soil_temp"].value == pytest.approx(SoilModel(11).temperature_c(0.0), abs=0.2)


def test_streaming_probe_is_read_without_a_command(tmp_path):
    with probe_on_pty(tmp_path, options={"command": ""}, stream_period_s=0.05) as (driver, fw, _f, _p):
        reading = driver.read()
    assert reading.status is DriverStatus.OK, reading.message


def test_missing_checksum_is_refused_when_required(tmp_path):
    with probe_on_pty(tmp_path, options={"require_checksum": True}, checksum=False) as (driver, *_):
        reading = driver.read()
    assert reading.status is DriverStatus.CRC_ERROR and "missing checksum" in reading.message


def test_unplugged_probe_is_absent_then_read_again_after_replug(tmp_path):
    with probe_on_pty(tmp_path) as (driver, fw, faults, probe):
        assert driver.read().ok
        probe.unplug()
        assert driver.read().status is DriverStatus.ABSENT
        probe.replug()
        deadline = time.monotonic() + 5
        reading = driver.read()
        while not reading.ok and time.monotonic() < deadline:
            time.sleep(0.05)
            reading = driver.read()
        assert reading.ok, reading.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_simulated_probe_never_raises_on_line_noise(data):
    fw = make_firmware("", 0, FaultSwitches())
    for _, line in fw.receive(data, 0.0):
        assert parse_line(line, require_checksum=True).status is LineStatus.OK
