"""Compact NIR spectrometer: NSP frame codec, driver against the simulated spectrometer on a pty."""

from __future__ import annotations

import contextlib
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from firmware_bridge.drivers.nir_spectrometer import NirSpectrometerDriver
from firmware_bridge.protocols.spectro import (
    SYNC, Capture, FrameStatus, ReplyType, SpectrumFrame, crc16, decode_info, decode_spectrum, encode_frame,
    parse_frame)
from firmware_bridge.reading import DriverStatus
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.nir_spectrometer import make_firmware
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.soil import SoilModel
from firmware_bridge.transport import SerialTransport

FAST = {"integration_ms": 10, "timeout_s": 0.25}


@contextlib.contextmanager
def spectrometer(tmp_path, *, seed=9, options=None, **params):
    faults = FaultSwitches()
    fw = make_firmware("", seed, faults, **params)
    link = tmp_path / "ttyNIR"
    with PtyProbe(fw, link) as probe:
        transport = SerialTransport(str(link), NirSpectrometerDriver.serial_settings, min_backoff_s=0.05,
                                    max_backoff_s=0.2)
        driver = NirSpectrometerDriver(transport, "nir-1", "", {**FAST, **(options or {})})
        try:
            yield driver, fw, faults, probe
        finally:
            transport.close()


def test_crc_is_ccitt_false_with_its_catalogue_check_value():
    assert crc16(b"123456789") == 0x29B1


def test_frame_layout_is_as_documented():
    frame = encode_frame(0x02, (100).to_bytes(2, "little"))
    assert frame == SYNC + bytes([0x02, 0x02, 0x00, 0x64, 0x00]) + struct.pack("<H", crc16(frame[2:7]))
    result = parse_frame(frame + b"\x00tail")
    assert result.status is FrameStatus.OK and result.consumed == len(frame)
    assert result.frame.payload == b"\x64\x00"


def test_parser_reports_incomplete_crc_error_and_garbage():
    frame = encode_frame(ReplyType.ACK)
    assert parse_frame(frame[:-1]).status is FrameStatus.INCOMPLETE
    bad = bytearray(frame); bad[-1] ^= 1
    assert parse_frame(bytes(bad)).status is FrameStatus.CRC_ERROR
    noisy = parse_frame(b"\x00\x01" + frame)
    assert noisy.status is FrameStatus.GARBLED and noisy.consumed == 2
    assert parse_frame(SYNC + b"\x90\xff\xff").status is FrameStatus.GARBLED      # impossible length


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_frame_parser_never_raises_and_always_makes_progress_on_arbitrary_bytes(data):
    buf = data
    for _ in range(len(data) + 2):
        result = parse_frame(buf)
        if result.frame is not None:
            decode_spectrum(result.frame.payload)
            decode_info(result.frame.payload)
        if result.status in (FrameStatus.EMPTY, FrameStatus.INCOMPLETE):
            break
        assert result.consumed > 0
        buf = buf[result.consumed:]
    else:
        pytest.fail("parser did not consume its input")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 65535), min_size=1, max_size=300), st.integers(0, 65535))
def test_spectrum_payload_round_trips(counts, seq):
    frame = SpectrumFrame(Capture.SAMPLE, seq, 100, 1350.0, 2500.0, 0, tuple(counts))
    result = parse_frame(encode_frame(ReplyType.SPECTRUM, frame.encode()))
    assert decode_spectrum(result.frame.payload) == frame


def test_driver_returns_counts_with_dark_and_white_references(tmp_path):
    with spectrometer(tmp_path) as (driver, fw, _f, _p):
        reading = driver.read()
    assert reading.status is DriverStatus.OK, reading.message
    s = reading.spectrum
    assert s.unit == "counts" and len(s.values) == 256 and s.integration_ms == 10
    assert s.wavelengths_nm[0] == 1350.0 and s.wavelengths_nm[-1] == 2500.0
    assert s.dark is not None and s.white is not None and s.full_scale == 65535 and not s.saturated
    d, w, v = (np.array(x) for x in (s.dark, s.white, s.values))
    assert np.all(w > v) and np.all(v > d - 50)
    assert fw.captures == [Capture.DARK, Capture.WHITE, Capture.SAMPLE]


def test_reflectance_from_the_frames_shows_the_water_bands_and_tracks_the_soil_model(tmp_path):
    from firmware_bridge.sim.soil import reflectance
    with spectrometer(tmp_path, seed=4, options={"integration_ms": 100}) as (driver, *_):
        s = driver.read().spectrum
    wl = np.array(s.wavelengths_nm)
    r = (np.array(s.values) - s.dark) / (np.array(s.white) - s.dark) * 0.99
    soil = SoilModel(4).state(0.0)
    truth = reflectance(wl, soil.soc_percent, soil.vwc)
    assert np.sqrt(np.mean((r - truth) ** 2)) < 0.01
    at = lambda nm: r[np.argmin(abs(wl - nm))]  # noqa: E731
    assert at(1940) < at(1800) and at(1450) < at(1600)


def test_references_are_reused_while_younger_than_max_age(tmp_path):
    with spectrometer(tmp_path, options={"reference_max_age_s": 60}) as (driver, fw, _f, _p):
        assert driver.read().ok and driver.read().ok
    assert fw.captures == [Capture.DARK, Capture.WHITE, Capture.SAMPLE, Capture.SAMPLE]


def test_unplug_replug_recovers_and_recaptures_references(tmp_path):
    with spectrometer(tmp_path, options={"reference_max_age_s": 600}) as (driver, fw, faults, probe):
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
    assert fw.captures.count(Capture.DARK) == 2      # references are not trusted across a replug


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_simulated_spectrometer_never_raises_on_line_noise(data):
    fw = make_firmware("", 0, FaultSwitches(), bands=16)
    for _, reply in fw.receive(data, 0.0):
        assert parse_frame(reply).status is FrameStatus.OK


def test_info_is_read_and_a_refused_command_is_an_error_not_a_retry(tmp_path):
    from firmware_bridge.protocols import ProtocolError
    from firmware_bridge.protocols.spectro import Command
    with spectrometer(tmp_path) as (driver, fw, _f, _p):
        assert decode_info(driver.exchange(Command.GET_INFO).payload).bands == 256
        with pytest.raises(ProtocolError, match="NAK") as err:
            driver.exchange(Command.SET_INTEGRATION, (0).to_bytes(2, "little"))
    assert err.value.status is DriverStatus.ERROR
