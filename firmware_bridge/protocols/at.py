"""AT-command text protocol of the ams AS726x/AS7265x spectral sensors (UART mode).

From the AS7265x datasheet (ams, v1-04, 2018, "AT Command Interface"): a
command is ``AT<NAME>[=<value>]`` terminated by CR, LF or both; the sensor
answers ``<data>OK`` on success and ``ERROR`` on failure, also terminated by
CR/LF. Numeric arguments may be decimal, ``0x`` hexadecimal or ``'b``
binary. `parse_reply` never raises: it classifies whatever arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from firmware_bridge.protocols import ChecksumMismatch, GarbledFrame, NoResponse, PartialFrame, ProtocolError

MAX_REPLY = 1024    # 18 floats with separators fit in well under 400 bytes


class ReplyStatus(str, Enum):
    OK = "ok"
    ERROR = "error"        # the sensor answered ERROR (command refused)
    PARTIAL = "partial"    # printable text but no OK/ERROR terminator
    GARBLED = "garbled"    # non-printable bytes or an unparseable reply
    EMPTY = "empty"        # nothing arrived


@dataclass(frozen=True, slots=True)
class AtReply:
    status: ReplyStatus
    data: str = ""


def encode_command(name: str, value: int | str | None = None) -> bytes:
    """``AT<NAME>[=value]\\r\\n`` (NAME without the AT prefix, e.g. "GAIN")."""
    text = "AT" + name.upper() + ("" if value is None else f"={value}")
    return text.encode("ascii") + b"\r\n"


def parse_reply(raw: bytes) -> AtReply:
    """Classify one reply (everything up to and including its terminator); never raises."""
    if not raw:
        return AtReply(ReplyStatus.EMPTY)
    if len(raw) > MAX_REPLY or any(not (0x20 <= b < 0x7F or b in (0x0D, 0x0A, 0x09)) for b in raw):
        return AtReply(ReplyStatus.GARBLED)
    text = raw.decode("ascii").strip()
    if text.endswith("ERROR"):
        return AtReply(ReplyStatus.ERROR, text[: -len("ERROR")].strip())
    if text.endswith("OK") and raw.rstrip(b" \t").endswith((b"\r", b"\n")):
        return AtReply(ReplyStatus.OK, text[:-2].strip())
    if not text:
        return AtReply(ReplyStatus.EMPTY)
    return AtReply(ReplyStatus.PARTIAL, text)


def parse_numbers(data: str, count: int, *, integers: bool = False) -> list[float] | None:
    """``"1, 2.5, 3"`` -> [1.0, 2.5, 3.0] if exactly `count` finite numbers; else None."""
    parts = [p for p in data.replace(",", " ").split() if p]
    if len(parts) != count:
        return None
    out: list[float] = []
    for p in parts:
        try:
            v = float(int(p, 0)) if integers else float(p)
        except ValueError:
            return None
        if not math.isfinite(v):
            return None
        out.append(v)
    return out


def reply_error(command: bytes, reply: AtReply) -> ProtocolError:
    """The ProtocolError a failed reply to `command` becomes (status chosen by the reply)."""
    cmd = command.strip().decode("ascii", "replace")
    if reply.status is ReplyStatus.EMPTY:
        return NoResponse(f"{cmd}: no reply (check power, cable and 115200 8N1)")
    if reply.status is ReplyStatus.PARTIAL:
        return PartialFrame(f"{cmd}: reply cut short: {reply.data[:60]!r}")
    if reply.status is ReplyStatus.GARBLED:
        return GarbledFrame(f"{cmd}: unreadable reply (wrong baud rate or line noise?)")
    if reply.status is ReplyStatus.ERROR:
        return ProtocolError(f"{cmd}: sensor answered ERROR")
    return ChecksumMismatch(f"{cmd}: unexpected reply")  # pragma: no cover - OK is not an error
