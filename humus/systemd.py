"""systemd readiness and watchdog over the NOTIFY_SOCKET datagram protocol (no libsystemd).

sd_notify(3): the service manager passes ``NOTIFY_SOCKET`` (a path, or an
abstract socket name starting with ``@``); the service sends newline-separated
``KEY=VALUE`` datagrams to it: ``READY=1`` once it serves, ``WATCHDOG=1`` at
least every ``WATCHDOG_USEC`` microseconds (sd_watchdog_enabled(3) advises
half of it), ``RELOADING=1`` / ``STOPPING=1`` around a reload or shutdown and
``STATUS=...`` as a human-readable line for ``systemctl status``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable


class Notifier:
    """Sends sd_notify messages; a no-op when not run by systemd (no NOTIFY_SOCKET)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.address = addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ok = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if ok else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:
            return False   # systemd gone or socket full: never fatal for data acquisition

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


WATCHDOG_STALL_S = 30.0
"""A main loop that has not turned for this long is hung: the watchdog is starved and systemd restarts us."""


def feed_watchdog(name: str, alive_mono: Callable[[], float], stop: threading.Event,
                  status: Callable[[], str] | None = None, notifier: Notifier | None = None) -> None:
    """READY=1 at once, then WATCHDOG=1 every WATCHDOG_USEC/2 while `alive_mono()` (the monotonic time of
    the daemon's last loop turn) stays within WATCHDOG_STALL_S; STOPPING=1 when `stop` is set.

    Run it in a daemon thread beside a single-loop daemon (humus ingest, humus alerts). A daemon that
    waits for a server that is down is not hung (its loop retries), so it is not restarted for that.
    """
    notifier = notifier or Notifier()
    if not notifier.enabled:
        return
    notifier.ready(name)
    interval = notifier.watchdog_interval_s
    while not stop.wait(min(interval or 5.0, 5.0)):
        if interval is not None and time.monotonic() - alive_mono() < WATCHDOG_STALL_S:
            notifier.watchdog()
        if status is not None:
            notifier.status(status())
    notifier.stopping()
