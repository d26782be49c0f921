"""Gateway configuration errors name the key; clock checks and aligned slots."""

from __future__ import annotations

import time

import pytest

from collector.clock import Clock, kernel_clock_unsynced
from collector.config import load_gateway_config
from collector.schedule import next_slot_ns
from humus.config import ConfigError

BASE = '[gateway]\nsite = "s1"\nid = "gw1"\ndata_dir = "/tmp/x"\n'


def load(tmp_path, text: str):
    p = tmp_path / "gw.toml"
    p.write_text(BASE + text)
    return load_gateway_config(p)


def test_suspect_span_outside_the_fail_span_is_refused_with_its_key(tmp_path):
    with pytest.raises(ConfigError, match=r"probes\[0\]\.qc\.soil_temp\.gross_range\.suspect_span"):
        load(tmp_path, '[[probes]]\nid = "p"\ndriver = "ascii-temp"\nport = "/dev/null"\n'
                       '[probes.qc.soil_temp]\ngross_range = { fail_span = [0, 10], suspect_span = [-1, 5] }\n')


def test_calibration_without_its_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"calibration\.vwc\.input"):
        load(tmp_path, '[[probes]]\nid = "p"\ndriver = "teros12"\nport = "/dev/null"\n'
                       '[probes.calibration.vwc]\nmodel = "teros12_vwc"\n')


def test_unknown_qc_test_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load(tmp_path, '[[probes]]\nid = "p"\ndriver = "teros12"\nport = "/dev/null"\n'
                       '[probes.qc.vwc]\nclimatology = { x = 1 }\n')


def test_duplicate_probe_ids_are_refused(tmp_path):
    probe = '[[probes]]\nid = "p"\ndriver = "teros12"\nport = "/dev/null"\n'
    with pytest.raises(ConfigError, match=r"probes\[1\]\.id"):
        load(tmp_path, probe + probe)


def test_a_clock_before_the_sane_epoch_is_not_synchronised():
    future = (time.time_ns() // 10**9 + 10**8) * 10**9
    assert not Clock(future, 2.0, "epoch").synced()
    assert Clock(0, 2.0, "epoch").synced()
    assert kernel_clock_unsynced() in (True, False, None)


def test_no_clock_step_without_one():
    c = Clock(0, 2.0, "epoch")
    assert c.detect_step() is None and c.steps == 0


def test_slots_are_aligned_to_the_wall_clock():
    now = 1_790_000_123_456_789_000
    assert next_slot_ns(now, 900) % (900 * 10**9) == 0
    assert 0 < next_slot_ns(now, 900) - now <= 900 * 10**9
    assert next_slot_ns(now, 1.5) % 1_500_000_000 == 0


def test_a_wall_clock_step_realigns_the_slots_without_counting_overruns():
    import threading

    from collector.schedule import PortWorker, ScheduledProbe

    now = [1_790_000_000 * 10**9 + 100_000_000]
    base_mono = time.monotonic_ns()
    polled: list[int] = []
    stop = threading.Event()
    # a wall clock that follows the monotonic clock, plus an adjustable offset
    jump = [0]

    def clock() -> int:
        return now[0] + (time.monotonic_ns() - base_mono) + jump[0]

    p = ScheduledProbe("p", 1.0, polled.append)
    w = PortWorker("/dev/x", [p], stop, clock_ns=clock)
    w.start()
    try:
        deadline = time.monotonic() + 5
        while len(polled) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        jump[0] = 3600 * 10**9          # NTP sets the clock an hour forward
        n = len(polled)
        deadline = time.monotonic() + 5
        while len(polled) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        jump[0] = -7200 * 10**9         # and then back two hours
        n2 = len(polled)
        deadline = time.monotonic() + 5
        while len(polled) < n2 + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        w.join(5)
    assert len(polled) >= n2 + 2, "polling stalled after the clock step"
    assert p.overruns == 0
    assert all(s % 10**9 == 0 for s in polled)
