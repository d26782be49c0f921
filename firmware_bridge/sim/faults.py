"""Fault switches shared by every simulated firmware.

A `FaultSwitches` object is mutable so a test (or `humus sim --fault`) can
flip a fault on and off while the probe runs. Frame-level faults are applied
by `apply_faults()`, which every firmware calls on each outgoing frame;
value-level faults (`stuck_value`, `saturation`) are the firmware's own
business, since only it knows what a value is. Unplug/replug is not a switch:
`PtyProbe.unplug()` / `replug()` make the device node vanish and return.

Documented driver statuses for each switch (see docs/firmware_bridge.md):
no_answer -> TIMEOUT; slow_answer_s beyond the driver's timeout -> TIMEOUT;
corrupt_crc -> CRC_ERROR (after the protocol's retries); partial_frame ->
PARTIAL (or TIMEOUT where a frame has no length to compare against);
garbage -> GARBLED; stuck_value -> STUCK after the driver's `stuck_polls`;
saturation -> SATURATED (spectral probes only).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Iterable

_HEX = b"0123456789ABCDEF"


@dataclass
class FaultSwitches:
    """What is wrong with the simulated probe right now (all off by default)."""

    no_answer: bool = False
    slow_answer_s: float = 0.0
    corrupt_crc: bool = False
    partial_frame: bool = False
    garbage: bool = False
    stuck_value: bool = False
    saturation: bool = False

    def clear(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.default)

    @property
    def active(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


FAULT_NAMES = tuple(f.name for f in dataclasses.fields(FaultSwitches))


def parse_faults(specs: Iterable[str]) -> FaultSwitches:
    """`["no-answer", "slow-answer=3"]` -> FaultSwitches; ValueError names what is wrong."""
    faults = FaultSwitches()
    for spec in specs:
        name, _, value = spec.partition("=")
        key = name.strip().lower().replace("-", "_")
        if key == "slow_answer":
            key = "slow_answer_s"
        if key not in FAULT_NAMES:
            shown = ", ".join(n.replace("_", "-").replace("-s", "=SECONDS") if n == "slow_answer_s"
                              else n.replace("_", "-") for n in FAULT_NAMES)
            raise ValueError(f"fault {spec!r}: expected one of {shown}")
        if key == "slow_answer_s":
            try:
                seconds = float(value) if value else 3.0
            except ValueError:
                raise ValueError(f"fault {spec!r}: expected slow-answer=SECONDS, e.g. slow-answer=3") from None
            if not 0 < seconds <= 3600:
                raise ValueError(f"fault {spec!r}: the delay must be between 0 and 3600 seconds")
            setattr(faults, key, seconds)
        elif value:
            raise ValueError(f"fault {spec!r}: {name} takes no value")
        else:
            setattr(faults, key, True)
    return faults


def corrupt_byte(b: int) -> int:
    """Another byte of the same kind: hex digit -> hex digit, SDI-12 CRC char -> CRC char, else bits flipped."""
    if b in _HEX:
        return _HEX[(_HEX.index(b) + 7) % 16]
    if 0x40 <= b <= 0x7F:
        return b ^ 0x01
    return b ^ 0xFF


def apply_faults(frame: bytes, faults: FaultSwitches, rng: random.Random, *, delay: float = 0.0,
                 crc_span: tuple[int, int] | None = None) -> list[tuple[float, bytes]]:
    """The (delay_s, bytes) a firmware sends for `frame` under the current faults.

    `crc_span` is the (start, end) byte range of the frame's checksum, which
    `corrupt_crc` alters; frames without one ignore that switch.
    """
    if faults.no_answer:
        return []
    delay += max(0.0, faults.slow_answer_s)
    data = bytearray(frame)
    if faults.corrupt_crc and crc_span is not None and crc_span[0] < crc_span[1] <= len(data):
        data[crc_span[0]] = corrupt_byte(data[crc_span[0]])
    if faults.garbage:
        n = max(4, len(frame))
        # Line noise: any byte value, including the frame terminators.
        data = bytearray(rng.randrange(256) for _ in range(n))
    elif faults.partial_frame:
        data = data[: max(1, len(data) // 2)]
    return [(delay, bytes(data))]
