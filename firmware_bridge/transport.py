"""Bytes in and out of one serial port, surviving unplug and replug.

A `SerialTransport` knows nothing of protocols: it opens a port with explicit
line settings and exclusive access (two processes interleaving commands on
one bus corrupt both), reads with deadlines, and turns every way a port can
fail into `PortAbsent` or `PortBusy`. After a failure it closes the port and
re-opens it on the next `ensure_open()`; while the device stays away, open
attempts are spaced by exponential back-off, so a missing probe costs one
cheap exception per poll and never a busy loop or a stalled gateway. The
back-off is capped at a few seconds, and while the device node is missing
each `ensure_open()` only checks (one stat(), or one USB scan for a
``usb:`` name) whether it exists again: a replugged probe is opened at the
first poll after its return, however long it was away (measured before:
with a 60 s cap a probe stayed ``absent`` 16 s after it came back).

A replugged USB adapter may come back under another device node: the port
is named by a stable path (a udev /dev/serial/by-id link, a simulator link)
or by ``usb:VID:PID[:SERIAL]`` (see `firmware_bridge.ports`), resolved again
on every open. Each `ensure_open()` also checks, with one stat(), that the
name still points at the device we hold open, so a replug between two polls
is noticed before a command is lost on a dead file descriptor.

POSIX only (Linux gateways): reads wait with select() on the port's fd.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import time
from dataclasses import dataclass
from typing import Literal

import serial

from firmware_bridge.ports import parse_port, resolve_port

log = logging.getLogger(__name__)

PortState = Literal["open", "closed", "absent", "busy"]

_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
             "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}


@dataclass(frozen=True)
class SerialSettings:
    """Line settings a probe expects (SDI-12 adapters: 1200 7E1; most Modbus probes: 9600 8N1)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def __post_init__(self) -> None:
        if self.bytesize not in (5, 6, 7, 8):
            raise ValueError(f"bytesize {self.bytesize}: expected 5, 6, 7 or 8")
        if self.parity not in _PARITIES:
            raise ValueError(f"parity {self.parity!r}: expected one of {', '.join(_PARITIES)}")
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"stopbits {self.stopbits}: expected 1, 1.5 or 2")
        if not isinstance(self.baudrate, int) or self.baudrate <= 0:
            raise ValueError(f"baudrate {self.baudrate!r}: expected a positive integer")

    def __str__(self) -> str:
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"

    def char_time_s(self) -> float:
        """Seconds one character takes on the wire (start + data + parity + stop bits)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate


class TransportError(Exception):
    """A port that cannot carry bytes now; the message says which port and what to check."""


class PortAbsent(TransportError):
    """The device node is gone (unplugged) or cannot be opened."""


class PortBusy(TransportError):
    """Another process holds the port (exclusive access)."""


class SerialTransport:
    """One serial port with reconnect and back-off; not thread-safe (one poller per port)."""

    def __init__(self, port: str, settings: SerialSettings, *, min_backoff_s: float = 0.5,
                 max_backoff_s: float = 5.0) -> None:
        if min_backoff_s <= 0 or max_backoff_s < min_backoff_s:
            raise ValueError("back-off: expected 0 < min_backoff_s <= max_backoff_s")
        parse_port(port)               # a malformed name is a configuration error now, not at every poll
        self.port = port
        self.settings = settings
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._serial: serial.Serial | None = None
        self._device: str | None = None
        self._rdev: int | None = None
        self._rx = bytearray()
        self._state: PortState = "closed"
        self._backoff_s = 0.0          # 0: the next open attempt may happen at once
        self._retry_at = 0.0
        self._last_error = ""
        self._node_missing = False     # the last open failed because the device node did not exist
        self.open_attempts = 0         # OS-level open attempts (tests and diagnostics)

    # -- state -------------------------------------------------------------
    @property
    def state(self) -> PortState:
        return self._state

    @property
    def device(self) -> str | None:
        """The device node currently open (may differ from `port` after a replug)."""
        return self._device

    def __repr__(self) -> str:
        return f"SerialTransport({self.port!r}, {self.settings}, state={self._state})"

    def __enter__(self) -> "SerialTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening -----------------------------------------------------------
    def ensure_open(self) -> None:
        """Open the port if needed; raise PortAbsent/PortBusy (rate-limited while it stays away)."""
        if self._serial is not None:
            if not self._still_same_device():
                self._lost(f"port {self.port}: the device changed or vanished (replugged?)")
            else:
                try:
                    self._fill(0)       # notices a hang-up, even if the device came back under the same name
                    return
                except PortAbsent:
                    pass                # closed; reopen below at once
        now = time.monotonic()
        if now < self._retry_at and not (self._node_missing and self._node_exists()):
            exc = PortBusy if self._state == "busy" else PortAbsent
            raise exc(f"{self._last_error}; next attempt in {self._retry_at - now:.1f} s")
        self._open()

    def _node_exists(self) -> bool:
        """Is the device node there (cheap: no open, no line settings)?"""
        try:
            if self.port.startswith("usb:"):
                return resolve_port(self.port) is not None
            return os.path.exists(self.port)
        except (OSError, ValueError):
            return False

    def _open(self) -> None:
        self.open_attempts += 1
        device = resolve_port(self.port)
        if device is None:
            self._failed("absent", f"port {self.port}: no USB adapter with these ids is plugged in (check the cable)")
            raise PortAbsent(self._last_error)
        try:
            try:
                ser = self._serial_open(device)
            except termiosError as e:
                if e.args[0] != errno.EINVAL:
                    raise
                _nudge_speed(device, self.settings.baudrate)
                ser = self._serial_open(device)
        except serial.SerialException as e:
            code = e.errno if isinstance(e.errno, int) else None
            if code in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EBUSY) or "exclusively lock" in str(e):
                self._failed("busy", f"port {self.port}: held by another process (stop it, or check `fuser {device}`)")
                raise PortBusy(self._last_error) from None
            why = os.strerror(code) if code else _why(e)
            self._failed("absent", f"port {self.port}: cannot open ({why}); check the cable and the device name")
            raise PortAbsent(self._last_error) from None
        except (OSError, ValueError, termiosError) as e:
            self._failed("absent", f"port {self.port}: cannot open ({_why(e)}); check the cable and the device name")
            raise PortAbsent(self._last_error) from None
        self._serial, self._device = ser, os.path.realpath(device)
        try:
            self._rdev = os.fstat(ser.fileno()).st_rdev
        except OSError:
            self._rdev = None
        self._rx.clear()
        if self._state in ("absent", "busy"):
            log.info("port %s: open again as %s", self.port, device)
        self._state = "open"
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._node_missing = False

    def _serial_open(self, device: str) -> serial.Serial:
        s = self.settings
        return serial.Serial(port=device, baudrate=s.baudrate, bytesize=s.bytesize, parity=_PARITIES[s.parity],
                             stopbits=s.stopbits, timeout=0, write_timeout=2.0, exclusive=True)

    def _failed(self, state: PortState, message: str) -> None:
        """An open attempt failed: schedule the next one with exponential back-off."""
        if self._state != state or message != self._last_error:
            log.warning("%s", message)
        self._node_missing = state == "absent" and not self._node_exists()
        self._state = state
        self._last_error = message
        self._backoff_s = self.min_backoff_s if self._backoff_s == 0 else min(self._backoff_s * 2, self.max_backoff_s)
        self._retry_at = time.monotonic() + self._backoff_s

    def _still_same_device(self) -> bool:
        """Does the configured name still lead to the device we hold open (one stat call)?"""
        if self._rdev is None:
            return True
        try:
            device = self._device if self.port.startswith("usb:") else self.port
            st = os.stat(device) if device else None
        except OSError:
            return False
        return st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == self._rdev

    def _lost(self, message: str) -> None:
        """The device vanished under an open port: close; the first reopen may happen at once."""
        log.warning("%s", message)
        self._close_serial()
        self._state = "absent"
        self._last_error = message
        self._backoff_s = 0.0
        self._retry_at = 0.0

    def _close_serial(self) -> None:
        ser, self._serial = self._serial, None
        self._device, self._rdev = None, None
        self._rx.clear()
        if ser is not None:
            try:
                ser.close()
            except (OSError, serial.SerialException):
                pass

    def close(self) -> None:
        """Close the port; the next ensure_open() opens it again at once."""
        self._close_serial()
        self._state = "closed"
        self._backoff_s = 0.0
        self._retry_at = 0.0

    # -- I/O -----------------------------------------------------------------
    def _require(self) -> serial.Serial:
        if self._serial is None:
            self.ensure_open()
        assert self._serial is not None
        return self._serial

    def write(self, data: bytes) -> None:
        ser = self._require()
        try:
            n = ser.write(data)
        except (serial.SerialException, OSError) as e:
            self._lost(f"port {self.port}: write failed ({_why(e)}); device unplugged?")
            raise PortAbsent(self._last_error) from None
        if n is not None and n != len(data):
            self._lost(f"port {self.port}: wrote {n} of {len(data)} bytes; device unplugged?")
            raise PortAbsent(self._last_error)

    def _fill(self, timeout: float) -> bool:
        """Wait up to `timeout` s for bytes and append them to the buffer; False if none came."""
        ser = self._require()
        try:
            ready, _, _ = select.select([ser.fileno()], [], [], max(0.0, timeout))
            if not ready:
                return False
            chunk = os.read(ser.fileno(), 4096)
        except (OSError, ValueError, serial.SerialException) as e:
            self._lost(f"port {self.port}: read failed ({_why(e)}); device unplugged?")
            raise PortAbsent(self._last_error) from None
        if not chunk:
            # Readable but nothing to read: the other end hung up (USB unplug, pty closed).
            self._lost(f"port {self.port}: the device hung up; unplugged?")
            raise PortAbsent(self._last_error)
        self._rx += chunk
        return True

    def read_until(self, terminator: bytes, timeout: float, max_bytes: int = 65536) -> bytes:
        """Bytes up to and including `terminator`; on timeout or `max_bytes`, whatever arrived."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            i = self._rx.find(terminator, start)
            if i >= 0 and i + len(terminator) <= max_bytes:
                return self._take(i + len(terminator))
            if len(self._rx) >= max_bytes:
                return self._take(max_bytes)
            start = max(0, len(self._rx) - len(terminator) + 1)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._fill(remaining):
                return self._take(len(self._rx))

    def read_exact(self, n: int, timeout: float) -> bytes:
        """Exactly `n` bytes, or fewer if the timeout passes first."""
        deadline = time.monotonic() + timeout
        while len(self._rx) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._fill(remaining):
                break
        return self._take(min(n, len(self._rx)))

    def _take(self, n: int) -> bytes:
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def reset_input(self) -> None:
        """Drop everything received so far (stale replies from an earlier command)."""
        ser = self._require()
        self._rx.clear()
        try:
            ser.reset_input_buffer()
            for _ in range(64):        # bounded: a streaming probe never runs dry
                if not self._fill(0):
                    break
                self._rx.clear()
        except (serial.SerialException, OSError, termiosError) as e:
            self._lost(f"port {self.port}: flush failed ({_why(e)}); device unplugged?")
            raise PortAbsent(self._last_error) from None
        self._rx.clear()

    def send_break(self, seconds: float) -> None:
        """Hold the line in break (spacing) for `seconds`; pseudo-terminals ignore it."""
        ser = self._require()
        try:
            ser.break_condition = True
            time.sleep(seconds)
            ser.break_condition = False
        except (serial.SerialException, OSError, termiosError) as e:
            if isinstance(e, OSError) and e.errno in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                time.sleep(seconds)   # a pty has no break; keep the timing
                return
            self._lost(f"port {self.port}: break failed ({_why(e)}); device unplugged?")
            raise PortAbsent(self._last_error) from None


def _nudge_speed(device: str, baudrate: int) -> None:
    """Make the next tcsetattr() on a pseudo-terminal applicable.

    A pty keeps CS8 and no parity whatever it is told; on recent Linux
    kernels a tcsetattr() whose only changes are ones the pty cannot apply
    (7E1 asked again of a pty that refused it before) fails with EINVAL.
    Setting another speed first gives the next call a change it can make.
    Real UARTs never get here. The port is locked (flock) while we touch it.
    """
    import fcntl
    import termios

    fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        attrs = termios.tcgetattr(fd)
        other = termios.B9600 if baudrate != 9600 else termios.B4800
        attrs[4] = attrs[5] = other
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    finally:
        os.close(fd)


try:
    from termios import error as termiosError
except ImportError:  # pragma: no cover - non-POSIX
    termiosError = OSError  # type: ignore[misc,assignment]


def _why(e: BaseException) -> str:
    msg = str(e)
    return msg if msg else type(e).__name__
