"""When each probe is read: wall-clock aligned slots, one thread per serial port.

A probe with interval I is read at the multiples of I since the Unix epoch
(a 900 s probe at :00, :15, :30 and :45 UTC), so series from many gateways
line up. Probes on different ports are polled concurrently, one thread per
port; probes sharing a port (an SDI-12 or RS-485 bus) are polled one after
the other by that port's thread, in slot order, because a bus carries one
conversation at a time. A dead probe costs its own bus at most its driver's
timeout (and while its adapter is unplugged, one cheap open attempt under
the transport's back-off); other ports never wait for it.

A poll that ends after the probe's next slot is an overrun: the missed slots
are skipped (not queued), counted per probe, and reported in the heartbeat.

What a poll returns is held until the port's run of polls of that slot is
over, then handed to `flush` at once: the collector stores every probe of a
bus polled in one slot in one spool commit (with the other ports' polls of
that slot, `collector.spool`'s group commit), not one per probe.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


def next_slot_ns(now_ns: int, interval_s: float) -> int:
    """The first slot strictly after `now_ns` on the grid of multiples of `interval_s`."""
    step = int(round(interval_s * 1e9))
    return (now_ns // step + 1) * step


@dataclass
class ScheduledProbe:
    probe_id: str
    interval_s: float
    poll: Callable[[int], Any]       # poll(slot_ns): read and process; what it returns goes to the flush
    next_ns: int = 0
    overruns: int = 0
    on_overrun: Callable[[int], None] | None = None


class PortWorker:
    """The thread that polls every probe of one port, each at its own slots."""

    def __init__(self, port: str, probes: list[ScheduledProbe], stop: threading.Event,
                 clock_ns: Callable[[], int] = time.time_ns,
                 flush: Callable[[list[Any]], None] | None = None) -> None:
        self.port = port
        self.probes = probes
        self.stop = stop
        self.clock_ns = clock_ns
        self.flush = flush             # flush(results of one slot's polls), e.g. spool them in one commit
        self._pending: list[Any] = []
        self.alive_mono = time.monotonic()
        self.died_of = ""              # why the thread ended, if not by `stop` (the collector restarts it)
        now = clock_ns()
        self._offset = now - time.monotonic_ns()
        for p in probes:
            p.next_ns = next_slot_ns(now, p.interval_s)
        self.thread = threading.Thread(target=self._run, name=f"port {port}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - e.g. a library's sys.exit(); the collector restarts us
            self.died_of = f"{type(e).__name__}: {e}"
            log.error("port %s: polling stopped by %s; the collector restarts it", self.port, self.died_of)
        finally:
            self._flush()     # what was read before the stop (or the death) is still stored

    def _flush(self) -> None:
        if self.flush is None:
            return
        pending, self._pending = self._pending, []
        try:
            self.flush(pending)
        except Exception as e:  # noqa: BLE001 - a bug in storing must not stop the bus
            log.error("port %s: storing %d poll(s) failed unexpectedly (%s: %s); this is a bug, please report it "
                      "with the debug log", self.port, len(pending), type(e).__name__, e)
            log.debug("flush failure on port %s", self.port, exc_info=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.alive_mono = time.monotonic()
            now = self.clock_ns()
            offset = now - time.monotonic_ns()
            if abs(offset - self._offset) > 10**9:
                # The wall clock was set (NTP/GPS at boot, or by hand): re-align every probe of this
                # port to the new time, neither waiting out a backward step nor counting the slots a
                # forward step skipped as overruns.
                log.warning("port %s: the wall clock jumped %+.1f s; polling slots re-aligned", self.port,
                            (offset - self._offset) / 1e9)
                for p in self.probes:
                    p.next_ns = next_slot_ns(now, p.interval_s)
            self._offset = offset
            due = min(self.probes, key=lambda p: p.next_ns)
            wait_s = (due.next_ns - now) / 1e9
            if wait_s > 0:
                # Re-read the wall clock at least every second: a clock step moves the slots.
                self.stop.wait(min(wait_s, 1.0))
                continue
            slot = due.next_ns
            try:
                result = due.poll(slot)
                if result is not None and self.flush is not None:
                    self._pending.append(result)
            except Exception as e:  # noqa: BLE001 - one probe's bug must not stop its bus
                log.error("probe %s on port %s: poll failed unexpectedly (%s: %s); the next slot is kept; this is "
                          "a bug, please report it with the debug log", due.probe_id, self.port, type(e).__name__, e)
                log.debug("poll failure of probe %s", due.probe_id, exc_info=True)
            end = self.clock_ns()
            nxt = slot + int(round(due.interval_s * 1e9))
            if end >= nxt or nxt - end > 2 * int(round(due.interval_s * 1e9)):
                # late (or the clock stepped back): skip to the next slot after now
                missed = max(0, (end - nxt) // int(round(due.interval_s * 1e9)) + 1) if end >= nxt else 0
                if missed:
                    due.overruns += missed
                    if due.on_overrun:
                        due.on_overrun(missed)
                nxt = next_slot_ns(end, due.interval_s)
            due.next_ns = nxt
            if self.flush is not None and not any(p.next_ns <= slot for p in self.probes):
                self._flush()    # the run of this slot is over: every probe of it in one store

