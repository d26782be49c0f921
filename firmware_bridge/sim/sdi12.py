"""SDI-12 sensor firmware for the simulator: a bus of TEROS-12-like probes.

`Sdi12BusFirmware` plays every sensor wired to one SDI-12 line (one pty):
it splits the host's bytes into commands at ``!`` and hands each to the
sensor whose address it starts with; the others stay silent, as on a real
bus. Each `Sdi12SimSensor` answers as the SDI-12 v1.4 standard says (see
`firmware_bridge.protocols.sdi12` for the sections): acknowledge, identify,
address query and change, ``aM!``/``aMC!`` with a service request when the
measurement is ready, ``aC!``/``aCC!`` without one, ``aD0!``..``aD9!`` pages,
``aR0!``/``aRC0!`` and ``aV!``. A command to a sensor that is busy with
``aM!`` aborts that measurement (4.4.5).

`Teros12Sensor` reports what METER's TEROS 12 reports after ``aM!``
(METER Group, TEROS 11/12 Integrator Guide): calibrated counts (RAW), soil
temperature (°C) and bulk electrical conductivity (µS/cm, corrected to
25 °C), from the shared `firmware_bridge.sim.soil.SoilModel` (the same
seeded soil every simulator measures, so probes in one simulated plot
agree). Simulated time advances by ``hours_per_measurement`` per
measurement, so a seed gives the same series whatever the host's polling
speed.
"""

from __future__ import annotations

import math
import random
from typing import Any

from firmware_bridge.protocols.sdi12 import (ADDRESSES, MAX_VALUE_CHARS, add_crc, format_value,
                                             split_pages)
from firmware_bridge.sim.faults import FaultSwitches, apply_faults
from firmware_bridge.sim.soil import SoilModel

CRLF = b"\r\n"
_NOT_PRINTABLE = bytes(range(0x21)) + bytes(range(0x7F, 0x100))


# -- the soil ------------------------------------------------------------------------
def raw_from_theta(theta: float) -> float:
    """Inverse of METER's mineral-soil calibration theta = 3.879e-4 RAW - 0.6956 (TEROS 11/12 manual)."""
    return (theta + 0.6956) / 3.879e-4


# -- one SDI-12 sensor ---------------------------------------------------------------
class Sdi12SimSensor:
    """Generic SDI-12 command handling; subclasses say what a measurement returns."""

    vendor = "HUMUS   "
    model = "SIM   "
    version = "100"

    def __init__(self, address: str, seed: int, faults: FaultSwitches, *, measure_s: float = 1.0,
                 response_delay_s: float = 0.01, values_per_page: int | None = None) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"SDI-12 address {address!r}: expected one of 0-9, a-z, A-Z")
        if measure_s < 0 or measure_s > 999:
            raise ValueError(f"measure_s {measure_s}: expected 0 to 999 seconds")
        self.address = address
        self.faults = faults
        self.measure_s = measure_s
        self.response_delay_s = response_delay_s
        self.values_per_page = values_per_page
        self.rng = random.Random(f"{seed}:{address}:line")
        self.measurements = 0
        self._pages: list[str] = []          # data of the last M/C/V, kept for D retries
        self._crc = False
        self._ready_at = 0.0                  # data not served before this time
        self._service_due: float | None = None
        self._last_values: list[str] | None = None
        self.commands: list[str] = []        # every command heard (tests)

    # -- what a subclass provides ------------------------------------------------
    def measure(self) -> list[str]:
        """One measurement's values, formatted for the line."""
        raise NotImplementedError

    def identification(self) -> str:
        return f"{self.address}14{self.vendor[:8]:<8}{self.model[:6]:<6}{self.version[:3]:<3}SIM{self.address}"

    # -- the protocol ---------------------------------------------------------------
    def _values(self) -> list[str]:
        if self.faults.stuck_value and self._last_values is not None:
            return list(self._last_values)
        values = self.measure()
        self.measurements += 1
        self._last_values = values
        return values

    def _frame(self, text: str, crc: bool = False) -> list[tuple[float, bytes]]:
        body = text.encode("ascii")
        if crc:
            body = add_crc(body)
        frame = body + CRLF
        span = (len(frame) - 5, len(frame) - 2) if crc else None
        return apply_faults(frame, self.faults, self.rng, delay=self.response_delay_s, crc_span=span)

    def handle(self, cmd: str, now: float) -> list[tuple[float, bytes]]:
        """One command addressed to this sensor (`cmd` includes the address and the ``!``)."""
        self.commands.append(cmd)
        a, body = cmd[0], cmd[1:-1]
        if self._service_due is not None or now < self._ready_at:
            # Any command to a sensor busy with aM! or aC! aborts the measurement (4.4.5, 4.4.7).
            self._service_due = None
            self._pages = []
            self._ready_at = 0.0
        if body == "":
            return self._frame(a)
        if body == "I":
            return self._frame(self.identification())
        if len(body) == 2 and body[0] == "A":
            if body[1] not in ADDRESSES:
                return []
            self.address = body[1]
            return self._frame(self.address)
        if body in ("M", "MC", "C", "CC", "V") or (len(body) in (2, 3) and body[0] in "MC" and body[-1].isdigit()):
            return self._start(body, now)
        if len(body) == 2 and body[0] == "D" and body[1].isdigit():
            page = int(body[1])
            text = self._pages[page] if now >= self._ready_at and page < len(self._pages) else ""
            return self._frame(a + text, self._crc)
        if body in ("R0", "RC0") or (body[:1] == "R" and body[-1:].isdigit()):
            crc = body.startswith("RC")
            if body[-1] != "0":
                return self._frame(a, crc)
            pages = split_pages(self._values(), MAX_VALUE_CHARS["R"])
            return self._frame(a + (pages[0] if pages else ""), crc)
        return []   # unknown or extended command: a sensor stays silent

    def _start(self, body: str, now: float) -> list[tuple[float, bytes]]:
        kind = body[0]
        index = int(body[-1]) if body[-1].isdigit() else 0
        self._crc = body[1:2] == "C" or body[:2] == "CC"
        concurrent = kind == "C"
        if kind == "V":
            self._pages, self._ready_at, self._crc = ["+0"], now, False
            return self._frame(f"{self.address}0001")
        if index != 0:                          # aM1!..aM9!: not offered by this sensor
            self._pages = []
            return self._frame(f"{self.address}000{'00' if concurrent else '0'}")
        values = self._values()
        self._pages = split_pages(values, MAX_VALUE_CHARS[kind], self.values_per_page)
        seconds = math.ceil(self.measure_s)
        self._ready_at = now + self.measure_s
        if not concurrent and seconds > 0:
            self._service_due = now + self.measure_s
        count = f"{len(values):02d}" if concurrent else f"{len(values)}"
        return self._frame(f"{self.address}{seconds:03d}{count}")

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        if self._service_due is not None and now >= self._service_due:
            self._service_due = None
            return self._frame(self.address)    # service request a<CR><LF> (4.4.5)
        return []


