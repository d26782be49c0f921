"""One reading per text line, with an optional NMEA-style ``*hh`` checksum.

Home-made probe firmware (an Arduino with a thermistor, a DS18B20...) prints
lines such as ``T=21.37,C*5A``. The checksum is the NMEA 0183 one: the XOR
of every byte between the optional leading ``$`` and the ``*``, written as
two hexadecimal digits (NMEA 0183 v4.10, section 5.2.1.4 "checksum field").
`parse_line` never raises: whatever bytes arrive, it returns a `LineFrame`
whose status says what they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_LINE = 256      # longer "lines" are noise, not a reading


class LineStatus(str, Enum):
    OK = "ok"                   # printable body, checksum right (or none sent and none required)
    BAD_CHECKSUM = "bad_checksum"
    MISSING_CHECKSUM = "missing_checksum"   # the caller required one
    GARBLED = "garbled"         # non-printable bytes, too long, or a malformed checksum field
    EMPTY = "empty"             # nothing but the terminator (or nothing at all)


@dataclass(frozen=True, slots=True)
class LineFrame:
    status: LineStatus
    body: str = ""
    had_checksum: bool = False


def checksum(body: bytes) -> int:
    """XOR of all bytes (NMEA 0183 checksum), 0-255."""
    c = 0
    for b in body:
        c ^= b
    return c


def encode_line(body: str, *, with_checksum: bool = True, terminator: bytes = b"\r\n") -> bytes:
    """`body` as one line: ``body*hh\\r\\n`` (or ``body\\r\\n``)."""
    raw = body.encode("ascii")
    if with_checksum:
        raw += b"*%02X" % checksum(raw)
    return raw + terminator


def _printable(data: bytes) -> bool:
    return all(0x20 <= b < 0x7F for b in data)


def parse_line(line: bytes, *, require_checksum: bool = False) -> LineFrame:
    """Classify one received line (terminator optional); never raises."""
    data = bytes(line).rstrip(b"\r\n")
    if not data.strip():
        return LineFrame(LineStatus.EMPTY)
    if len(data) > MAX_LINE or not _printable(data):
        return LineFrame(LineStatus.GARBLED)
    if data.startswith(b"$"):
        data = data[1:]
    star = data.rfind(b"*")
    if star < 0:
        if require_checksum:
            return LineFrame(LineStatus.MISSING_CHECKSUM, data.decode("ascii"))
        return LineFrame(LineStatus.OK, data.decode("ascii"))
    body, field = data[:star], data[star + 1:]
    if len(field) != 2 or any(c not in b"0123456789abcdefABCDEF" for c in field):
        return LineFrame(LineStatus.GARBLED, body.decode("ascii"))
    if int(field, 16) != checksum(body):
        return LineFrame(LineStatus.BAD_CHECKSUM, body.decode("ascii"), had_checksum=True)
    return LineFrame(LineStatus.OK, body.decode("ascii"), had_checksum=True)


@dataclass(frozen=True, slots=True)
class Measurement:
    """``NAME=VALUE[,UNIT]``: one named value from a line body."""

    name: str
    value: float
    unit: str


def parse_measurement(body: str) -> Measurement | None:
    """``T=21.37,C`` -> Measurement("T", 21.37, "C"); None if the body is not of that form."""
    name, eq, rest = body.partition("=")
    if not eq or not name.strip() or not name.strip().isalnum():
        return None
    value_text, _, unit = rest.partition(",")
    try:
        value = float(value_text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return Measurement(name.strip(), value, unit.strip())
