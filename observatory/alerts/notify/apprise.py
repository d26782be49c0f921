"""Apprise channel (optional extra ``humus[alerts]``): Telegram, Matrix, ntfy, SMS gateways and more.

Apprise (github.com/caronc/apprise) sends one title and body to every URL
it is given (``tgram://``, ``matrix://``, ``ntfy://``, ``json://``...).
"""

from __future__ import annotations

from typing import Sequence

from observatory.alerts.notify.message import Notification, render


def available() -> bool:
    try:
        import apprise  # noqa: F401
    except ImportError:
        return False
    return True


class AppriseChannel:
    attempts = 3
    name = "apprise"
    hint = "the Apprise URLs in [alerts.notify] apprise_urls and the service's network access"

    def __init__(self, urls: Sequence[str]) -> None:
        import apprise

        self._a = apprise.Apprise()
        for u in urls:
            if not self._a.add(u):
                raise ValueError(f"Apprise does not understand the URL {u.split('://')[0]}://...")

    def send(self, n: Notification) -> None:
        title, body = render(n)
        if not self._a.notify(title=title, body=body):
            raise RuntimeError("Apprise reported a failed delivery")