class Teros12Sensor(Sdi12SimSensor):
    """A TEROS-12-like probe: ``aM!`` -> RAW counts, temperature °C, bulk EC µS/cm."""

    vendor = "METER   "
    model = "TER12 "
    version = "112"

    def __init__(self, address: str, seed: int, faults: FaultSwitches, *, hours_per_measurement: float = 0.25,
                 depth_cm: float = 10.0, **kwargs: Any) -> None:
        super().__init__(address, seed, faults, **kwargs)
        self.soil = SoilModel(seed, depth_cm=depth_cm)
        self.hours_per_measurement = hours_per_measurement
        self.sim_hours = 0.0           # simulated time of the next measurement
        self.noise = random.Random(f"{seed}:{address}:noise")

    def state(self, hours: float) -> tuple[float, float, float]:
        """(theta, temperature °C, bulk EC µS/cm at 25 °C) of the soil at simulated `hours`."""
        soil = self.soil.state(hours * 3600.0)
        # The TEROS 12 reports bulk EC corrected to 25 °C (METER manual); undo the model's 2 %/°C.
        ec25 = soil.ec_us_cm / (1 + 0.02 * (soil.temperature_c - 25.0))
        return soil.vwc, soil.temperature_c, ec25

    def measure(self) -> list[str]:
        theta, temp, ec = self.state(self.sim_hours)
        self.sim_hours += self.hours_per_measurement
        raw = raw_from_theta(theta) + self.noise.gauss(0, 0.8)
        temp += self.noise.gauss(0, 0.03)
        ec = max(0.0, ec + self.noise.gauss(0, 2.0))
        return [format_value(raw, 2), format_value(temp, 1), format_value(round(ec), 0)]


# -- the bus -------------------------------------------------------------------------
class Sdi12BusFirmware:
    """Every sensor on one SDI-12 line; implements the `Firmware` protocol of `sim.pty`."""

    def __init__(self, sensors: list[Sdi12SimSensor]) -> None:
        addresses = [s.address for s in sensors]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two sensors share an address on one bus: {addresses}")
        self.sensors = sensors
        self._buf = bytearray()

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        self._buf += data
        del self._buf[:-256]                    # a line noise flood cannot grow the buffer
        while (end := self._buf.find(b"!")) >= 0:
            raw = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            # A break's NULs or line noise before the address are not part of the command.
            cmd = raw.lstrip(_NOT_PRINTABLE).decode("ascii", "replace")
            out += self._dispatch(cmd, now)
        return out

    def _dispatch(self, cmd: str, now: float) -> list[tuple[float, bytes]]:
        if not cmd or len(cmd) < 2:
            return []
        if cmd == "?!":
            answers = [s.handle(f"{s.address}!", now) for s in self.sensors]
            answers = [a for a in answers if a]
            if len(answers) == 1:
                return answers[0]
            # Several sensors answering at once collide on the wire: the host sees a mix.
            mixed = bytes(x | y for x, y in zip(answers[0][0][1], answers[1][0][1])) if answers else b""
            return [(answers[0][0][0], mixed)] if answers else []
        for sensor in self.sensors:
            if sensor.address == cmd[0]:
                return sensor.handle(cmd, now)
        return []

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        for s in self.sensors:
            out += s.tick(now)
        return out

    def sensor(self, address: str) -> Sdi12SimSensor:
        for s in self.sensors:
            if s.address == address:
                return s
        raise KeyError(address)


_PARAMS = {"measure_s": float, "response_delay_s": float, "values_per_page": int,
           "hours_per_measurement": float, "depth_cm": float}


def make_firmware(address: str, seed: int, faults: FaultSwitches, **params: Any) -> Sdi12BusFirmware:
    """TEROS-12-like sensors on one bus: `address` is one address or several, e.g. "0,1,2"."""
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ValueError(f"unknown teros12 parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_PARAMS))}")
    kwargs = {k: _PARAMS[k](v) for k, v in params.items()}
    addresses = [a.strip() for a in (address or "0").replace(",", " ").split()]
    sensors: list[Sdi12SimSensor] = [Teros12Sensor(a, seed, faults, **kwargs) for a in addresses]
    return Sdi12BusFirmware(sensors)
