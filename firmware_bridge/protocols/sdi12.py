"""SDI-12 version 1.4 through a pass-through USB/RS-232 adapter.

References are to "SDI-12: A Serial-Digital Interface Standard for
Microprocessor-Based Sensors, Version 1.4" (SDI-12 Support Group, 2019):

- Line: 1200 baud, 7 data bits, even parity, 1 stop bit (section 4.2).
- Addresses ``0``-``9`` (standard), ``a``-``z`` and ``A``-``Z`` (extended, 4.4.1).
- Every response starts with the sensor address and ends with <CR><LF> (4.3).
- Values are a sign followed by up to 7 digits and an optional decimal point,
  at most 9 characters each (4.4.6); a D response carries at most 35 value
  characters after ``aM!`` and 75 after ``aC!``/``aR!`` (4.4.8), so a sensor
  may spread its values over ``aD0!``..``aD9!``.
- ``aM!`` answers ``atttn``: ready within ttt seconds with n values; when
  ttt > 0 the sensor sends a service request ``a<CR><LF>`` when ready
  (4.4.5). ``aC!`` answers ``atttnn`` and sends no service request, so other
  sensors can measure at the same time (4.4.7).
- CRC variants ``aMC!``, ``aCC!``, ``aRCn!`` append to every data response a
  CRC-16 (polynomial 0xA001, initial value 0) over everything from the
  address to the last value, encoded as three characters 0x40 | 6 bits
  (4.4.12). Worked example in the standard: ``0+3.14`` has CRC ``OqZ``.
- Timing (section 7): a break is >= 12 ms of spacing, then >= 8.33 ms of
  marking; a sensor answers within 15 ms; after 87 ms of marking, or when the
  recorder addresses another sensor, the next command must be preceded by a
  break; a recorder that gets no valid response retries, waiting at least
  16.67 ms before a retry (7.2). `Sdi12Bus` sends a command up to `attempts`
  times (default 3; Campbell loggers go up to 3 x 3 sends, raise it to match). After a data
  error the recorder re-sends only the D command: the sensor keeps its data
  until the next M, C or V command (4.4.8).

Pass-through adapters generate the break and marking themselves when they
see a command; set ``send_break=True`` only for a plain RS-232/TTL level
converter wired to the SDI-12 line, where the host must make the break.
"""

from __future__ import annotations

import math
import re
import string
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

from firmware_bridge.protocols import ChecksumMismatch, GarbledFrame, NoResponse, PartialFrame, ProtocolError
from firmware_bridge.transport import SerialSettings, SerialTransport

T = TypeVar("T")

SETTINGS = SerialSettings(baudrate=1200, bytesize=7, parity="E", stopbits=1)   # section 4.2
ADDRESSES = string.digits + string.ascii_lowercase + string.ascii_uppercase     # section 4.4.1
CRLF = b"\r\n"
BREAK_S = 0.012           # section 7.1: at least 12 ms of spacing
MARKING_S = 0.00833       # section 7.1: 8.33 ms of marking after the break
MARKING_LIMIT_S = 0.087   # section 7.1: break needed after 87 ms of marking
RETRY_GAP_S = 0.01667     # section 7.2: wait at least 16.67 ms before a retry
MAX_VALUE_CHARS = {"M": 35, "C": 75, "R": 75}    # section 4.4.8
_VALUE = re.compile(rb"[+-](?:\d+\.?\d*|\.\d+)")


# -- CRC (section 4.4.12) ---------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16 of SDI-12 (reflected polynomial 0xA001, initial value 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_crc(crc: int) -> bytes:
    """The three printable characters that carry a CRC on the line."""
    return bytes((0x40 | (crc >> 12), 0x40 | ((crc >> 6) & 0x3F), 0x40 | (crc & 0x3F)))


def add_crc(body: bytes) -> bytes:
    return body + encode_crc(crc16(body))


# -- parsers: one complete line (ending in CR LF) in, values out ------------------
@dataclass(frozen=True)
class Identification:
    """The answer to ``aI!`` (section 4.4.3): allccccccccmmmmmmvvvxxx..."""

    address: str
    sdi12_version: str      # "1.4"
    vendor: str             # 8 characters, trailing spaces stripped
    model: str              # 6 characters, trailing spaces stripped
    sensor_version: str     # 3 characters
    extra: str              # up to 13 characters: serial number or other

    def __str__(self) -> str:
        tail = f" {self.extra}" if self.extra else ""
        return f"{self.vendor} {self.model} v{self.sensor_version}{tail} (SDI-12 {self.sdi12_version})"


