"""Every SDI-12 command and response path, through a real pty to the simulated sensors."""

from __future__ import annotations

import pytest

from firmware_bridge.protocols import ChecksumMismatch, NoResponse
from firmware_bridge.protocols.sdi12 import SETTINGS, Sdi12Bus
from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.sdi12 import Sdi12BusFirmware, Teros12Sensor


@pytest.fixture
def bus_on(transports):
    def make(sim, **kw) -> Sdi12Bus:
        kw.setdefault("response_timeout_s", 0.3)
        return Sdi12Bus(transports(sim.link, SETTINGS), **kw)
    return make


def test_acknowledge_answers_only_for_present_addresses(sdi_bus, bus_on):
    sim = sdi_bus("0,3")
    bus = bus_on(sim, attempts=1, response_timeout_s=0.15)
    assert bus.acknowledge("0") and bus.acknowledge("3")
    assert not bus.acknowledge("1")


def test_identify_gives_vendor_model_and_version(sdi_bus, bus_on):
    bus = bus_on(sdi_bus("2"))
    ident = bus.identify("2")
    assert (ident.address, ident.sdi12_version, ident.vendor, ident.model, ident.sensor_version) == \
        ("2", "1.4", "METER", "TER12", "112")


def test_address_query_and_change(sdi_bus, bus_on):
    sim = sdi_bus("0")
    bus = bus_on(sim)
    assert bus.query_address() == "0"
    assert bus.change_address("0", "7") == "7"
    assert bus.query_address() == "7"
    assert bus.acknowledge("7") and not bus.acknowledge("0", attempts=1, timeout=0.15)
    assert len(bus.measure("7")) == 3


def test_measure_waits_for_the_service_request_then_reads_d0(sdi_bus, bus_on):
    sim = sdi_bus("0", measure_s=0.2)
    bus = bus_on(sim)
    ticket = bus.start("0", "M")
    assert (ticket.seconds, ticket.count) == (1, 3)
    assert bus.wait_service_request(ticket)          # a<CR><LF> came before ttt expired
    values = bus.collect(ticket)
    assert len(values) == 3 and 1800 < values[0] < 3000
    assert sim.sensor("0").commands == ["0M!", "0D0!"]


def test_measure_with_crc_checks_every_data_line(sdi_bus, bus_on):
    sim = sdi_bus("0")
    bus = bus_on(sim)
    values = bus.measure("0", crc=True)
    assert len(values) == 3
    assert sim.sensor("0").commands == ["0MC!", "0D0!"]


def test_values_spread_over_several_pages_are_all_read(sdi_bus, bus_on):
    sim = sdi_bus("0", values_per_page=1)
    bus = bus_on(sim)
    values = bus.measure("0", crc=True)
    assert len(values) == 3
    assert sim.sensor("0").commands == ["0MC!", "0D0!", "0D1!", "0D2!"]


def test_an_unsupported_additional_measurement_returns_no_values(sdi_bus, bus_on):
    sim = sdi_bus("0")
    assert bus_on(sim).measure("0", index=1) == []
    assert sim.sensor("0").commands == ["0M1!"]


def test_concurrent_measurement_on_a_bus_of_several_addresses(sdi_bus, bus_on):
    sim = sdi_bus("0,1,5")
    bus = bus_on(sim)
    results = bus.measure_concurrent("015", crc=True)
    assert set(results) == {"0", "1", "5"}
    assert all(isinstance(v, list) and len(v) == 3 for v in results.values())
    # All three were started before any data was asked for: that is what makes it concurrent.
    assert [s.commands for s in sim.firmware.sensors] == [["0CC!", "0D0!"], ["1CC!", "1D0!"], ["5CC!", "5D0!"]]


def test_concurrent_measurement_reports_a_missing_sensor_without_losing_the_others(sdi_bus, bus_on):
    sim = sdi_bus("0,1")
    bus = bus_on(sim, attempts=1, response_timeout_s=0.15)
    results = bus.measure_concurrent("019")
    assert isinstance(results["9"], NoResponse)
    assert len(results["0"]) == 3 and len(results["1"]) == 3


def test_continuous_measurement_with_and_without_crc(sdi_bus, bus_on):
    sim = sdi_bus("0")
    bus = bus_on(sim)
    assert len(bus.continuous("0", 0)) == 3
    assert len(bus.continuous("0", 0, crc=True)) == 3
    assert bus.continuous("0", 4) == []
    assert sim.sensor("0").commands == ["0R0!", "0RC0!", "0R4!"]


class CorruptOnce(Teros12Sensor):
    """Corrupts the CRC of its first data line only, like one burst of noise on the cable."""

    corrupted = False

    def _frame(self, text, crc=False):
        out = super()._frame(text, crc)
        if crc and not self.corrupted and "D" in self.commands[-1]:
            self.corrupted = True
            delay, data = out[0]
            out = [(delay, data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])]
        return out


def test_a_crc_error_is_retried_with_the_same_d_command_only(run_probe, transports):
    sensor = CorruptOnce("0", 1, FaultSwitches(), measure_s=0.05)
    probe = run_probe(Sdi12BusFirmware([sensor]))
    bus = Sdi12Bus(transports(probe.link, SETTINGS), response_timeout_s=0.3)
    assert len(bus.measure("0", crc=True)) == 3
    assert bus.retries == 1
    assert sensor.commands == ["0MC!", "0D0!", "0D0!"]     # the measurement was not restarted


def test_a_crc_that_stays_wrong_is_a_checksum_error_after_all_attempts(sdi_bus, bus_on):
    sim = sdi_bus("0")
    sim.faults.corrupt_crc = True
    bus = bus_on(sim, attempts=3)
    with pytest.raises(ChecksumMismatch, match="0D0! failed 3 times: data: CRC"):
        bus.measure("0", crc=True)
    assert sim.sensor("0").commands == ["0MC!", "0D0!", "0D0!", "0D0!"]


def test_a_command_during_a_measurement_aborts_it(sdi_bus, bus_on):
    sim = sdi_bus("0", measure_s=5)
    bus = bus_on(sim)
    bus.start("0", "M")
    assert bus.acknowledge("0")                      # aborts the measurement (4.4.5)
    assert bus.transact("0D0!", lambda line: line) == b"0\r\n"    # no data


def test_the_host_break_is_sent_when_asked(sdi_bus, bus_on):
    bus = bus_on(sdi_bus("0"), send_break=True)
    assert len(bus.measure("0")) == 3


def test_a_command_during_a_concurrent_measurement_aborts_it(sdi_bus, bus_on):
    sim = sdi_bus("0", measure_s=5)
    bus = bus_on(sim)
    bus.start("0", "C")
    assert bus.transact("0D0!", lambda line: line) == b"0\r\n"    # asked too early: no data, and aborted (4.4.7)
    assert sim.sensor("0")._pages == []


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from firmware_bridge.sim.sdi12 import make_firmware  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20) | st.sampled_from([b"0M!", b"0D0!", b"?!", b"0A1!", b"1CC!", b"0RC0!"]),
                max_size=12))
def test_the_simulated_bus_survives_any_bytes_from_the_host(chunks):
    fw = make_firmware("0,1", 1, FaultSwitches(), measure_s=0)
    now = 0.0
    for chunk in chunks:
        now += 0.1
        for delay, data in fw.receive(chunk, now) + fw.tick(now):
            assert delay >= 0 and isinstance(data, bytes)
