"""Simulator models: name -> firmware factory, the driver that reads it, its line settings.

`humus sim --list` prints this table so a technician knows which
`humus probe read --driver` to point at a simulated probe. Factories are
imported on first use and share one signature:
``make_firmware(address: str, seed: int, faults: FaultSwitches, **params) -> Firmware``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from firmware_bridge.transport import SerialSettings


@dataclass(frozen=True)
class SimModel:
    name: str
    factory: str                 # "module:function"
    driver: str                  # registry name in firmware_bridge.drivers
    default_address: str
    description: str

    @property
    def settings(self) -> SerialSettings:
        """The line settings of the driver that reads this model (one source of truth)."""
        from firmware_bridge.drivers import get_driver

        return get_driver(self.driver).serial_settings

    def load(self) -> Callable[..., Any]:
        module_name, _, func = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), func)


MODELS: dict[str, SimModel] = {m.name: m for m in (
    SimModel("teros12", "firmware_bridge.sim.sdi12:make_firmware", "teros12", "0",
             "SDI-12 soil moisture/temperature/EC probe (TEROS-12-like); --address may list several, e.g. 0,1,2"),
    SimModel("modbus-soil", "firmware_bridge.sim.modbus_soil:make_firmware", "modbus-soil", "1",
             "Modbus RTU soil moisture/temperature/EC sensor"),
    SimModel("as7265x", "firmware_bridge.sim.as7265x:make_firmware", "as7265x", "",
             "AT-command 18-channel spectral sensor (AS7265x-style, 410-940 nm)"),
    SimModel("nir-spectrometer", "firmware_bridge.sim.nir_spectrometer:make_firmware", "nir-spectrometer", "",
             "compact NIR spectrometer: full spectrum frames, dark and white references"),
    SimModel("ascii-temp", "firmware_bridge.sim.ascii_temp:make_firmware", "ascii-temp", "",
             "home-made line-ASCII temperature probe (NMEA-style *hh checksum)"),
)}


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_model(name: str) -> SimModel:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(f"unknown simulator model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
