"""Fixtures for firmware_bridge: simulated probes on real pseudo-terminals."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from firmware_bridge.sim.faults import FaultSwitches
from firmware_bridge.sim.pty import PtyProbe
from firmware_bridge.sim.sdi12 import Sdi12BusFirmware, make_firmware
from firmware_bridge.transport import SerialTransport


@pytest.fixture
def run_probe(tmp_path: Path) -> Iterator[Callable[..., PtyProbe]]:
    """Start a firmware on a pty linked under tmp_path; everything is stopped at teardown."""
    started: list[PtyProbe] = []

    def start(firmware, name: str = "probe") -> PtyProbe:
        probe = PtyProbe(firmware, tmp_path / name).start()
        started.append(probe)
        return probe

    yield start
    for probe in started:
        probe.stop()


@pytest.fixture
def transports() -> Iterator[Callable[..., SerialTransport]]:
    """Make transports that are closed at teardown."""
    made: list[SerialTransport] = []

    def make(port, settings, **kw) -> SerialTransport:
        t = SerialTransport(str(port), settings, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


class SdiBus:
    """A simulated SDI-12 bus: firmware, its faults, the pty probe and its link."""

    def __init__(self, firmware: Sdi12BusFirmware, faults: FaultSwitches, probe: PtyProbe) -> None:
        self.firmware, self.faults, self.probe = firmware, faults, probe
        self.link = str(probe.link)

    def sensor(self, address: str):
        return self.firmware.sensor(address)


@pytest.fixture
def sdi_bus(run_probe) -> Callable[..., SdiBus]:
    """`sdi_bus("0,1", seed=3, measure_s=0.1)`: TEROS-12-like sensors on one pty (fast measurements)."""

    def make(addresses: str = "0", seed: int = 1, **params) -> SdiBus:
        params.setdefault("measure_s", 0.1)
        faults = FaultSwitches()
        firmware = make_firmware(addresses, seed, faults, **params)
        return SdiBus(firmware, faults, run_probe(firmware, "sdi12"))

    return make
