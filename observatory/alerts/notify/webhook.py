"""Webhook channel: a JSON POST of each notification, in Alertmanager's webhook format (version 4).

Any 2xx answer is a delivery; anything else, or no answer within the
timeout, is retried by the courier with back-off.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from observatory.alerts.notify.message import Notification


class WebhookChannel:
    def __init__(self, url: str, attempts: int = 5, timeout_s: float = 10.0) -> None:
        self.url, self.attempts, self.timeout_s = url, attempts, timeout_s
        self.name = f"webhook {url}"
        self.hint = f"that {url} is up and answers 2xx to a JSON POST ([alerts.notify] webhook_urls)"

    def send(self, n: Notification) -> None:
        body = json.dumps(n.webhook_document(), separators=(",", ":")).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "humus-alerts"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                if not 200 <= r.status < 300:
                    raise RuntimeError(f"{self.url} answered {r.status}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.url} answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"{self.url} unreachable ({getattr(e, 'reason', e)})") from None
