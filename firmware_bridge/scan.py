"""Find the sensors on an SDI-12 bus: which addresses answer, and what they are.

Each address is asked ``a!`` (SDI-12 v1.4, 4.4.2) with a short timeout, and
those that answer are asked ``aI!`` (4.4.3). ``?!`` is not used: with more
than one sensor on the line, every sensor answers it at once and the
answers collide (4.4.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from firmware_bridge.protocols import ProtocolError
from firmware_bridge.protocols.sdi12 import ADDRESSES, Identification, Sdi12Bus
from firmware_bridge.transport import SerialTransport


@dataclass(frozen=True)
class FoundSensor:
    address: str
    identification: Identification | None
    problem: str = ""         # set when the sensor acknowledged but did not identify cleanly

    def __str__(self) -> str:
        return f"{self.address}  {self.identification}" if self.identification else f"{self.address}  ? ({self.problem})"


def parse_addresses(spec: str) -> str:
    """"0-9", "0-3,a", "all" -> the SDI-12 addresses to try, in bus order."""
    spec = spec.strip()
    if spec in ("", "all"):
        return ADDRESSES
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if len(part) == 3 and part[1] == "-" and part[0] in ADDRESSES and part[2] in ADDRESSES:
            lo, hi = ADDRESSES.index(part[0]), ADDRESSES.index(part[2])
            if lo > hi:
                raise ValueError(f"addresses {part!r}: the range runs backwards")
            out += ADDRESSES[lo:hi + 1]
        elif len(part) == 1 and part in ADDRESSES:
            out.append(part)
        else:
            raise ValueError(f"addresses {part!r}: expected addresses from 0-9, a-z, A-Z, "
                             "single or as ranges, e.g. 0-9 or 0-3,a")
    return "".join(dict.fromkeys(out))


def scan_bus(transport: SerialTransport, addresses: Iterable[str] = ADDRESSES, *, timeout_s: float = 0.2,
             attempts: int = 2, progress: Callable[[str], None] | None = None) -> list[FoundSensor]:
    """Every sensor that acknowledges among `addresses`, with its identification."""
    bus = Sdi12Bus(transport, response_timeout_s=timeout_s, attempts=attempts)
    found: list[FoundSensor] = []
    for address in addresses:
        if progress:
            progress(address)
        try:
            if not bus.acknowledge(address):
                continue
        except ProtocolError as e:
            found.append(FoundSensor(address, None, f"answer not understood: {e}"))
            continue
        try:
            found.append(FoundSensor(address, bus.identify(address)))
        except ProtocolError as e:
            found.append(FoundSensor(address, None, f"acknowledged, identification failed: {e}"))
    return found
