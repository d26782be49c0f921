"""Driver for line-ASCII temperature probes: ``T=21.37,C*hh`` per line.

Asks with ``R`` (option ``command``; empty for a probe that streams lines
on its own) and reads one line. The value is reported as ``soil_temp``
unless option ``quantity`` names what the probe measures (e.g.
``air_temp`` for a probe in a radiation shield). Statuses:

===================================  =========================
line                                 status
===================================  =========================
none within ``timeout_s``            TIMEOUT
printable but no line end in time    PARTIAL
``*hh`` does not match               CRC_ERROR
no ``*hh`` but require_checksum      CRC_ERROR
non-printable bytes, not NAME=VALUE  GARBLED
value at ``high_c``                  SATURATED (value kept)
value beyond ``low_c``-``high_c``    OUT_OF_RANGE (value kept)
same value ``stuck_polls`` times     STUCK
===================================  =========================
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Mapping

from firmware_bridge.drivers.base import Driver, DriverFailure
from firmware_bridge.protocols.nmea import LineStatus, parse_line, parse_measurement
from firmware_bridge.reading import DriverStatus, Reading
from firmware_bridge.transport import SerialSettings

UNITS = {"C": "degC", "degC": "degC", "F": "degF"}
_QUANTITY = re.compile(r"[a-z][a-z0-9_]{0,63}")   # humus.records.QUANTITY_PATTERN


class AsciiTempDriver(Driver):
    name: ClassVar[str] = "ascii-temp"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(9600, 8, "N", 1)
    quantities: ClassVar[Mapping[str, str]] = {"soil_temp": "degC"}
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "command": "R", "timeout_s": 1.0, "require_checksum": False, "name": "T",
        "low_c": -55.0, "high_c": 125.0, "stuck_polls": 5, "quantity": "soil_temp"}
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        **Driver.option_ranges, "timeout_s": (0.05, 60.0), "low_c": (-273.15, 1000.0), "high_c": (-273.15, 1000.0)}
    takes_address: ClassVar[bool] = False

    def __init__(self, transport: Any, probe_id: str, address: str = "",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(transport, probe_id, address, options)
        o = self.options
        if not o["low_c"] < o["high_c"]:
            raise self.config_error("options.high_c", f"a value above low_c ({o['low_c']:g})", o["high_c"])
        if not o["name"]:
            raise self.config_error("options.name", "the name before '=' in the probe's lines, e.g. T", o["name"])
        if not _QUANTITY.fullmatch(o["quantity"]):
            raise self.config_error("options.quantity", "a quantity name like air_temp (a-z, 0-9, _)", o["quantity"])
        self.quantity: str = o["quantity"]
        self.quantities = {self.quantity: "degC"}   # type: ignore[misc]  # units of this probe's readings

    @classmethod
    def quantities_for(cls, options: Mapping[str, Any] | None = None) -> Mapping[str, str]:
        """One temperature, under the name option ``quantity`` gives it (soil_temp by default)."""
        return {str((options or {}).get("quantity", "soil_temp")): "degC"}

    def poll(self) -> Reading:
        t = self.transport
        timeout = float(self.options["timeout_s"])
        t.reset_input()
        command = str(self.options["command"])
        if command:
            t.write(command.encode("ascii") + b"\r\n")
            line = t.read_until(b"\n", timeout, max_bytes=512)
        else:
            # A streaming probe: the first line after the flush may be the tail of one already under way.
            line = t.read_until(b"\n", timeout, max_bytes=512)
            if parse_line(line).status is not LineStatus.OK:
                line = t.read_until(b"\n", timeout, max_bytes=512)
        return self._decode(line)

    def _decode(self, line: bytes) -> Reading:
        where = f"probe {self.probe_id}"
        if not line:
            raise DriverFailure(DriverStatus.TIMEOUT, f"{where}: no line within {self.options['timeout_s']} s "
                                "(check power, cable and 9600 8N1)")
        frame = parse_line(line, require_checksum=bool(self.options["require_checksum"]))
        if frame.status is LineStatus.OK and not line.endswith(b"\n"):
            raise DriverFailure(DriverStatus.PARTIAL, f"{where}: line cut short: {line[:40]!r}")
        if frame.status in (LineStatus.BAD_CHECKSUM, LineStatus.MISSING_CHECKSUM):
            raise DriverFailure(DriverStatus.CRC_ERROR, f"{where}: {frame.status.value.replace('_', ' ')} "
                                f"in {line.strip()[:40]!r} (line noise? check the cable)")
        if frame.status is not LineStatus.OK:
            printable = all(0x20 <= b < 0x7F for b in line)
            if printable and not line.endswith(b"\n"):
                raise DriverFailure(DriverStatus.PARTIAL, f"{where}: line cut short: {line[:40]!r}")
            raise DriverFailure(DriverStatus.GARBLED, f"{where}: unreadable line {line[:24]!r} "
                                "(wrong baud rate or line noise?)")
        m = parse_measurement(frame.body)
        if m is None or m.name != self.options["name"] or UNITS.get(m.unit or "C") is None:
            raise DriverFailure(DriverStatus.GARBLED, f"{where}: expected '{self.options['name']}=<value>,C', "
                                f"got {frame.body[:40]!r}")
        value = m.value if UNITS[m.unit or "C"] == "degC" else (m.value - 32) * 5 / 9
        values = {self.quantity: value}
        low, high = float(self.options["low_c"]), float(self.options["high_c"])
        if not low <= value <= high:
            return self.reading(DriverStatus.OUT_OF_RANGE, values,
                                message=f"{where}: {value:g} °C outside {low:g}..{high:g} °C")
        if value == high:
            return self.reading(DriverStatus.SATURATED, values,
                                message=f"{where}: {value:g} °C is the top of the sensor range")
        return self.checked(values)
