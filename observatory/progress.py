"""Progress of long work on a terminal: one line rewritten in place, nothing when stderr is not a terminal.

Why not a library: one carriage-return line is all a soil scientist needs
to see that a five-year recalibration is moving, and logs and pipes must
stay clean (a line per update in a log file helps nobody).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(done, note)` at any rate; the terminal line is redrawn at most every `every_s` seconds.

    The line shows `note` (what is being done, in words), after done/total when a total is known.
    """

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 enabled: bool | None = None, every_s: float = 0.2) -> None:
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.every_s = every_s
        self._last = 0.0
        self._width = 0
        self._start = time.monotonic()

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        share = f"{done}/{self.total} ({done / self.total:.0%}) " if self.total else ""
        text = f"{self.label}: {share}{note or done}, {now - self._start:.0f} s"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        """End the progress line (the caller prints its own summary after)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