@dataclass(frozen=True)
class MeasureTicket:
    """``atttn`` / ``atttnn``: values will be ready in `seconds`, `count` of them."""

    address: str
    seconds: int
    count: int


def _body(line: bytes, address: str | None, what: str) -> str:
    """The text of a complete response line without CR LF, checked for address and characters."""
    if not line.endswith(CRLF):
        raise PartialFrame(f"{what}: frame without CR LF: {line!r}")
    body = line[:-2]
    # 0x7F is legal: a CRC character is 0x40 | 6 bits, up to 0x7F (4.4.12).
    if not body or any(b < 0x20 or b > 0x7F for b in body):
        raise GarbledFrame(f"{what}: not printable ASCII: {line!r}")
    text = body.decode("ascii")
    if text[0] not in ADDRESSES:
        raise GarbledFrame(f"{what}: {text[0]!r} is not an SDI-12 address: {line!r}")
    if address is not None and text[0] != address:
        raise GarbledFrame(f"{what}: answer from address {text[0]!r}, expected {address!r}: {line!r}")
    return text


def check_crc(text: str, what: str = "response") -> str:
    """`text` without its 3 CRC characters; ChecksumMismatch if they do not match (4.4.12)."""
    if len(text) < 4:
        raise GarbledFrame(f"{what}: too short to carry a CRC: {text!r}")
    body, got = text[:-3], text[-3:].encode("ascii")
    want = encode_crc(crc16(body.encode("ascii")))
    if got != want:
        raise ChecksumMismatch(f"{what}: CRC {got.decode()!r} does not match {want.decode()!r} for {body!r}")
    return body


def parse_values(text: str) -> list[float]:
    """`+1.5-2+300` -> [1.5, -2.0, 300.0]; GarbledFrame for anything else (section 4.4.6)."""
    raw = text.encode("ascii", "replace")
    values: list[float] = []
    pos = 0
    while pos < len(raw):
        m = _VALUE.match(raw, pos)
        if m is None:
            raise GarbledFrame(f"values: expected a sign and digits at {text[pos:pos + 10]!r} in {text!r}")
        token = m.group()
        if len(token) > 9 or sum(c in b"0123456789" for c in token) > 7:
            raise GarbledFrame(f"values: {token.decode()!r} is longer than SDI-12 allows (7 digits, 9 characters)")
        values.append(float(token))
        pos = m.end()
    return values


def parse_ack(line: bytes, address: str) -> None:
    """``a<CR><LF>``: the answer to ``a!`` (4.4.2) and a service request (4.4.5)."""
    text = _body(line, address, "acknowledge")
    if len(text) != 1:
        raise GarbledFrame(f"acknowledge: expected {address!r} alone, got {text!r}")


def parse_address(line: bytes) -> str:
    """``a<CR><LF>``: the answer to ``?!`` and ``aAb!`` (4.4.4)."""
    text = _body(line, None, "address")
    if len(text) != 1:
        raise GarbledFrame(f"address: expected one address character, got {text!r}")
    return text


def parse_identification(line: bytes, address: str | None = None) -> Identification:
    text = _body(line, address, "identification")
    if len(text) < 20 or not text[1:3].isdigit():
        raise GarbledFrame(f"identification: expected allccccccccmmmmmmvvv..., got {text!r}")
    return Identification(address=text[0], sdi12_version=f"{text[1]}.{text[2]}",
                          vendor=text[3:11].rstrip(), model=text[11:17].rstrip(),
                          sensor_version=text[17:20], extra=text[20:33].strip())


def parse_ticket(line: bytes, address: str, concurrent: bool = False) -> MeasureTicket:
    """``atttn`` after aM!/aMC!/aV! (4.4.5) or ``atttnn`` after aC!/aCC! (4.4.7)."""
    text = _body(line, address, "measurement")
    digits = 5 if concurrent else 4
    if len(text) != 1 + digits or not text[1:].isdigit():
        shape = "atttnn" if concurrent else "atttn"
        raise GarbledFrame(f"measurement: expected {shape}, got {text!r}")
    return MeasureTicket(address, int(text[1:4]), int(text[4:]))


def parse_data(line: bytes, address: str, crc: bool = False) -> list[float]:
    """``a<values>[CRC]<CR><LF>`` after aDn! or aRn! (4.4.8, 4.4.10)."""
    text = _body(line, address, "data")
    if crc:
        text = check_crc(text, "data")
    return parse_values(text[1:])


