"""A compact NIR spectrometer (InGaAs array, halogen lamp) speaking the NSP frame protocol.

256 bands from 1350 to 2500 nm (the range of MEMS/InGaAs field units that
overlaps the NIRsoil library's 1100-2498 nm). Counts follow the usual
radiometric chain, inverted by the driver's reflectance = (S - D)/(W - D):
dark D = offset + dark current * t; white W = D + responsivity * t * R_tile;
sample S = D + responsivity * t * R_soil, with shot noise, clipped at the
16-bit full scale. R_soil comes from the shared soil model, so spectra
respond to moisture (1450/1940 nm bands, darkening) and carbon.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from firmware_bridge.protocols.spectro import (
    FLAG_LAMP_ON, FLAG_SATURATED, FULL_SCALE, Capture, Command, FrameStatus, Info, NakCode, ReplyType,
    SpectrumFrame, encode_frame, parse_frame)
from firmware_bridge.sim.faults import FaultSwitches, apply_faults
from firmware_bridge.sim.soil import SoilModel, firmware_params, reflectance

BANDS = 256
FIRST_NM, LAST_NM = 1350.0, 2500.0
WHITE_TILE = 0.99            # a Spectralon-like internal reference


class NirSpectrometerFirmware:
    def __init__(self, seed: int, faults: FaultSwitches, *, soil: SoilModel | None = None, time_scale: float = 1.0,
                 response_delay_s: float = 0.005, bands: int = BANDS) -> None:
        self.faults = faults
        self.soil = soil or SoilModel(seed)
        self.rng = random.Random(seed ^ 0x41B)
        self.np_rng = np.random.default_rng(seed + 1)
        self.time_scale = time_scale
        self.delay = response_delay_s
        self.wavelengths = np.linspace(FIRST_NM, LAST_NM, bands)
        wl = self.wavelengths
        # Lamp x extended-InGaAs responsivity, counts per ms at R = 1: peaks near 1900 nm, falls at both ends.
        self.responsivity = 420.0 * (0.45 + 0.55 * np.exp(-0.5 * ((wl - 1900) / 380) ** 2)) * \
            (1 - 0.5 * np.clip((wl - 2350) / 150, 0, 1))
        self.integration_ms = 100
        self.seq = 0
        self._buf = b""
        self._t0: float | None = None
        self._frozen: np.ndarray | None = None
        self.captures: list[int] = []

    def counts(self, capture: int, now: float) -> np.ndarray:
        if capture == Capture.SAMPLE and self.faults.stuck_value and self._frozen is not None:
            return self._frozen.copy()
        t = self.integration_ms
        dark = 1500.0 + 3.0 * t
        if capture == Capture.DARK:
            signal = np.zeros_like(self.wavelengths)
        else:
            if capture == Capture.WHITE:
                r = np.full_like(self.wavelengths, WHITE_TILE)
            else:
                if self._t0 is None:
                    self._t0 = now
                s = self.soil.state((now - self._t0) * self.time_scale)
                r = reflectance(self.wavelengths, s.soc_percent, s.vwc)
                if self.faults.saturation:
                    r = r * 8.0
            signal = self.responsivity * t * r
        mean = dark + signal
        noisy = mean + self.np_rng.normal(0, 1, mean.shape) * np.sqrt(mean * 0.5 + 36.0)
        out = np.clip(np.round(noisy), 0, FULL_SCALE)
        if capture == Capture.SAMPLE and self.faults.stuck_value:
            self._frozen = out.copy()
        return out

    def handle(self, type_: int, payload: bytes, now: float) -> tuple[bytes, float]:
        """The reply frame for one command, and the time it takes (integration)."""
        if type_ == Command.GET_INFO and not payload:
            info = Info(len(self.wavelengths), FIRST_NM, LAST_NM, FULL_SCALE, "NSP2500")
            return encode_frame(ReplyType.INFO, info.encode()), 0.0
        if type_ == Command.SET_INTEGRATION and len(payload) == 2:
            ms = int.from_bytes(payload, "little")
            if not 1 <= ms <= 5000:
                return encode_frame(ReplyType.NAK, bytes([NakCode.BAD_ARGUMENT])), 0.0
            self.integration_ms = ms
            return encode_frame(ReplyType.ACK), 0.0
        if type_ == Command.ACQUIRE and len(payload) == 1 and payload[0] in tuple(Capture):
            capture = payload[0]
            counts = self.counts(capture, now)
            self.captures.append(capture)
            self.seq = (self.seq + 1) & 0xFFFF
            flags = (FLAG_SATURATED if counts.max() >= FULL_SCALE else 0) | \
                (FLAG_LAMP_ON if capture != Capture.DARK else 0)
            frame = SpectrumFrame(capture, self.seq, self.integration_ms, FIRST_NM, LAST_NM, flags,
                                  tuple(int(c) for c in counts))
            return encode_frame(ReplyType.SPECTRUM, frame.encode()), self.integration_ms / 1000
        return encode_frame(ReplyType.NAK, bytes([NakCode.BAD_COMMAND if type_ not in tuple(Command)
                                                  else NakCode.BAD_ARGUMENT])), 0.0

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self._buf += data
        out: list[tuple[float, bytes]] = []
        for _ in range(64):
            result = parse_frame(self._buf)
            if result.status in (FrameStatus.EMPTY, FrameStatus.INCOMPLETE):
                break
            self._buf = self._buf[result.consumed:]
            if result.status is FrameStatus.OK and result.frame is not None:
                reply, busy_s = self.handle(result.frame.type, result.frame.payload, now)
                out += apply_faults(reply, self.faults, self.rng, delay=self.delay + busy_s,
                                    crc_span=(len(reply) - 2, len(reply)))
            # CRC errors and noise: ignored, the host times out and retries.
        if len(self._buf) > 4096:
            self._buf = b""
        return out

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        return []


def make_firmware(address: str, seed: int, faults: FaultSwitches, **params: Any) -> NirSpectrometerFirmware:
    """Factory for `humus sim --probe nir-spectrometer` (no address; params: bands, time_scale)."""
    kw = firmware_params("nir-spectrometer", seed, params, ("bands", "time_scale", "response_delay_s"))
    return NirSpectrometerFirmware(seed, faults, **kw)
