"""Driver for AS7265x-style 18-channel spectral sensors (AT commands, 115200 8N1).

One poll: set integration time, gain and LED current, switch the
illumination LED on, wait one integration period so a fresh measurement
covers the lit sample, read calibrated (ATCDATA) and raw (ATDATA)
channels, switch the LED off (also after a failure, so a probe never bakes
its sample). The Reading carries a `Spectrum` of calibrated values in
µW/cm², sorted by wavelength. Statuses: silence TIMEOUT; reply without
``OK`` PARTIAL; non-text GARBLED; ``ERROR`` ERROR; a raw channel at 65535
SATURATED (spectrum kept, `saturated=True`: lower ``gain`` or
``integration_cycles``); identical spectra ``stuck_polls`` times STUCK.
The AT protocol carries no checksum, so a corrupted digit cannot be seen.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

from firmware_bridge.drivers.base import Driver, DriverFailure
from firmware_bridge.protocols import ProtocolError
from firmware_bridge.protocols.at import ReplyStatus, encode_command, parse_numbers, parse_reply, reply_error
from firmware_bridge.reading import DriverStatus, Reading, Spectrum
from firmware_bridge.transport import PortAbsent, PortBusy, SerialSettings, SerialTransport

# (channel letter, centre nm) in the order ATDATA/ATCDATA report them; AS7265x datasheet v1-04,
# "Spectral Responsivity": AS72653 A-F 410-535, AS72652 G H I J K L, AS72651 R S T U V W.
CHANNELS: tuple[tuple[str, float], ...] = (
    ("A", 410), ("B", 435), ("C", 460), ("D", 485), ("E", 510), ("F", 535), ("G", 560), ("H", 585),
    ("R", 610), ("I", 645), ("S", 680), ("J", 705), ("T", 730), ("U", 760), ("V", 810), ("W", 860),
    ("K", 900), ("L", 940))
WAVELENGTHS = tuple(float(w) for _, w in CHANNELS)
CHANNEL_COUNT = len(CHANNELS)
GAINS = (1.0, 3.7, 16.0, 64.0)              # ATGAIN 0..3
LED_CURRENT_MA = (12.5, 25.0, 50.0, 100.0)  # ATLEDC 0..3
CYCLE_MS = 2.8                              # one ATINTTME cycle
FULL_SCALE = 65535                          # 16-bit channel ADC


class AS7265xDriver(Driver):
    name: ClassVar[str] = "as7265x"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(115200, 8, "N", 1)
    quantities: ClassVar[Mapping[str, str]] = {}
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "integration_cycles": 50, "gain": 2, "led": True, "led_current": 1, "timeout_s": 1.0, "stuck_polls": 5}
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        **Driver.option_ranges, "integration_cycles": (1, 255), "gain": (0, 3), "led_current": (0, 3),
        "timeout_s": (0.05, 10.0)}
    takes_address: ClassVar[bool] = False
    spectrum_unit: ClassVar[str | None] = "uW/cm2"

    @classmethod
    def wavelength_range_for(cls, options: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
        return min(WAVELENGTHS), max(WAVELENGTHS)

    def command(self, name: str, value: int | None = None) -> str:
        """Send one AT command and return the data before ``OK``; ProtocolError otherwise."""
        raw = encode_command(name, value)
        self.transport.reset_input()
        self.transport.write(raw)
        reply = parse_reply(self.transport.read_until(b"\n", float(self.options["timeout_s"]), max_bytes=1024))
        if reply.status is not ReplyStatus.OK:
            raise reply_error(raw, reply)
        return reply.data

    def poll(self) -> Reading:
        o = self.options
        cycles, gain = int(o["integration_cycles"]), int(o["gain"])
        try:
            self.command("INTTME", cycles)
            self.command("GAIN", gain)
            if o["led"]:
                self.command("LEDC", int(o["led_current"]))
                self.command("LED1", 100)
                time.sleep(cycles * CYCLE_MS / 1000)
            try:
                calibrated = self._numbers("CDATA", integers=False)
                raw = self._numbers("DATA", integers=True)
            finally:
                if o["led"]:
                    self._led_off()
        except ProtocolError as e:
            raise DriverFailure(e.status, f"probe {self.probe_id}: {e}") from None
        order = sorted(range(CHANNEL_COUNT), key=lambda i: WAVELENGTHS[i])
        saturated = [WAVELENGTHS[i] for i in order if raw[i] >= FULL_SCALE]
        spectrum = Spectrum(
            wavelengths_nm=tuple(WAVELENGTHS[i] for i in order), values=tuple(calibrated[i] for i in order),
            unit="uW/cm2", integration_ms=cycles * CYCLE_MS, gain=GAINS[gain], saturated=bool(saturated),
            full_scale=float(FULL_SCALE))
        if saturated:
            return self.reading(DriverStatus.SATURATED, spectrum=spectrum,
                                message=f"probe {self.probe_id}: {len(saturated)} channel(s) at full scale "
                                        f"({', '.join(f'{w:g}' for w in saturated[:6])} nm); lower gain or integration")
        return self.checked({}, spectrum=spectrum)

    def _numbers(self, name: str, *, integers: bool) -> list[float]:
        data = self.command(name)
        values = parse_numbers(data, CHANNEL_COUNT, integers=integers)
        if values is None:
            raise ProtocolError(f"AT{name}: expected {CHANNEL_COUNT} numbers, got {data[:60]!r}",
                                DriverStatus.GARBLED)
        return values

    def _led_off(self) -> None:
        try:
            self.command("LED1", 0)
        except (ProtocolError, PortAbsent, PortBusy):
            pass   # the LED goes off with the next successful poll at the latest
