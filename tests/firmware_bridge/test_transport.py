"""SerialTransport over real pseudo-terminals: bytes, timeouts, exclusivity, unplug and replug."""

from __future__ import annotations

import os

import pytest

from firmware_bridge.ports import PortSpecError, UsbMatch, parse_port
from firmware_bridge.transport import PortAbsent, PortBusy, SerialSettings, SerialTransport

SETTINGS = SerialSettings(9600, 8, "N", 1)


class Echo:
    """Firmware that answers every chunk with `reply` (or echoes it back)."""

    def __init__(self, reply: bytes | None = None, delay: float = 0.0) -> None:
        self.reply, self.delay, self.heard = reply, delay, b""

    def receive(self, data: bytes, now: float):
        self.heard += data
        return [(self.delay, self.reply if self.reply is not None else data)]

    def tick(self, now: float):
        return []


def test_bytes_written_reach_the_firmware_and_the_answer_comes_back(run_probe, transports):
    fw = Echo(b"pong\r\n")
    probe = run_probe(fw)
    t = transports(probe.link, SETTINGS)
    t.ensure_open()
    t.write(b"ping\r\n")
    assert t.read_until(b"\r\n", timeout=2) == b"pong\r\n"
    assert fw.heard == b"ping\r\n"
    assert t.state == "open"
    assert t.device == probe.device


def test_bytes_after_the_terminator_are_kept_for_the_next_read(run_probe, transports):
    probe = run_probe(Echo(b"one\r\ntwo\r\nthr"))
    t = transports(probe.link, SETTINGS)
    t.write(b"x")
    assert t.read_until(b"\r\n", 2) == b"one\r\n"
    assert t.read_until(b"\r\n", 2) == b"two\r\n"
    assert t.read_until(b"\r\n", 0.2) == b"thr"          # timeout: whatever arrived, no terminator


def test_read_exact_returns_fewer_bytes_when_the_timeout_passes(run_probe, transports):
    probe = run_probe(Echo(b"\x01\x02\x03"))
    t = transports(probe.link, SETTINGS)
    t.write(b"?")
    assert t.read_exact(2, 2) == b"\x01\x02"
    assert t.read_exact(5, 0.2) == b"\x03"
    assert t.read_exact(1, 0.05) == b""


def test_read_until_stops_at_max_bytes(run_probe, transports):
    probe = run_probe(Echo(b"A" * 100))
    t = transports(probe.link, SETTINGS)
    t.write(b"?")
    assert t.read_until(b"\n", 2, max_bytes=40) == b"A" * 40


def test_reset_input_drops_stale_answers(run_probe, transports):
    probe = run_probe(Echo(b"stale\r\n"))
    t = transports(probe.link, SETTINGS)
    t.write(b"?")
    assert t.read_exact(1, 2) == b"s"
    t.reset_input()
    assert t.read_until(b"\r\n", 0.2) == b""


def test_a_missing_port_is_absent_and_retried_with_exponential_backoff(tmp_path):
    t = SerialTransport(str(tmp_path / "nothing"), SETTINGS, min_backoff_s=0.2, max_backoff_s=0.4)
    with pytest.raises(PortAbsent, match="nothing"):
        t.ensure_open()
    assert t.state == "absent" and t.open_attempts == 1
    for _ in range(100):                 # a tight loop of polls must not hammer the OS
        with pytest.raises(PortAbsent, match="next attempt"):
            t.ensure_open()
    assert t.open_attempts == 1
    t._retry_at = 0                      # let the back-off pass without sleeping
    with pytest.raises(PortAbsent):
        t.ensure_open()
    assert t.open_attempts == 2 and t._backoff_s == pytest.approx(0.4)
    t._retry_at = 0
    with pytest.raises(PortAbsent):
        t.ensure_open()
    assert t._backoff_s == pytest.approx(0.4)        # capped at max_backoff_s


def test_a_port_held_by_another_opener_is_busy(run_probe, transports):
    probe = run_probe(Echo())
    first = transports(probe.link, SETTINGS)
    first.ensure_open()
    second = transports(probe.link, SETTINGS)
    with pytest.raises(PortBusy, match="another process"):
        second.ensure_open()
    assert second.state == "busy"
    first.close()
    second._retry_at = 0
    second.ensure_open()
    assert second.state == "open"


