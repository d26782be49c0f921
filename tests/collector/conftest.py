"""Helpers for collector tests: simulated probes on ptys, gateway files, an MQTT recorder."""

from __future__ import annotations

import pytest

from collector_support import Recorder


@pytest.fixture
def recorder_factory():
    made: list[Recorder] = []

    def make(port: int) -> Recorder:
        r = Recorder(port)
        made.append(r)
        return r

    yield make
    for r in made:
        try:
            r.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def sim_probes(tmp_path):
    """Factory: start `n` simulated ascii-temp probes on ptys linked under tmp_path."""
    from firmware_bridge.sim.ascii_temp import make_firmware
    from firmware_bridge.sim.faults import FaultSwitches
    from firmware_bridge.sim.pty import PtyProbe

    started: list = []

    def start(n: int, prefix: str = "tty"):
        out = []
        for i in range(n):
            p = PtyProbe(make_firmware("", 100 + len(started), FaultSwitches()), tmp_path / f"{prefix}{i}").start()
            started.append(p)
            out.append(p)
        return out

    yield start
    for p in started:
        p.stop()


