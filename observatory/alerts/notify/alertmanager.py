"""Alertmanager as the notifier: alerts go to its v2 API, and grouping, routing, silences and
inhibition are its business, as operators expect.

As Prometheus does (notifier/notifier.go, rules/alerting.go): every firing
alert is posted again every `resend_s` with ``endsAt`` = now + 4 x resend
(Alertmanager resolves an alert that stops coming once endsAt passes, so a
dead alerts service does not leave alerts firing for ever); a resolved
alert is posted with its ``endsAt`` for as long as the life cycle keeps it.
Posting an alert Alertmanager already has only refreshes it: it sends no new
notification, so a restart of this service re-sends nothing to people.

API: POST /api/v2/alerts with a JSON list of postableAlert; silences via
POST /api/v2/silences (Alertmanager OpenAPI spec, api/v2/openapi.yaml).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Iterable

from observatory.alerts.config import AlertmanagerSettings
from observatory.alerts.lifecycle import Alert, AlertState
from observatory.alerts.notify.courier import Courier
from observatory.alerts.notify.message import alert_document, rfc3339

NS = 1_000_000_000


class AlertmanagerError(RuntimeError):
    pass


class AlertmanagerApi:
    """The few v2 endpoints Humus uses; each failure is one AlertmanagerError line."""

    def __init__(self, s: AlertmanagerSettings) -> None:
        self.base = s.url.rstrip("/")
        self.timeout_s = s.timeout_s
        self.ctx = ssl.create_default_context(cafile=s.ca_file or None) if self.base.startswith("https") else None

    def request(self, method: str, path: str, doc: Any = None) -> Any:
        data = None if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "User-Agent": "humus-alerts"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.ctx) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace").strip()
            raise AlertmanagerError(f"Alertmanager {self.base}{path} answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise AlertmanagerError(f"Alertmanager {self.base} unreachable ({getattr(e, 'reason', e)})") from None
        return json.loads(body) if body.strip() else None

    def post_alerts(self, docs: list[dict[str, Any]]) -> None:
        self.request("POST", "/api/v2/alerts", docs)

    def alerts(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/alerts")

    def add_silence(self, matchers: dict[str, str], starts_ns: int, ends_ns: int, created_by: str,
                    comment: str) -> str:
        doc = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
               "startsAt": rfc3339(starts_ns), "endsAt": rfc3339(ends_ns), "createdBy": created_by,
               "comment": comment or "silenced with humus alerts silence"}
        return self.request("POST", "/api/v2/silences", doc)["silenceID"]

    def silences(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/silences")

    def expire_silence(self, silence_id: str) -> None:
        self.request("DELETE", f"/api/v2/silence/{silence_id}")


class _Poster:
    attempts = 3

    def __init__(self, api: AlertmanagerApi) -> None:
        self.api = api
        self.name = f"Alertmanager {api.base}"
        self.hint = f"that Alertmanager runs at {api.base} ([alerts.alertmanager] url)"

    def send(self, docs: list[dict[str, Any]]) -> None:
        self.api.post_alerts(docs)


class AlertmanagerNotifier:
    """Posts the current alerts on every change and every `resend_s`."""

    def __init__(self, s: AlertmanagerSettings) -> None:
        self.s = s
        self.api = AlertmanagerApi(s)
        self.courier = Courier(_Poster(self.api))
        self._last_ns: int | None = None
        self.posts = 0

    def tick(self, now_ns: int, alerts: Iterable[Alert], changed: bool) -> bool:
        """Post if anything changed or the resend interval passed; True if a post was queued."""
        alerts = [a for a in alerts if a.state is not AlertState.PENDING]
        due = self._last_ns is None or now_ns - self._last_ns >= int(self.s.resend_s * NS)
        if not alerts or not (changed or due):
            return False
        ends = now_ns + int(4 * self.s.resend_s * NS)
        self.courier.put([alert_document(a, ends) for a in alerts])
        self._last_ns = now_ns
        self.posts += 1
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        return self.courier.flush(timeout)

    def close(self) -> None:
        self.courier.close()