def test_unplug_makes_io_raise_absent_and_replug_under_a_new_name_is_reopened(run_probe, transports):
    probe = run_probe(Echo(b"ok\r\n"))
    t = transports(probe.link, SETTINGS, min_backoff_s=0.05)
    t.write(b"1")
    assert t.read_until(b"\r\n", 2) == b"ok\r\n"
    old_device = t.device
    probe.unplug()
    with pytest.raises(PortAbsent):
        t.ensure_open()
        t.write(b"2")
        t.read_until(b"\r\n", 1)
    assert t.state == "absent"
    # A second pty is opened first so the replugged probe cannot reuse the old /dev/pts number.
    keep_master, keep_slave = os.openpty()
    try:
        new_device = probe.replug()
        assert new_device != old_device
        t._retry_at = 0
        t.ensure_open()
        t.write(b"3")
        assert t.read_until(b"\r\n", 2) == b"ok\r\n"
        assert t.device == new_device
    finally:
        os.close(keep_master)
        os.close(keep_slave)


def test_a_replug_between_polls_is_noticed_before_the_next_command(run_probe, transports):
    fw = Echo(b"ok\r\n")
    probe = run_probe(fw)
    t = transports(probe.link, SETTINGS)
    t.write(b"a")
    assert t.read_until(b"\r\n", 2) == b"ok\r\n"
    probe.unplug()
    probe.replug()
    t.ensure_open()                      # the link now names another device: reopen, do not write into the old one
    t.write(b"b")
    assert t.read_until(b"\r\n", 2) == b"ok\r\n"
    assert fw.heard.endswith(b"b")


def test_a_usb_adapter_that_is_not_plugged_in_is_absent():
    t = SerialTransport("usb:fffe:fffd:NOPE", SETTINGS)
    with pytest.raises(PortAbsent, match="no USB adapter"):
        t.ensure_open()


def test_port_names_are_parsed_or_refused_with_the_expected_form():
    assert parse_port("/dev/serial/by-id/usb-FTDI_X-if00-port0") == "/dev/serial/by-id/usb-FTDI_X-if00-port0"
    assert parse_port("usb:0403:6001") == UsbMatch(0x0403, 0x6001, None)
    assert parse_port("usb:0403:6001:A50285BI") == UsbMatch(0x0403, 0x6001, "A50285BI")
    assert str(UsbMatch(0x0403, 0x6001, "X")) == "usb:0403:6001:X"
    for bad in ("usb:0403", "usb:zz:6001", "usb:12345:1", ""):
        with pytest.raises(PortSpecError, match="expected|hexadecimal|4 hexadecimal"):
            parse_port(bad)
        with pytest.raises(ValueError):
            SerialTransport(bad, SETTINGS)


def test_serial_settings_refuse_impossible_line_settings():
    assert str(SerialSettings(1200, 7, "E", 1)) == "1200 7E1"
    assert SerialSettings(1200, 7, "E", 1).char_time_s() == pytest.approx(10 / 1200)
    for kw in ({"bytesize": 9}, {"parity": "X"}, {"stopbits": 3}, {"baudrate": 0}):
        with pytest.raises(ValueError):
            SerialSettings(**kw)


def test_send_break_on_a_pty_keeps_the_port_usable(run_probe, transports):
    probe = run_probe(Echo(b"ok\r\n"))
    t = transports(probe.link, SerialSettings(1200, 7, "E", 1))
    t.send_break(0.012)
    t.write(b"x")
    assert t.read_until(b"\r\n", 2) == b"ok\r\n"


@pytest.mark.parametrize("settings", [SerialSettings(1200, 7, "E", 1), SerialSettings(9600, 8, "N", 1)])
def test_a_port_closed_and_opened_again_works_each_time(run_probe, transports, settings):
    # A pty refuses 7E1 silently the first time and with EINVAL the second on recent kernels.
    probe = run_probe(Echo(b"ok\r\n"))
    t = transports(probe.link, settings)
    for _ in range(3):
        t.ensure_open()
        t.write(b"x")
        assert t.read_until(b"\r\n", 2) == b"ok\r\n"
        t.close()
        assert t.state == "closed"


def test_a_probe_replugged_after_a_long_absence_is_opened_at_the_next_poll(run_probe, transports):
    # Measured before the fix: a probe away long enough to grow the back-off to 60 s stayed absent 16 s after
    # it came back. A port whose device node was missing is reopened as soon as the node exists again.
    probe = run_probe(Echo(b"ok\r\n"))
    t = transports(probe.link, SETTINGS)
    assert t.max_backoff_s <= 5.0            # any other failure is retried within a few seconds
    t.ensure_open()
    probe.unplug()
    for _ in range(8):                       # a long absence: the back-off grows to its cap
        t._retry_at = 0
        with pytest.raises(PortAbsent):
            t.ensure_open()
    attempts = t.open_attempts
    for _ in range(50):                      # still away: polls cost a stat(), not an open()
        with pytest.raises(PortAbsent, match="next attempt"):
            t.ensure_open()
    assert t.open_attempts == attempts
    probe.replug()
    t.ensure_open()                          # at once, not after the back-off
    t.write(b"x")
    assert t.read_until(b"\r\n", 2) == b"ok\r\n"
