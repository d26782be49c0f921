"""Turn a configured port name into the device node to open.

USB serial adapters come back under another /dev/ttyUSBn after a replug, so
a gateway names its ports by a stable name instead:

- a path (``/dev/ttyUSB0``, a udev ``/dev/serial/by-id/...`` link, a
  simulator's link): opened as given, so the kernel follows the link anew
  on every open;
- ``usb:VID:PID[:SERIAL]`` (hex ids as ``lsusb`` prints them): looked up
  with ``serial.tools.list_ports`` on every open.
"""

from __future__ import annotations

from dataclasses import dataclass


class PortSpecError(ValueError):
    """A port name that cannot name a port (a configuration error)."""


@dataclass(frozen=True)
class UsbMatch:
    """A USB adapter by vendor id, product id and optionally serial number."""

    vid: int
    pid: int
    serial_number: str | None = None

    def __str__(self) -> str:
        tail = f":{self.serial_number}" if self.serial_number else ""
        return f"usb:{self.vid:04x}:{self.pid:04x}{tail}"


def parse_port(spec: str) -> str | UsbMatch:
    """A path (returned unchanged) or a `UsbMatch` for ``usb:VID:PID[:SERIAL]``."""
    if not isinstance(spec, str) or not spec.strip():
        raise PortSpecError(f"port {spec!r}: expected a device path or usb:VID:PID[:SERIAL]")
    if not spec.startswith("usb:"):
        return spec
    parts = spec.split(":", 3)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise PortSpecError(f"port {spec!r}: expected usb:VID:PID[:SERIAL] with hexadecimal ids, e.g. usb:0403:6001")
    try:
        vid, pid = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        raise PortSpecError(f"port {spec!r}: vendor and product ids must be hexadecimal, e.g. usb:0403:6001") from None
    if not (0 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF):
        raise PortSpecError(f"port {spec!r}: vendor and product ids are 4 hexadecimal digits")
    return UsbMatch(vid, pid, parts[3] if len(parts) == 4 and parts[3] else None)


def resolve_port(spec: str) -> str | None:
    """The device node to open now, or None when a USB adapter is not plugged in."""
    target = parse_port(spec)
    if isinstance(target, str):
        return target
    from serial.tools import list_ports

    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        if info.vid == target.vid and info.pid == target.pid and (
            target.serial_number is None or info.serial_number == target.serial_number
        ):
            return info.device
    return None
