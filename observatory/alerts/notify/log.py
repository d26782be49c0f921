"""Log channel: each notification as log lines (journalctl -u humus-alerts), and a callback for the demo."""

from __future__ import annotations

import logging
from typing import Callable

from observatory.alerts.notify.message import Notification, render

log = logging.getLogger("humus.alerts")


class LogChannel:
    attempts = 1
    name = "log"
    hint = "the service log"

    def send(self, n: Notification) -> None:
        title, body = render(n)
        log.warning("notification: %s | %s", title, " | ".join(x.strip() for x in body.strip().splitlines()))


class CallbackChannel:
    """Hands each notification's text to a function (``humus demo`` prints it)."""

    attempts = 1
    name = "callback"
    hint = "the callback"

    def __init__(self, fn: Callable[[str, str], None]) -> None:
        self.fn = fn

    def send(self, n: Notification) -> None:
        self.fn(*render(n))