def classify_incomplete(data: bytes, address: str, what: str = "") -> ProtocolError:
    """What a read that ended without CR LF means: nothing, the start of a frame, or noise."""
    prefix = f"{what}: " if what else ""
    if not data:
        return NoResponse(f"{prefix}no answer from address {address!r}")
    if data[:1] == address.encode() and all(0x20 <= b <= 0x7F for b in data):
        return PartialFrame(f"{prefix}frame cut short: {data!r}")
    return GarbledFrame(f"{prefix}not an SDI-12 frame: {data[:40]!r}")


def format_value(value: float, decimals: int) -> str:
    """One value in SDI-12 form (sign, <= 7 digits); fewer decimals if the number is large."""
    for d in range(max(0, decimals), -1, -1):
        text = f"{value:+.{d}f}"
        if sum(c.isdigit() for c in text) <= 7:
            return text
    raise ValueError(f"{value} does not fit in 7 SDI-12 digits")


def split_pages(values: Sequence[str], max_chars: int, per_page: int | None = None) -> list[str]:
    """Spread formatted values over D pages of at most `max_chars` characters (4.4.8)."""
    pages: list[str] = []
    page = ""
    count = 0
    for v in values:
        if page and (len(page) + len(v) > max_chars or (per_page and count >= per_page)):
            pages.append(page)
            page, count = "", 0
        page += v
        count += 1
    if page:
        pages.append(page)
    if len(pages) > 10:
        raise ValueError("more values than ten D pages can carry")
    return pages


def longest_answer(command: str) -> int:
    """Characters of the longest legal answer to `command`, CR LF included (4.4.3, 4.4.8)."""
    body = command[1:-1]
    if body[:1] in ("D", "R"):
        return 1 + 75 + 3 + 2          # address, values (75 after C/R; 35 after M), CRC, CR LF
    if body == "I":
        return 1 + 2 + 8 + 6 + 3 + 13 + 2
    return 1 + 5 + 2                   # atttnn, a, b


