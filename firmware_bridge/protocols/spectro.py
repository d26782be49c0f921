"""Frame protocol of the compact NIR spectrometer ("NSP" protocol, designed for Humus).

NSP-2500 serial protocol, manual style (this module is its reference
implementation, shared by the driver and the simulator):

1. Line: 115200 baud, 8 data bits, no parity, 1 stop bit, no flow control.
   The host speaks first; the unit answers each command with exactly one
   frame and never sends unsolicited frames.
2. Frame (both directions, all integers little-endian)::

       offset  size  field
       0       2     sync 0xA5 0x5A
       2       1     type: command (host->unit) or reply type (unit->host)
       3       2     length N of the payload, 0..1024
       5       N     payload
       5+N     2     CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection,
                     no final XOR) over bytes 2..5+N-1 (type, length, payload)

   CRC-16/CCITT-FALSE is the catalogue entry of that name in Greg Cook's
   "Catalogue of parametrised CRC algorithms" (check 0x29B1 for
   "123456789"); binascii.crc_hqx(data, 0xFFFF) computes it.
3. Commands:
   - 0x01 GET_INFO, no payload -> 0x81 INFO: u16 band count, u16 first
     wavelength (nm x10), u16 last wavelength (nm x10), u16 full-scale count,
     8 bytes model name (ASCII, NUL padded).
   - 0x02 SET_INTEGRATION, u16 integration time in ms (1..5000) -> 0x80 ACK
     (empty payload). The setting holds until power-off.
   - 0x10 ACQUIRE, u8 capture: 0 sample (lamp on, shutter open), 1 dark
     (lamp off, shutter closed), 2 white (lamp on, internal white tile,
     reflectance 0.99) -> 0x90 SPECTRUM after the integration time.
4. SPECTRUM payload: u8 capture, u16 sequence number (wraps), u16
   integration ms, u16 band count B, u16 first nm x10, u16 last nm x10,
   u8 flags (bit 0: a count reached full scale; bit 1: lamp was on), then
   B x u16 counts. Bands are evenly spaced from first to last wavelength.
   The NSP-2500 has 256 bands, 1350.0-2500.0 nm, full scale 65535.
5. Errors: a command the unit cannot carry out gets 0xEE NAK with a u8
   code (1 unknown command, 2 bad argument, 3 busy). A frame with a bad
   CRC or an impossible length is ignored (no reply): the host times out
   and resends. After noise, the host resynchronises on the next sync.
6. Reflectance: R = R_white * (S - D) / (W - D) per band, with dark D and
   white W taken at the same integration time as the sample S.

`parse_frame` never raises: it reports how many bytes it consumed and what
it found, so a reader can resynchronise on the next sync after noise.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

SYNC = b"\xA5\x5A"
HEADER_LEN = 5
CRC_LEN = 2
MAX_PAYLOAD = 1024
FULL_SCALE = 65535          # 16-bit ADC: a count at full scale is saturated


class Command(IntEnum):
    GET_INFO = 0x01         # payload empty -> INFO
    SET_INTEGRATION = 0x02  # payload u16 integration time in ms (1..5000) -> ACK
    ACQUIRE = 0x10          # payload u8 Capture -> SPECTRUM


class ReplyType(IntEnum):
    ACK = 0x80              # payload empty
    INFO = 0x81             # payload: u16 bands, u16 first nm*10, u16 last nm*10, u16 full scale, 8 bytes model
    SPECTRUM = 0x90         # payload: see SpectrumFrame
    NAK = 0xEE              # payload u8 error code


class Capture(IntEnum):
    SAMPLE = 0              # lamp on, shutter open: the soil
    DARK = 1                # lamp off, shutter closed: detector offset and dark current
    WHITE = 2               # lamp on, internal white reference tile


class NakCode(IntEnum):
    BAD_COMMAND = 1
    BAD_ARGUMENT = 2
    BUSY = 3


class FrameStatus(str, Enum):
    OK = "ok"
    INCOMPLETE = "incomplete"   # a valid start, more bytes needed
    CRC_ERROR = "crc_error"
    GARBLED = "garbled"         # no sync, or an impossible length
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ParseResult:
    status: FrameStatus
    frame: Frame | None = None
    consumed: int = 0           # bytes the caller may drop from its buffer


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(type_: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes: at most {MAX_PAYLOAD}")
    body = struct.pack("<BH", type_, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


def parse_frame(buf: bytes) -> ParseResult:
    """The first frame in `buf`; never raises."""
    buf = bytes(buf)
    if not buf:
        return ParseResult(FrameStatus.EMPTY)
    start = buf.find(SYNC)
    if start < 0:
        # Keep a trailing first sync byte: the second may still come.
        keep = 1 if buf.endswith(SYNC[:1]) else 0
        if keep == len(buf):
            return ParseResult(FrameStatus.INCOMPLETE)
        return ParseResult(FrameStatus.GARBLED, consumed=len(buf) - keep)
    if start > 0:
        return ParseResult(FrameStatus.GARBLED, consumed=start)
    if len(buf) < HEADER_LEN:
        return ParseResult(FrameStatus.INCOMPLETE)
    type_, length = struct.unpack_from("<BH", buf, 2)
    if length > MAX_PAYLOAD:
        return ParseResult(FrameStatus.GARBLED, consumed=len(SYNC))
    total = HEADER_LEN + length + CRC_LEN
    if len(buf) < total:
        return ParseResult(FrameStatus.INCOMPLETE)
    (crc,) = struct.unpack_from("<H", buf, HEADER_LEN + length)
    if crc != crc16(buf[2:HEADER_LEN + length]):
        return ParseResult(FrameStatus.CRC_ERROR, consumed=total)
    return ParseResult(FrameStatus.OK, Frame(type_, buf[HEADER_LEN:HEADER_LEN + length]), total)


def frame_length(header: bytes) -> int | None:
    """Total frame length announced by a 5-byte header, or None if it is not a header."""
    if len(header) < HEADER_LEN or header[:2] != SYNC:
        return None
    (length,) = struct.unpack_from("<H", header, 3)
    return None if length > MAX_PAYLOAD else HEADER_LEN + length + CRC_LEN


# -- payloads ----------------------------------------------------------------------
_SPECTRUM_HEAD = struct.Struct("<BHHHHHB")   # capture, seq, integration ms, bands, first nm*10, last nm*10, flags
FLAG_SATURATED = 0x01      # the firmware saw a count at full scale
FLAG_LAMP_ON = 0x02


@dataclass(frozen=True, slots=True)
class SpectrumFrame:
    capture: int
    seq: int
    integration_ms: int
    first_nm: float
    last_nm: float
    flags: int
    counts: tuple[int, ...]

    @property
    def wavelengths_nm(self) -> tuple[float, ...]:
        n = len(self.counts)
        if n == 1:
            return (self.first_nm,)
        step = (self.last_nm - self.first_nm) / (n - 1)
        return tuple(round(self.first_nm + i * step, 3) for i in range(n))

    def encode(self) -> bytes:
        head = _SPECTRUM_HEAD.pack(self.capture, self.seq & 0xFFFF, self.integration_ms, len(self.counts),
                                   round(self.first_nm * 10), round(self.last_nm * 10), self.flags)
        return head + struct.pack(f"<{len(self.counts)}H", *self.counts)


def decode_spectrum(payload: bytes) -> SpectrumFrame | None:
    """A SPECTRUM payload, or None if its length disagrees with its band count."""
    if len(payload) < _SPECTRUM_HEAD.size:
        return None
    capture, seq, integ, bands, first, last, flags = _SPECTRUM_HEAD.unpack_from(payload)
    if bands == 0 or len(payload) != _SPECTRUM_HEAD.size + 2 * bands or last < first:
        return None
    counts = struct.unpack_from(f"<{bands}H", payload, _SPECTRUM_HEAD.size)
    return SpectrumFrame(capture, seq, integ, first / 10, last / 10, flags, counts)


_INFO = struct.Struct("<HHHH8s")


@dataclass(frozen=True, slots=True)
class Info:
    bands: int
    first_nm: float
    last_nm: float
    full_scale: int
    model: str

    def encode(self) -> bytes:
        return _INFO.pack(self.bands, round(self.first_nm * 10), round(self.last_nm * 10), self.full_scale,
                          self.model.encode("ascii")[:8].ljust(8, b"\0"))


def decode_info(payload: bytes) -> Info | None:
    if len(payload) != _INFO.size:
        return None
    bands, first, last, fs, model = _INFO.unpack(payload)
    return Info(bands, first / 10, last / 10, fs, model.rstrip(b"\0").decode("ascii", "replace"))
