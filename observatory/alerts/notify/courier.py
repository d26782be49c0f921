"""Background delivery with retries, one thread per channel.

An evaluation must never wait for a slow SMTP server or a webhook that
times out, and a failed delivery must be retried, counted and logged once
with what to check, never raised into the service. Each channel gets a
queue and a thread that tries a message up to `attempts` times with
exponential back-off (1, 2, 4... s, at most 60 s) and then drops it with a
log line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

log = logging.getLogger("humus.alerts")

MAX_QUEUE = 1000


class Channel(Protocol):
    name: str
    attempts: int
    hint: str           # what to check when it fails

    def send(self, item: Any) -> None:
        """Deliver one item; raise on failure (the courier retries)."""
        ...


class Courier:
    """Delivers items to one channel from a background thread."""

    def __init__(self, channel: Channel, backoff_s: float = 1.0) -> None:
        self.channel = channel
        self.backoff_s = backoff_s
        self.sent = self.failed = self.dropped = 0
        self._q: queue.Queue = queue.Queue(MAX_QUEUE)
        self._stop = threading.Event()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"alerts-{channel.name}", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        with self._done:
            self._pending += 1
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self._finished()
            self.dropped += 1
            log.error("alerts: %s queue full (%d messages); dropping one. Check %s", self.channel.name, MAX_QUEUE,
                      self.channel.hint)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(item)
            finally:
                self._finished()

    def _finished(self) -> None:
        with self._done:
            self._pending -= 1
            self._done.notify_all()

    def _deliver(self, item: Any) -> None:
        delay = self.backoff_s
        attempts = max(1, self.channel.attempts)
        for attempt in range(1, attempts + 1):
            try:
                self.channel.send(item)
                self.sent += 1
                return
            except Exception as e:  # noqa: BLE001 - any failure of a channel is retried, then logged
                if attempt == attempts or self._stop.is_set():
                    self.failed += 1
                    log.error("alerts: %s delivery failed after %d attempt(s): %s; check %s", self.channel.name,
                              attempt, str(e)[:300], self.channel.hint)
                    return
                log.warning("alerts: %s delivery attempt %d failed (%s); retrying in %.0f s", self.channel.name,
                            attempt, str(e)[:200], delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 60.0)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)
