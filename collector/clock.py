"""Is the wall clock trustworthy, and did it just jump?

A gateway without a real-time clock boots in 1970 (or at the last saved
time) and jumps when NTP or GPS sets it. Readings taken before that carry
a wrong time: they are kept, flagged SUSPECT with flag_test
``clock_unsynced``.

Synchronisation, two checks (`clock_check` in ``[gateway]``):

- ``epoch``: the clock reads before a sane date (the configuration's
  ``sane_epoch``, by default a date before this release) -> unsynchronised;
- ``kernel`` (default): the epoch check, plus the kernel's own verdict: the
  adjtimex(2) system call returns TIME_ERROR (5) while the STA_UNSYNC status
  bit is set, which NTP daemons (systemd-timesyncd, chrony, ntpd) clear once
  they have disciplined the clock (Linux man page adjtimex(2), "RETURN
  VALUE"). Read with modes = 0 it changes nothing and needs no privilege.

A clock step is a change of (wall - monotonic) beyond a threshold: the
monotonic clock never jumps, so the difference moves only when the wall
clock is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

TIME_ERROR = 5
_libc = None


def kernel_clock_unsynced() -> bool | None:
    """True if the kernel says the clock is not synchronised; None if it cannot tell."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)   # struct timex is ~208 bytes; modes (first field) = 0: read only
        return _libc.adjtimex(buf) == TIME_ERROR
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class ClockStep:
    at_ns: int
    step_s: float


class Clock:
    """Time stamps, the synchronisation verdict, and clock-step detection (thread-safe)."""

    def __init__(self, sane_epoch_ns: int, step_threshold_s: float, check: str = "kernel",
                 recheck_s: float = 10.0) -> None:
        self.sane_epoch_ns = sane_epoch_ns
        self.step_threshold_ns = int(step_threshold_s * 1e9)
        self.check = check
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._offset = time.time_ns() - time.monotonic_ns()
        self._kernel_unsynced: bool | None = None
        self._kernel_checked = -1e18
        self.steps = 0
        self.last_step: ClockStep | None = None

    def synced(self, now_ns: int | None = None) -> bool:
        now_ns = time.time_ns() if now_ns is None else now_ns
        if now_ns < self.sane_epoch_ns:
            return False
        if self.check != "kernel":
            return True
        mono = time.monotonic()
        with self._lock:
            if mono - self._kernel_checked >= self.recheck_s:
                self._kernel_unsynced = kernel_clock_unsynced()
                self._kernel_checked = mono
            return not self._kernel_unsynced

    def detect_step(self) -> ClockStep | None:
        """Compare wall and monotonic clocks; a ClockStep (logged once) if the wall clock jumped."""
        wall, mono = time.time_ns(), time.monotonic_ns()
        offset = wall - mono
        with self._lock:
            delta = offset - self._offset
            if abs(delta) <= self.step_threshold_ns:
                return None
            self._offset = offset
            step = ClockStep(wall, delta / 1e9)
            self.steps += 1
            self.last_step = step
        log.warning("gateway clock stepped by %+.3f s (NTP/GPS set it, or someone did); readings around it "
                    "may be misordered, check time synchronisation", step.step_s)
        return step
