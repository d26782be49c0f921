"""Driver for the compact NIR spectrometer (NSP frame protocol, 115200 8N1).

One poll: set the integration time, capture dark and white references
(each poll, or reused while younger than ``reference_max_age_s`` at the same
integration time) and the sample; return a `Spectrum` in counts with its
dark and white attached, so reflectance = (S - D)/(W - D) is computed where
the calibration lives. Statuses: no frame TIMEOUT; frame cut short PARTIAL;
CRC mismatch CRC_ERROR; no sync / impossible length / inconsistent payload
GARBLED; NAK ERROR; any sample or white count at full scale SATURATED
(spectrum kept, lower ``integration_ms``); identical sample frames
``stuck_polls`` times STUCK. Frame failures are retried ``retries`` times.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

from firmware_bridge.drivers.base import Driver, DriverFailure
from firmware_bridge.protocols import ChecksumMismatch, GarbledFrame, NoResponse, PartialFrame, ProtocolError
from firmware_bridge.protocols.spectro import (
    FLAG_SATURATED, HEADER_LEN, SYNC, Capture, Command, Frame, FrameStatus, ReplyType, SpectrumFrame, decode_info,
    decode_spectrum, encode_frame, frame_length, parse_frame)
from firmware_bridge.reading import DriverStatus, Reading, Spectrum
from firmware_bridge.transport import SerialSettings, SerialTransport


class NirSpectrometerDriver(Driver):
    name: ClassVar[str] = "nir-spectrometer"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(115200, 8, "N", 1)
    quantities: ClassVar[Mapping[str, str]] = {}
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "integration_ms": 100, "reference_max_age_s": 0.0, "timeout_s": 1.0, "retries": 1, "stuck_polls": 5,
        "wavelength_range_nm": (1350.0, 2500.0)}
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        **Driver.option_ranges, "integration_ms": (1, 5000), "reference_max_age_s": (0.0, 86400.0),
        "timeout_s": (0.05, 10.0), "retries": (0, 10)}
    takes_address: ClassVar[bool] = False
    spectrum_unit: ClassVar[str | None] = "counts"
    spectrum_references: ClassVar[bool] = True

    def __init__(self, transport: SerialTransport, probe_id: str, address: str = "",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(transport, probe_id, address, options)
        first, last = self.options["wavelength_range_nm"]
        if not 100 <= first < last <= 20000:
            raise self.config_error("options.wavelength_range_nm", "[first, last] in nm, 100 <= first < last <= 20000",
                                    list(self.options["wavelength_range_nm"]))
        self._full_scale: int | None = None
        self._refs: tuple[float, int, SpectrumFrame, SpectrumFrame] | None = None  # (time, ms, dark, white)
        self._opened = -1      # transport.open_attempts when the references were taken

    @classmethod
    def wavelength_range_for(cls, options: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
        first, last = (options or {}).get("wavelength_range_nm", cls.option_defaults["wavelength_range_nm"])
        return float(first), float(last)

    # -- one exchange --------------------------------------------------------------
    def exchange(self, command: int, payload: bytes = b"", *, busy_s: float = 0.0) -> Frame:
        """Send one command frame, return the reply frame; ProtocolError after the retries."""
        last: ProtocolError | None = None
        for _ in range(int(self.options["retries"]) + 1):
            self.transport.reset_input()
            self.transport.write(encode_frame(command, payload))
            try:
                frame = self._read_frame(float(self.options["timeout_s"]) + busy_s)
            except (ChecksumMismatch, PartialFrame, GarbledFrame) as e:
                last = e
                continue
            if frame.type == ReplyType.NAK:
                code = frame.payload[0] if frame.payload else 0
                raise ProtocolError(f"command 0x{command:02x} refused (NAK code {code})")
            return frame
        assert last is not None
        raise last

    def _read_frame(self, timeout: float) -> Frame:
        t = self.transport
        header = t.read_exact(HEADER_LEN, timeout)
        if not header:
            raise NoResponse(f"no answer within {timeout:.2f} s (check power, cable and 115200 8N1)")
        if len(header) < HEADER_LEN and SYNC.startswith(header[:2]):
            raise PartialFrame(f"frame cut short after {len(header)} bytes")
        total = frame_length(header)
        if total is None:
            raise GarbledFrame(f"no frame start in {header.hex(' ')} (wrong baud rate or line noise?)")
        rest = t.read_exact(total - HEADER_LEN, timeout)
        result = parse_frame(header + rest)
        if result.status is FrameStatus.INCOMPLETE:
            raise PartialFrame(f"frame cut short: {HEADER_LEN + len(rest)} of {total} bytes")
        if result.status is FrameStatus.CRC_ERROR:
            raise ChecksumMismatch("frame CRC mismatch (electrical noise? check the cable)")
        if result.status is not FrameStatus.OK or result.frame is None:
            raise GarbledFrame("unreadable frame")
        return result.frame

    def acquire(self, capture: Capture, ms: int) -> SpectrumFrame:
        frame = self.exchange(Command.ACQUIRE, bytes([capture]), busy_s=ms / 1000)
        spectrum = decode_spectrum(frame.payload) if frame.type == ReplyType.SPECTRUM else None
        if spectrum is None or spectrum.capture != capture:
            raise GarbledFrame(f"expected a {capture.name.lower()} spectrum frame, got type 0x{frame.type:02x}")
        return spectrum

    # -- poll --------------------------------------------------------------------------
    def poll(self) -> Reading:
        try:
            return self._poll()
        except ProtocolError as e:
            self._refs = None
            raise DriverFailure(e.status, f"probe {self.probe_id}: {e}") from None
        except BaseException:
            self._refs = None
            raise

    def _poll(self) -> Reading:
        ms = int(self.options["integration_ms"])
        if self._full_scale is None:
            info = decode_info(self.exchange(Command.GET_INFO).payload)
            if info is None:
                raise GarbledFrame("unreadable INFO frame")
            first, last = self.options["wavelength_range_nm"]
            if abs(info.first_nm - first) > 0.5 or abs(info.last_nm - last) > 0.5:
                raise DriverFailure(DriverStatus.ERROR, f"probe {self.probe_id}: the spectrometer covers "
                                    f"{info.first_nm:g}-{info.last_nm:g} nm, the configuration says "
                                    f"{first:g}-{last:g}; set option wavelength_range_nm to the device's range")
            self._full_scale = info.full_scale
        self.exchange(Command.SET_INTEGRATION, ms.to_bytes(2, "little"))
        now = time.monotonic()
        max_age = float(self.options["reference_max_age_s"])
        opened = getattr(self.transport, "open_attempts", 0)
        if opened != self._opened:     # the port was reopened (replug?): the references may be another unit's
            self._refs, self._opened = None, opened
        if self._refs is None or self._refs[1] != ms or now - self._refs[0] > max_age:
            dark = self.acquire(Capture.DARK, ms)
            white = self.acquire(Capture.WHITE, ms)
            self._refs = (now, ms, dark, white)
        _, _, dark, white = self._refs
        sample = self.acquire(Capture.SAMPLE, ms)
        if not (len(sample.counts) == len(dark.counts) == len(white.counts)) or \
                (sample.first_nm, sample.last_nm) != (white.first_nm, white.last_nm):
            self._refs = None
            raise GarbledFrame("sample and reference frames disagree on the wavelength axis")
        fs = self._full_scale
        saturated = max(sample.counts) >= fs or max(white.counts) >= fs or bool(sample.flags & FLAG_SATURATED)
        spectrum = Spectrum(wavelengths_nm=sample.wavelengths_nm, values=tuple(float(c) for c in sample.counts),
                            unit="counts", integration_ms=float(sample.integration_ms), gain=1.0,
                            dark=tuple(float(c) for c in dark.counts), white=tuple(float(c) for c in white.counts),
                            saturated=saturated, full_scale=float(fs))
        if saturated:
            n = sum(c >= fs for c in sample.counts) + sum(c >= fs for c in white.counts)
            self._refs = None
            return self.reading(DriverStatus.SATURATED, spectrum=spectrum,
                                message=f"probe {self.probe_id}: {n} band(s) at full scale {fs} with "
                                        f"{ms} ms integration; lower integration_ms")
        return self.checked({}, spectrum=spectrum)
