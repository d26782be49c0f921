"""Register maps of Modbus RTU soil sensors: data, one table per sensor model.

Adding a sensor model is adding a table here, not code. Each field says
where a value lives, how to scale it and its unit; the driver and the
simulator both read these tables.

Sources: the maps below are those printed in the vendors' manuals of the
widespread low-cost RS-485 soil sensors:

- ``soil-3in1``: "RS485 soil temperature, moisture and EC sensor (3-in-1)"
  sold under many brands (Renke RS-WS-N01-TR-1 style; Hunan/Weihai
  "THC-S" manuals): holding registers 0x0000 moisture (0.1 %), 0x0001
  temperature (0.1 °C, two's complement), 0x0002 conductivity (µS/cm).
  Factory default address 1, 4800 or 9600 baud 8N1.
- ``jxbs-3001-7in1``: JXCT "JXBS-3001-TR" 7-in-1 soil sensor manual
  (moisture, temperature, EC, pH, N, P, K): pH 0x0006 (0.01), moisture
  0x0012 (0.1 %), temperature 0x0013 (0.1 °C signed), EC 0x0015 (µS/cm),
  N 0x001E, P 0x001F, K 0x0020 (mg/kg). Default address 1, 9600 8N1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegisterField:
    """One value: ``value = raw * scale`` (raw read as int16 when `signed`)."""

    quantity: str
    register: int
    scale: float
    unit: str
    signed: bool = False
    low: float = 0.0           # the sensor's specified measuring range, in `unit`
    high: float = 0.0          # a value at `high` (or `low`) is the range end: SATURATED

    def decode(self, raw: int) -> float:
        if self.signed and raw >= 0x8000:
            raw -= 0x10000
        return raw * self.scale

    def encode(self, value: float) -> int:
        """The register a sensor would hold for `value` (used by the simulator)."""
        raw = round(value / self.scale)
        raw = max(-0x8000 if self.signed else 0, min(0x7FFF if self.signed else 0xFFFF, raw))
        return raw & 0xFFFF


@dataclass(frozen=True)
class RegisterMap:
    model: str
    description: str
    function_code: int         # 3 = read holding registers, 4 = read input registers
    fields: tuple[RegisterField, ...]

    @property
    def span(self) -> tuple[int, int]:
        """(first register, count) covering every field: one request per poll."""
        first = min(f.register for f in self.fields)
        last = max(f.register for f in self.fields)
        return first, last - first + 1

    @property
    def units(self) -> dict[str, str]:
        return {f.quantity: f.unit for f in self.fields}


MAPS: dict[str, RegisterMap] = {m.model: m for m in (
    RegisterMap(
        "soil-3in1", "RS-485 soil moisture/temperature/EC sensor, registers 0-2", 3, (
            RegisterField("moisture", 0x0000, 0.1, "%", low=0.0, high=100.0),
            RegisterField("soil_temp", 0x0001, 0.1, "degC", signed=True, low=-40.0, high=80.0),
            RegisterField("ec", 0x0002, 1.0, "uS/cm", low=0.0, high=20000.0),
        )),
    RegisterMap(
        "jxbs-3001-7in1", "JXBS-3001 7-in-1 soil sensor (moisture, temperature, EC, pH, N, P, K)", 3, (
            RegisterField("ph", 0x0006, 0.01, "pH", low=3.0, high=9.0),
            RegisterField("moisture", 0x0012, 0.1, "%", low=0.0, high=100.0),
            RegisterField("soil_temp", 0x0013, 0.1, "degC", signed=True, low=-40.0, high=80.0),
            RegisterField("ec", 0x0015, 1.0, "uS/cm", low=0.0, high=10000.0),
            RegisterField("nitrogen", 0x001E, 1.0, "mg/kg", low=0.0, high=1999.0),
            RegisterField("phosphorus", 0x001F, 1.0, "mg/kg", low=0.0, high=1999.0),
            RegisterField("potassium", 0x0020, 1.0, "mg/kg", low=0.0, high=1999.0),
        )),
)}

DEFAULT_MODEL = "soil-3in1"


def get_map(model: str) -> RegisterMap:
    try:
        return MAPS[model]
    except KeyError:
        raise KeyError(f"unknown Modbus soil sensor model {model!r}; known: {', '.join(sorted(MAPS))}") from None
