"""Driver registry: a probe model's name -> its driver class, imported on first use.

Names are what a gateway configuration and `humus probe read --driver` use.
Loading is lazy so that a gateway with only SDI-12 probes never imports the
Modbus or spectral code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware_bridge.drivers.base import Driver

DRIVERS: dict[str, str] = {
    "teros12": "firmware_bridge.drivers.teros12:Teros12Driver",
    "modbus-soil": "firmware_bridge.drivers.modbus_soil:ModbusSoilDriver",
    "as7265x": "firmware_bridge.drivers.as7265x:AS7265xDriver",
    "nir-spectrometer": "firmware_bridge.drivers.nir_spectrometer:NirSpectrometerDriver",
    "ascii-temp": "firmware_bridge.drivers.ascii_temp:AsciiTempDriver",
}


class UnknownDriver(KeyError):
    """A driver name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_driver(name: str) -> "type[Driver]":
    """The driver class registered as `name`; UnknownDriver lists the known names."""
    try:
        target = DRIVERS[name]
    except (KeyError, TypeError):
        raise UnknownDriver(f"unknown driver {name!r}; known drivers: {', '.join(sorted(DRIVERS))}") from None
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)
