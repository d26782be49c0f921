"""Driver for Modbus RTU soil moisture/temperature/EC(/pH/NPK) sensors.

Which registers mean what is data (`modbus_maps`, option ``model``); this
file only reads one register span per poll through minimalmodbus and turns
the outcome into a status:

========================================  ==========================
outcome                                   status
========================================  ==========================
no answer within ``timeout_s``            TIMEOUT
wrong CRC (after ``retries``)             CRC_ERROR
answer cut short (after ``retries``)      PARTIAL
not a reply from this address             GARBLED
Modbus exception response (e.g. 02)       ERROR
a value at the top of the sensor range    SATURATED (values kept)
a value outside the sensor range          OUT_OF_RANGE (values kept)
same registers ``stuck_polls`` times      STUCK (values kept)
========================================  ==========================
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from firmware_bridge.drivers.base import Driver, DriverFailure
from firmware_bridge.drivers.modbus_maps import DEFAULT_MODEL, MAPS, RegisterMap
from firmware_bridge.protocols import ProtocolError
from firmware_bridge.protocols.modbus import instrument, read_registers
from firmware_bridge.reading import DriverStatus, Reading
from firmware_bridge.transport import SerialSettings, SerialTransport


class ModbusSoilDriver(Driver):
    name: ClassVar[str] = "modbus-soil"
    serial_settings: ClassVar[SerialSettings] = SerialSettings(9600, 8, "N", 1)
    quantities: ClassVar[Mapping[str, str]] = {f.quantity: f.unit for m in MAPS.values() for f in m.fields}
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "model": DEFAULT_MODEL, "timeout_s": 0.5, "retries": 1, "local_echo": False, "stuck_polls": 5}
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        **Driver.option_ranges, "timeout_s": (0.05, 10.0), "retries": (0, 10)}

    @classmethod
    def quantities_for(cls, options: Mapping[str, Any] | None = None) -> Mapping[str, str]:
        """Only the registers of the configured sensor model (e.g. no NPK on a 3-in-1 sensor)."""
        model = (options or {}).get("model", DEFAULT_MODEL)
        if model not in MAPS:
            return cls.quantities
        return {f.quantity: f.unit for f in MAPS[model].fields}

    def __init__(self, transport: SerialTransport, probe_id: str, address: str = "1",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(transport, probe_id, address or "1", options)
        model = self.options["model"]
        if model not in MAPS:
            raise self.config_error("options.model", f"one of {', '.join(sorted(MAPS))}", model)
        self.map: RegisterMap = MAPS[model]
        if not self.address.isdigit() or not 1 <= int(self.address) <= 247:
            raise self.config_error("address", "a Modbus address 1-247", self.address)
        self.instrument, self.port = instrument(transport, int(self.address), float(self.options["timeout_s"]))
        self.retries = int(self.options["retries"])
        # RS-485 adapters without automatic echo suppression hear their own request first.
        self.instrument.handle_local_echo = bool(self.options["local_echo"])

    def poll(self) -> Reading:
        first, count = self.map.span
        try:
            regs = read_registers(self.instrument, self.port, first, count, self.map.function_code, self.retries)
        except ProtocolError as e:
            raise DriverFailure(e.status, f"probe {self.probe_id} (Modbus {self.address}): {e}") from None
        values: dict[str, float] = {}
        saturated, outside = [], []
        for f in self.map.fields:
            v = f.decode(regs[f.register - first])
            values[f.quantity] = round(v, 6)
            if v > f.high or v < f.low:
                outside.append(f"{f.quantity}={v:g} {f.unit} (range {f.low:g}-{f.high:g})")
            elif v == f.high:
                saturated.append(f"{f.quantity} at the top of its range ({v:g} {f.unit})")
        if outside:
            return self.reading(DriverStatus.OUT_OF_RANGE, values, message="; ".join(outside))
        if saturated:
            return self.reading(DriverStatus.SATURATED, values, message="; ".join(saturated))
        return self.checked(values)
