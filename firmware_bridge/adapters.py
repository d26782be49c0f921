"""Attached serial adapters and the stable names to configure them by (`humus probe list`).

A USB serial adapter is /dev/ttyUSB0 today and /dev/ttyUSB1 after a replug.
Its USB vendor id, product id and serial number do not change, so the
configuration names it `usb:VID:PID:SERIAL` (firmware_bridge.ports) or by a
udev link. This module lists what is plugged in with those names, warns
when two adapters share one (cheap adapters often have no serial number),
and writes udev rules (udev(7): match keys ATTRS{idVendor},
ATTRS{idProduct}, ATTRS{serial} on the USB parent; SYMLINK+= adds a link
under /dev) for deploy/udev/99-humus-probes.rules.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from firmware_bridge.ports import UsbMatch

BY_ID = Path("/dev/serial/by-id")


@dataclass(frozen=True)
class Adapter:
    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = ""
    by_id: str = ""

    @property
    def name(self) -> str:
        """What to put in a probe's `port`: usb:VID:PID[:SERIAL], or the device for a built-in port."""
        if self.vid is None or self.pid is None:
            return self.device
        return str(UsbMatch(self.vid, self.pid, self.serial_number or None))

    @property
    def link_name(self) -> str:
        """The udev link under /dev/humus/ (safe characters only)."""
        return "humus/" + re.sub(r"[^A-Za-z0-9._-]", "_", self.name.removeprefix("usb:").replace(":", "-"))


def attached(ports: Iterable[Any] | None = None) -> list[Adapter]:
    """Serial adapters attached now (pyserial's list_ports), with their /dev/serial/by-id link."""
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    links = _by_id_links()
    out = [Adapter(device=p.device, vid=p.vid, pid=p.pid, serial_number=p.serial_number or None,
                   description=(p.description if p.description and p.description != "n/a" else ""),
                   by_id=links.get(os.path.realpath(p.device), "")) for p in ports]
    return sorted(out, key=lambda a: a.device)


def ambiguous(adapters: Iterable[Adapter]) -> set[str]:
    """Names shared by two or more adapters: such a name matches whichever is found first."""
    counts = Counter(a.name for a in adapters if a.vid is not None)
    return {name for name, n in counts.items() if n > 1}


def udev_rule(a: Adapter, group: str = "dialout") -> str:
    """One udev rule giving `a` the link /dev/<link_name>, group `group`, mode 0660."""
    if a.vid is None or a.pid is None:
        raise ValueError(f"{a.device} is not a USB adapter; name it by its device path")
    keys = ['SUBSYSTEM=="tty"', f'ATTRS{{idVendor}}=="{a.vid:04x}"', f'ATTRS{{idProduct}}=="{a.pid:04x}"']
    if a.serial_number:
        keys.append(f'ATTRS{{serial}}=="{_udev_escape(a.serial_number)}"')
    keys += [f'SYMLINK+="{a.link_name}"', f'GROUP="{group}"', 'MODE="0660"']
    return ", ".join(keys)


def _udev_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _by_id_links() -> dict[str, str]:
    if not BY_ID.is_dir():
        return {}
    return {os.path.realpath(link): str(link) for link in sorted(BY_ID.iterdir())}
