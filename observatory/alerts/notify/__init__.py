"""Delivery of alerts: to Alertmanager, or through the built-in notifier's channels.

`Notification` is one message about one group of alerts (the built-in
notifier groups per site by default); `render` turns it into the text every
channel shows; `Courier` sends in the background with retries, so a slow
SMTP server or webhook never delays an evaluation.
"""

from __future__ import annotations

from observatory.alerts.notify.message import Notification, alert_document, render, rfc3339
from observatory.alerts.notify.courier import Channel, Courier

__all__ = ["Channel", "Courier", "Notification", "alert_document", "render", "rfc3339"]
