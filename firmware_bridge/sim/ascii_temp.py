"""A home-made line-ASCII temperature probe (an Arduino with a DS18B20, say).

On ``R`` (or ``?``) followed by CR/LF it prints one line ``T=21.37,C*hh``
with the NMEA-style XOR checksum (`firmware_bridge.protocols.nmea`); with
``stream_period_s`` > 0 it also prints a line every period unprompted, as
many such sketches do. The temperature is the shared soil model's, with
0.02 °C of sensor noise; saturation pins it at +125 °C, the top of the
DS18B20 range (Maxim DS18B20 datasheet, "measures temperatures from -55 °C
to +125 °C").
"""

from __future__ import annotations

import random
from typing import Any

from firmware_bridge.protocols.nmea import encode_line
from firmware_bridge.sim.faults import FaultSwitches, apply_faults
from firmware_bridge.sim.soil import SoilModel, firmware_params

TOP_OF_RANGE_C = 125.0


class AsciiTempFirmware:
    def __init__(self, seed: int, faults: FaultSwitches, *, soil: SoilModel | None = None, time_scale: float = 1.0,
                 stream_period_s: float = 0.0, checksum: bool = True, response_delay_s: float = 0.01) -> None:
        self.faults = faults
        self.soil = soil or SoilModel(seed)
        self.rng = random.Random(seed ^ 0xA5C11)
        self.time_scale = time_scale
        self.period = stream_period_s
        self.checksum = checksum
        self.delay = response_delay_s
        self._buf = bytearray()
        self._t0: float | None = None
        self._next: float | None = None
        self._frozen: float | None = None
        self.lines_sent = 0

    def temperature(self, now: float) -> float:
        if self.faults.stuck_value and self._frozen is not None:
            return self._frozen
        if self._t0 is None:
            self._t0 = now
        t = self.soil.temperature_c((now - self._t0) * self.time_scale) + self.rng.gauss(0, 0.02)
        if self.faults.saturation:
            t = TOP_OF_RANGE_C
        self._frozen = t if self.faults.stuck_value else None
        return t

    def line(self, now: float) -> list[tuple[float, bytes]]:
        frame = encode_line(f"T={self.temperature(now):.2f},C", with_checksum=self.checksum)
        self.lines_sent += 1
        star = frame.find(b"*")
        span = (star + 1, star + 3) if star >= 0 else None
        return apply_faults(frame, self.faults, self.rng, delay=self.delay, crc_span=span)

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self._buf += data
        out: list[tuple[float, bytes]] = []
        while b"\n" in self._buf or b"\r" in self._buf:
            cut = min(i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0)
            command = bytes(self._buf[:cut]).strip().upper()
            del self._buf[:cut + 1]
            if command in (b"R", b"?"):
                out += self.line(now)
        if len(self._buf) > 64:
            self._buf.clear()
        return out

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        if self.period <= 0:
            return []
        if self._next is None:
            self._next = now + self.period
        if now < self._next:
            return []
        self._next += self.period * max(1, int((now - self._next) // self.period) + 1)
        return self.line(now)


def make_firmware(address: str, seed: int, faults: FaultSwitches, **params: Any) -> AsciiTempFirmware:
    """Factory for `humus sim --probe ascii-temp` (params: stream_period_s, checksum, time_scale, soc_percent...)."""
    kw = firmware_params("ascii-temp", seed, params, ("stream_period_s", "checksum", "time_scale", "response_delay_s"))
    return AsciiTempFirmware(seed, faults, **kw)
