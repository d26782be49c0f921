"""An AS7265x-style 18-channel spectral sensor speaking the AT command set.

Commands (AS7265x datasheet v1-04, "AT Command Interface"; SparkFun Triad
firmware): ``AT``, ``ATINTTME[=1..255]`` (integration time in 2.8 ms
cycles), ``ATGAIN[=0..3]`` (1x, 3.7x, 16x, 64x), ``ATLED1[=0|100]``
(illumination LED off/on), ``ATLEDC[=0..3]`` (LED current 12.5/25/50/100
mA), ``ATDATA`` (18 raw 16-bit counts), ``ATCDATA`` (18 calibrated values,
µW/cm²). Replies end ``OK\\r\\n``; anything else gets ``ERROR\\r\\n``.

Counts follow the soil model's reflectance under the LED (plus a little
ambient light): counts = E * k * t_int * gain + dark, clipped at 65535;
the calibrated value is counts back-converted, so it clips too when a
channel saturates, as on the real part.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from firmware_bridge.sim.faults import FaultSwitches, apply_faults
from firmware_bridge.sim.soil import SoilModel, firmware_params, reflectance

from firmware_bridge.drivers.as7265x import CYCLE_MS, FULL_SCALE, GAINS, LED_CURRENT_MA, WAVELENGTHS

_K = 0.45          # counts per (µW/cm² · ms · gain)
_DARK = 30.0       # counts


class As7265xFirmware:
    def __init__(self, seed: int, faults: FaultSwitches, *, soil: SoilModel | None = None, time_scale: float = 1.0,
                 response_delay_s: float = 0.005) -> None:
        self.faults = faults
        self.soil = soil or SoilModel(seed)
        self.rng = random.Random(seed ^ 0x7265)
        self.np_rng = np.random.default_rng(seed)
        self.time_scale = time_scale
        self.delay = response_delay_s
        self.cycles = 20
        self.gain = 1
        self.led = False
        self.led_current = 0
        self._buf = bytearray()
        self._t0: float | None = None
        self._frozen: np.ndarray | None = None
        self.led_on_reads = 0       # ATCDATA/ATDATA answered with the LED on (tests)

    # -- optics -------------------------------------------------------------
    def raw_counts(self, now: float) -> np.ndarray:
        if self.faults.stuck_value and self._frozen is not None:
            return self._frozen.copy()
        if self._t0 is None:
            self._t0 = now
        state = self.soil.state((now - self._t0) * self.time_scale)
        r = reflectance(WAVELENGTHS, state.soc_percent, state.vwc)
        wl = np.asarray(WAVELENGTHS)
        # A white LED (blue pump + phosphor) shape times a silicon response, in µW/cm² at the sample.
        led = (0.6 * np.exp(-0.5 * ((wl - 450) / 20) ** 2) + np.exp(-0.5 * ((wl - 590) / 90) ** 2) + 0.15)
        irradiance = (LED_CURRENT_MA[self.led_current] / 25.0) * 40.0 * led if self.led else 0.0
        signal = (irradiance + 0.5) * r
        if self.faults.saturation:
            signal = signal * 1e4
        t_ms = self.cycles * CYCLE_MS
        counts = signal * _K * t_ms * GAINS[self.gain] + _DARK
        counts = counts + self.np_rng.normal(0, 1, counts.shape) * np.sqrt(counts) * 0.3
        counts = np.clip(np.round(counts), 0, FULL_SCALE)
        self._frozen = counts.copy() if self.faults.stuck_value else None
        return counts

    def calibrated(self, counts: np.ndarray) -> np.ndarray:
        return (counts - _DARK) / (_K * self.cycles * CYCLE_MS * GAINS[self.gain])

    # -- AT commands ------------------------------------------------------------
    def command(self, text: str, now: float) -> str:
        name, eq, arg = text.upper().partition("=")
        try:
            value = int(arg, 0) if eq else None
        except ValueError:
            return "ERROR"
        if name == "AT" and not eq:
            return "OK"
        settings = {"ATINTTME": ("cycles", 1, 255), "ATGAIN": ("gain", 0, 3), "ATLEDC": ("led_current", 0, 3)}
        if name in settings:
            attr, low, high = settings[name]
            if value is None:
                return f"{getattr(self, attr)} OK"
            if not low <= value <= high:
                return "ERROR"
            setattr(self, attr, value)
            return "OK"
        if name == "ATLED1":
            if value is None:
                return f"{100 if self.led else 0} OK"
            if value not in (0, 100):
                return "ERROR"
            self.led = value == 100
            return "OK"
        if name in ("ATDATA", "ATCDATA") and not eq:
            counts = self.raw_counts(now)
            self.led_on_reads += self.led
            if name == "ATDATA":
                return ", ".join(str(int(c)) for c in counts) + " OK"
            return ", ".join(f"{v:.3f}" for v in self.calibrated(counts)) + " OK"
        return "ERROR"

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self._buf += data
        out: list[tuple[float, bytes]] = []
        while True:
            cuts = [i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0]
            if not cuts:
                break
            line = bytes(self._buf[:min(cuts)]).strip()
            del self._buf[:min(cuts) + 1]
            if not line:
                continue
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                text = "?"
            reply = (self.command(text, now) + "\r\n").encode("ascii")
            out += apply_faults(reply, self.faults, self.rng, delay=self.delay)
        if len(self._buf) > 128:
            self._buf.clear()
        return out

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        return []


def make_firmware(address: str, seed: int, faults: FaultSwitches, **params: Any) -> As7265xFirmware:
    """Factory for `humus sim --probe as7265x` (no address: one sensor per UART; params: time_scale)."""
    kw = firmware_params("as7265x", seed, params, ("time_scale", "response_delay_s"))
    return As7265xFirmware(seed, faults, **kw)