# -- the bus -------------------------------------------------------------------------
class Sdi12Bus:
    """Commands and their retries on one SDI-12 line (one adapter, up to 62 sensors).

    A command's answer is awaited `response_timeout_s` (the sensor's 15 ms,
    the adapter's latency, the host's scheduling) plus the time the longest
    legal answer to that command takes at the line's baud rate: 0.68 s for a
    75-character data page at 1200 baud. An answer that ends sooner is
    returned at once.

    Not thread-safe: one poller per bus. Every method either returns parsed
    data or raises a `ProtocolError` (or the transport's PortAbsent/PortBusy).
    """

    def __init__(self, transport: SerialTransport, *, response_timeout_s: float = 0.5, attempts: int = 3,
                 send_break: bool = False, service_margin_s: float = 0.5) -> None:
        if attempts < 1:
            raise ValueError("attempts: expected at least 1")
        self.transport = transport
        self.response_timeout_s = response_timeout_s
        self.attempts = attempts
        self.send_break = send_break
        self.service_margin_s = service_margin_s
        self._last_activity = -math.inf
        self._last_address: str | None = None
        self.retries = 0            # retries made so far (diagnostics, tests)

    # -- one command with its retries (section 7.2) --------------------------------
    def transact(self, command: str, parse: Callable[[bytes], T], *, attempts: int | None = None,
                 timeout: float | None = None) -> T:
        """Send `command`, parse its one-line answer; retry on any invalid answer, raise the last failure."""
        if not command.endswith("!") or command[0] not in ADDRESSES + "?":
            raise ValueError(f"not an SDI-12 command: {command!r}")
        if timeout is None:
            timeout = self.response_timeout_s + longest_answer(command) * self.transport.settings.char_time_s()
        last: ProtocolError | None = None
        for attempt in range(attempts or self.attempts):
            if attempt:
                self.retries += 1
                time.sleep(RETRY_GAP_S)
            self.transport.reset_input()
            self._wake(command[0])
            self.transport.write(command.encode("ascii"))
            line = self.transport.read_until(CRLF, timeout, max_bytes=256)
            self._last_activity = time.monotonic()
            try:
                if not line.endswith(CRLF):
                    raise classify_incomplete(line, command[0])
                return parse(line)
            except ProtocolError as e:
                last = e
        assert last is not None
        tries = attempts or self.attempts
        raise type(last)(f"{command} failed {tries} time{'s' if tries > 1 else ''}: {last}", last.status)

    def _wake(self, address: str) -> None:
        """A break before the command when the line has idled > 87 ms or the address changes (7.1)."""
        idle = time.monotonic() - self._last_activity
        if self.send_break and (idle > MARKING_LIMIT_S or address != self._last_address):
            self.transport.send_break(BREAK_S)
            time.sleep(MARKING_S)
        self._last_address = address

    # -- basic commands ----------------------------------------------------------------
    def acknowledge(self, address: str, *, attempts: int | None = None, timeout: float | None = None) -> bool:
        """``a!``: is a sensor listening at `address`? (4.4.2). False on silence, raises on garbage."""
        try:
            self.transact(f"{address}!", lambda line: parse_ack(line, address), attempts=attempts, timeout=timeout)
        except NoResponse:
            return False
        return True

    def identify(self, address: str) -> Identification:
        return self.transact(f"{address}I!", lambda line: parse_identification(line, address))

    def query_address(self) -> str:
        """``?!``: the address of the only sensor on the bus (4.4.4; with several, they collide)."""
        return self.transact("?!", parse_address)

    def change_address(self, old: str, new: str) -> str:
        """``aAb!``: move the sensor at `old` to `new`; returns the address it now answers to."""
        if new not in ADDRESSES:
            raise ValueError(f"new address {new!r}: expected one of 0-9, a-z, A-Z")

        def parse(line: bytes) -> str:
            got = parse_address(line)
            if got != new:
                raise GarbledFrame(f"change address: sensor answered {got!r}, expected {new!r}")
            return got

        return self.transact(f"{old}A{new}!", parse)

    # -- measurements --------------------------------------------------------------------
    def start(self, address: str, kind: str = "M", index: int = 0, crc: bool = False) -> MeasureTicket:
        """``aM!``, ``aMn!``, ``aMC!``, ``aCn!``, ``aCC!``... -> the sensor's ticket."""
        if kind not in ("M", "C"):
            raise ValueError(f"measurement kind {kind!r}: expected 'M' or 'C'")
        cmd = f"{address}{kind}{'C' if crc else ''}{index or ''}!"
        return self.transact(cmd, lambda line: parse_ticket(line, address, concurrent=kind == "C"))

    def wait_service_request(self, ticket: MeasureTicket) -> bool:
        """Wait up to ttt seconds (+ margin) for ``a<CR><LF>``; False if it never came (4.4.5)."""
        deadline = time.monotonic() + ticket.seconds + self.service_margin_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            line = self.transport.read_until(CRLF, remaining, max_bytes=64)
            if line == f"{ticket.address}".encode() + CRLF:
                self._last_activity = time.monotonic()
                return True
            if not line.endswith(CRLF):
                return False

    def collect(self, ticket: MeasureTicket, crc: bool = False) -> list[float]:
        """``aD0!``..``aD9!`` until `ticket.count` values are in (4.4.8)."""
        values: list[float] = []
        for page in range(10):
            if len(values) >= ticket.count:
                break
            got = self.transact(f"{ticket.address}D{page}!", lambda line: parse_data(line, ticket.address, crc))
            if not got:
                raise PartialFrame(f"{ticket.address}D{page}!: no more values after {len(values)} of "
                                   f"{ticket.count} (measurement aborted?)")
            values.extend(got)
        if len(values) != ticket.count:
            cls = PartialFrame if len(values) < ticket.count else GarbledFrame
            raise cls(f"address {ticket.address!r}: {len(values)} values, the sensor announced {ticket.count}")
        return values

    def measure(self, address: str, index: int = 0, crc: bool = False) -> list[float]:
        """The full ``aM!`` sequence: start, service request, data pages."""
        ticket = self.start(address, "M", index, crc)
        if ticket.count == 0:
            return []
        if ticket.seconds > 0:
            self.wait_service_request(ticket)
        return self.collect(ticket, crc)

    def measure_concurrent(self, addresses: Iterable[str], index: int = 0,
                           crc: bool = False) -> dict[str, list[float] | ProtocolError]:
        """``aC!`` to every address, one wait for the slowest, then each sensor's data (4.4.7).

        A sensor that fails gives its `ProtocolError` in the result; the others are still read.
        """
        tickets: dict[str, MeasureTicket] = {}
        results: dict[str, list[float] | ProtocolError] = {}
        started = time.monotonic()
        for a in addresses:
            try:
                tickets[a] = self.start(a, "C", index, crc)
            except ProtocolError as e:
                results[a] = e
        if tickets:
            wait = max(t.seconds for t in tickets.values()) - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        for a, ticket in tickets.items():
            try:
                results[a] = self.collect(ticket, crc) if ticket.count else []
            except ProtocolError as e:
                results[a] = e
        return results

    def continuous(self, address: str, index: int = 0, crc: bool = False) -> list[float]:
        """``aRn!`` / ``aRCn!``: the sensor's latest values, at once (4.4.10)."""
        cmd = f"{address}R{'C' if crc else ''}{index}!"
        return self.transact(cmd, lambda line: parse_data(line, address, crc))
