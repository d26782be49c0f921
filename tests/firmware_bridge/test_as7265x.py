"""AS7265x-style AT spectral sensor: AT reply parser, driver against the simulated sensor on a pty."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from firmware_bridge.drivers.as7265x import AS7265xDriver, WAVELENGTHS
from firmware_bridge.protocols.at import ReplyStatus, encode_command, parse_numbers, parse_reply
from firmware_bridge.reading import DriverStatus
from firmware_bridge.sim.as7265x import make_firmware
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.soil import SoilModel
from firmware_bridge.transport import SerialTransport

FAST = {"integration_cycles": 10, "timeout_s": 0.25}


@contextlib.contextmanager
def triad(tmp_path, *, seed=5, options=None, **params):
    faults = FaultSwitches()
    fw = make_firmware("", seed, faults, **params)
    link = tmp_path / "ttyTRIAD"
    with PtyProbe(fw, link) as probe:
        transport = SerialTransport(str(link), AS7265xDriver.serial_settings, min_backoff_s=0.05, max_backoff_s=0.2)
        driver = AS7265xDriver(transport, "triad-1", "", {**FAST, **(options or {})})
        try:
            yield driver, fw, faults, probe
        finally:
            transport.close()


def test_reply_parser_follows_the_datasheet_forms():
    assert encode_command("GAIN", 0) == b"ATGAIN=0\r\n"
    assert parse_reply(b"OK\r\n").status is ReplyStatus.OK
    assert parse_reply(b"1, 2, 3 OK\r\n").data == "1, 2, 3"
    assert parse_reply(b"ERROR\r\n").status is ReplyStatus.ERROR
    assert parse_reply(b"1, 2, 3").status is ReplyStatus.PARTIAL
    assert parse_reply(b"1, 2\x00\xff OK\r\n").status is ReplyStatus.GARBLED
    assert parse_reply(b"").status is ReplyStatus.EMPTY
    assert parse_numbers("1, 0x10, 3", 3, integers=True) == [1.0, 16.0, 3.0]
    assert parse_numbers("1, 2", 3) is None and parse_numbers("1, x, 3", 3) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_reply_parser_never_raises_on_arbitrary_bytes(data):
    reply = parse_reply(data)
    assert isinstance(reply.status, ReplyStatus)
    parse_numbers(reply.data, 18)
    parse_numbers(reply.data, 18, integers=True)


def test_driver_reads_18_calibrated_channels_with_the_led_on_then_switches_it_off(tmp_path):
    with triad(tmp_path) as (driver, fw, _f, _p):
        reading = driver.read()
        assert reading.status is DriverStatus.OK, reading.message
        assert fw.led is False and fw.led_on_reads == 2           # both reads lit, LED off afterwards
        assert (fw.cycles, fw.gain, fw.led_current) == (10, 2, 1)
    s = reading.spectrum
    assert s.wavelengths_nm == tuple(sorted(WAVELENGTHS)) and len(s.values) == 18
    assert s.wavelengths_nm[0] == 410 and s.wavelengths_nm[-1] == 940
    assert s.unit == "uW/cm2" and s.integration_ms == pytest.approx(28.0) and s.gain == 16.0
    assert not s.saturated and s.full_scale == 65535
    assert all(v > 0 for v in s.values)


def test_wetter_soil_reads_darker(tmp_path):
    class Dry(SoilModel):
        def vwc(self, t_s):
            return 0.05

    class Wet(SoilModel):
        def vwc(self, t_s):
            return 0.40

    totals = []
    for soil in (Dry(1, soc_percent=2.0), Wet(1, soc_percent=2.0)):
        with triad(tmp_path, soil=soil) as (driver, *_):
            reading = driver.read()
        assert reading.ok, reading.message
        totals.append(np.sum(reading.spectrum.values))
    assert totals[1] < 0.85 * totals[0]


def test_bad_options_are_configuration_errors(tmp_path):
    from firmware_bridge.drivers.base import DriverConfigError
    t = SerialTransport(str(tmp_path / "none"), AS7265xDriver.serial_settings)
    with pytest.raises(DriverConfigError, match="gain"):
        AS7265xDriver(t, "p", "", {"gain": 7})


def test_absent_sensor_is_reported_absent(tmp_path):
    t = SerialTransport(str(tmp_path / "never"), AS7265xDriver.serial_settings, min_backoff_s=0.05, max_backoff_s=0.1)
    assert AS7265xDriver(t, "p", "", FAST).read().status is DriverStatus.ABSENT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_simulated_sensor_answers_every_line_of_noise_with_ok_or_error(data):
    fw = make_firmware("", 0, FaultSwitches())
    for _, reply in fw.receive(data, 0.0):
        assert parse_reply(reply).status in (ReplyStatus.OK, ReplyStatus.ERROR)
