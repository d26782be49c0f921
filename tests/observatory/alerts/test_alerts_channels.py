"""Delivery details: Apprise (optional extra), a webhook that stays down, alert history in InfluxDB."""

from __future__ import annotations

import json
import logging

import pytest

import alerts_support as S
from observatory.alerts.config import load_alerts_config
from observatory.alerts.lifecycle import Alert, AlertState
from observatory.alerts.notify import Courier, Notification
from observatory.alerts.notify.webhook import WebhookChannel
from observatory.alerts.service import AlertsService

NS = 10**9


def alert(state: AlertState = AlertState.FIRING) -> Alert:
    labels = (("gateway", "gw-1"), ("probe", "teros-a"), ("site", "farm-a"))
    return Alert("no_data", labels, "warning", state, S.T0, S.T0, None, S.T0, 120.0,
                 "no valid value from probe teros-a for 2 min", "the probe's cable")


def test_apprise_carries_the_notification_to_a_json_endpoint():
    pytest.importorskip("apprise")
    from observatory.alerts.notify.apprise import AppriseChannel

    sink = S.WebhookSink()
    try:
        url = sink.url.replace("http://", "json://")
        AppriseChannel([url]).send(Notification("site=farm-a", {"site": "farm-a"}, [alert()]))
        (post,) = sink.wait(1)
    finally:
        sink.close()
    assert post["title"] == "[FIRING:1] farm-a: no_data on farm-a/gw-1/teros-a"
    assert "check: the probe's cable" in post["message"]


def test_a_webhook_that_stays_down_is_retried_then_logged_once(caplog):
    sink = S.WebhookSink(fail_first=10)
    courier = Courier(WebhookChannel(sink.url, attempts=3, timeout_s=2), backoff_s=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="humus.alerts"):
            courier.put(Notification("site=farm-a", {"site": "farm-a"}, [alert()]))
            assert courier.flush(10)
    finally:
        courier.close()
        sink.close()
    assert sink.refused == 3 and courier.failed == 1 and courier.sent == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "after 3 attempt(s)" in errors[0] and "check that" in errors[0]
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.servers
def test_alert_history_goes_to_influxdb_beside_the_data(tmp_path, influx_v1_store_url):
    path = tmp_path / "observatory.toml"
    path.write_text(f"""
[alerts]
store = "{influx_v1_store_url}"
state_file = "{tmp_path / 'alerts.sqlite'}"
[alerts.rules.gateway_offline]
for_s = 0
[alerts.notify]
mqtt = false
""")
    service = AlertsService(load_alerts_config(path), connect=False)
    try:
        assert service.prefill(S.T0) == 0
        offline = {"schema": "humus/v1/status", "state": "offline", "site": "farm-a", "gateway": "gw-1"}
        service.take("humus/v1/farm-a/gw-1/status", json.dumps(offline).encode(), S.T0, [], [])
        service.evaluate(S.T0 + 60 * NS)
        online = S.status_doc("farm-a", "gw-1", S.StatusPoint(S.T0, True))
        service.take("humus/v1/farm-a/gw-1/status", json.dumps(online).encode(), S.T0 + 120 * NS, [], [])
        service.evaluate(S.T0 + 180 * NS)
        store = service.history.store
        rows = [json.loads(line) for line in store.raw_query(
            "SELECT state, firing, summary FROM humus_alert GROUP BY alertname, gateway", "test", chunked=False)]
    finally:
        service.close()
    (series,) = rows[0]["results"][0]["series"]
    assert series["tags"] == {"alertname": "gateway_offline", "gateway": "gw-1"}
    assert [(v[0], v[1], v[2]) for v in series["values"]] == [
        (S.T0 + 60 * NS, "firing", 1), (S.T0 + 180 * NS, "resolved", 0)]
