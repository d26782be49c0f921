"""MQTT channel: each notification as JSON on the site's alerts topic (default ``humus/v1/<site>/alerts``).

QoS 1, not retained. The topic has four levels, so it never matches the
gateways' ``humus/v1/+/+/alerts`` the service itself listens to. Field
displays and other services subscribe to it; the payload is Alertmanager's
webhook document plus ``schema = "humus/v1/notification"`` and ``text``.
"""

from __future__ import annotations

import json
from typing import Callable

from observatory.alerts.notify.message import Notification


class MqttChannel:
    attempts = 3
    name = "mqtt"
    hint = "the broker connection ([mqtt] in the configuration) and the ACL for the alerts topic"

    def __init__(self, publish: Callable[[str, bytes], None], topic: str = "humus/v1/{site}/alerts") -> None:
        self.publish = publish
        self.topic = topic

    def send(self, n: Notification) -> None:
        site = n.group_labels.get("site") or (n.firing + n.resolved)[0].all_labels().get("site", "all")
        payload = json.dumps(n.mqtt_document(), separators=(",", ":")).encode()
        self.publish(self.topic.replace("{site}", site), payload)
