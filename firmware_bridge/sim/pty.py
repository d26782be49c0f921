"""Run a simulated probe firmware on a pseudo-terminal.

A `Firmware` is pure behaviour: bytes from the host in, timed bytes out. A
`PtyProbe` gives it a real pty, links the slave device at a chosen path (so
a driver opens it with pyserial like a USB adapter), and can unplug the
probe (the pty and the link disappear) and replug it, possibly under a
different device name, as a USB serial adapter does.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Protocol


class Firmware(Protocol):
    """Probe behaviour; called from the simulator thread only."""

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """Bytes the host wrote; returns (delay_s, bytes) to send back after each delay."""
        ...

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        """Called periodically; unsolicited output (e.g. SDI-12 service requests, streaming probes)."""
        ...


class PtyProbe:
    """A firmware on a pty linked at `link`; start(), unplug(), replug(), stop()."""

    def __init__(self, firmware: Firmware, link: str | Path, tick_s: float = 0.05) -> None:
        self.firmware = firmware
        self.link = Path(link)
        self.tick_s = tick_s
        self.device: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._pending: list[tuple[float, int, bytes]] = []
        self._counter = itertools.count()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "PtyProbe":
        self._plug()
        self._thread = threading.Thread(target=self._run, name=f"sim {self.link.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread:
            self._thread.join(timeout=5)
        self._unplug()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PtyProbe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """The cable is pulled: the device node and its link vanish."""
        with self._lock:
            self._unplug()
        os.write(self._wake_w, b"x")

    def replug(self) -> str:
        """The cable is back: a new pty (a new /dev/pts name), linked at the same path."""
        with self._lock:
            self._plug()
        os.write(self._wake_w, b"x")
        assert self.device
        return self.device

    @property
    def plugged(self) -> bool:
        return self._master is not None

    # -- internals ---------------------------------------------------------
    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self._master, self._slave = master, slave
        self.device = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        tmp.symlink_to(self.device)
        os.replace(tmp, self.link)
        self._pending.clear()

    def _unplug(self) -> None:
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except FileNotFoundError:
            pass
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        self._pending.clear()

    def _schedule(self, out: list[tuple[float, bytes]], now: float) -> None:
        for delay, data in out:
            heapq.heappush(self._pending, (now + max(0.0, delay), next(self._counter), data))

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                master = self._master
                while master is not None and self._pending and self._pending[0][0] <= now:
                    _, _, data = heapq.heappop(self._pending)
                    try:
                        os.write(master, data)
                    except OSError:
                        pass
                if now >= next_tick:
                    next_tick = now + self.tick_s
                    if master is not None:
                        self._schedule(self.firmware.tick(now), now)
                due = min([next_tick] + [p[0] for p in self._pending[:1]])
            fds = [self._wake_r] + ([master] if master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], max(0.0, due - time.monotonic()))
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            if master is not None and master in ready:
                # Read under the lock, only from the pty still plugged and only if it is readable
                # now: after an unplug the old descriptor number may already belong to another
                # file, and a blocking read on it would hang this thread for good.
                with self._lock:
                    if self._master != master:
                        continue
                    try:
                        if not select.select([master], [], [], 0)[0]:
                            continue
                        data = os.read(master, 4096)
                    except (OSError, ValueError):
                        data = None
                    if data:
                        now = time.monotonic()
                        self._schedule(self.firmware.receive(data, now), now)
                if data is None:
                    # No process has the slave open: EIO on Linux. Wait a little and retry.
                    time.sleep(0.01)
