"""Probes over serial lines: transports, wire protocols, one driver per probe model.

The public surface, for the collector and for scripts::

    from firmware_bridge import SerialTransport, get_driver
    cls = get_driver("teros12")
    transport = SerialTransport("/dev/serial/by-id/usb-FTDI...", cls.serial_settings)
    reading = cls(transport, probe_id="plot3-10cm", address="0").read()   # never raises

A transport may be shared by several drivers on one bus (SDI-12, RS-485),
polled one after the other from one thread.
"""

from __future__ import annotations

from typing import Any, Mapping

from firmware_bridge.drivers import DRIVERS, UnknownDriver, get_driver
from firmware_bridge.drivers.base import Driver, DriverConfigError, DriverFailure
from firmware_bridge.reading import DriverStatus, RawValue, Reading, Spectrum
from firmware_bridge.transport import PortAbsent, PortBusy, SerialSettings, SerialTransport, TransportError

__all__ = [
    "DRIVERS", "Driver", "DriverConfigError", "DriverFailure", "DriverStatus", "PortAbsent", "PortBusy",
    "RawValue", "Reading", "SerialSettings", "SerialTransport", "Spectrum", "TransportError", "UnknownDriver",
    "get_driver", "open_driver",
]


def open_driver(port: str, driver: str, probe_id: str, address: str = "",
                options: Mapping[str, Any] | None = None) -> Driver:
    """A driver on its own transport with the driver's line settings (the port opens on first read)."""
    cls = get_driver(driver)
    return cls(SerialTransport(port, cls.serial_settings), probe_id, address, options)
