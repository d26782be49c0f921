"""Alerts delivered to a real Prometheus Alertmanager: received with labels, grouped per site, resolved, silenced."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

import alerts_support as S
import servers
from humus.cli import main
from observatory.alerts.config import load_alerts_config
from observatory.alerts.service import AlertsService

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hook():
    h = S.WebhookSink()
    yield h
    h.close()


@pytest.fixture
def alertmanager(start_server, hook):
    srv = start_server(servers.alertmanager, "alertmanager", "/-/ready", webhook_url=hook.url)
    yield srv
    srv.stop()


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def status(service: AlertsService, gateway: str, online: bool) -> None:
    doc = S.status_doc("farm-a", gateway, S.StatusPoint(time.time_ns(), online, disk_free_bytes=8e9))
    service.take(f"humus/v1/farm-a/{gateway}/status", json.dumps(doc).encode(), time.time_ns(), [], [])


def test_alertmanager_receives_groups_resolves_and_silences(tmp_path, alertmanager, hook, capsys):
    path = tmp_path / "observatory.toml"
    path.write_text(f"""
[alerts]
store = "sqlite:{tmp_path / 'archive.sqlite'}"
eval_interval_s = 1
[alerts.alertmanager]
url = "{alertmanager.url}"
resend_s = 1
[alerts.rules.gateway_offline]
for_s = 0
""")
    cfg = load_alerts_config(path)
    service = AlertsService(cfg, connect=False)
    try:
        for gw in ("gw-1", "gw-2"):
            status(service, gw, online=False)
        fired = service.evaluate(time.time_ns())
        assert sorted(t.alert.subject for t in fired) == ["farm-a/gw-1", "farm-a/gw-2"]
        assert service.flush(10)
        alerts = S.wait_for(lambda: (lambda a: a if len(a) == 2 else None)(get(alertmanager.url + "/api/v2/alerts")),
                            what="Alertmanager to hold both alerts")
        assert {a["status"]["state"] for a in alerts} == {"active"}
        labels = sorted((a["labels"]["gateway"], a["labels"]["alertname"], a["labels"]["rule"], a["labels"]["site"],
                         a["labels"]["severity"]) for a in alerts)
        assert labels == [("gw-1", "gateway_offline", "gateway_offline", "farm-a", "critical"),
                          ("gw-2", "gateway_offline", "gateway_offline", "farm-a", "critical")]
        ann = alerts[0]["annotations"]
        assert ann["summary"].startswith("gateway farm-a/gw-") and ann["check"] and ann["since"]
        groups = get(alertmanager.url + "/api/v2/alerts/groups")
        assert [(g["labels"], len(g["alerts"])) for g in groups] == [({"site": "farm-a"}, 2)]
        (first,) = hook.wait(1)
        assert first["status"] == "firing" and len(first["alerts"]) == 2 and first["groupLabels"] == {"site": "farm-a"}

        # A silence from the command line goes to Alertmanager.
        assert main(["alerts", "silence", "add", "--config", str(path), "--match", "gateway=gw-2", "--for", "1h",
                     "--comment", "moving the mast"]) == 0
        silence_id = capsys.readouterr().out.split()[1].rstrip(":")
        silences = get(alertmanager.url + "/api/v2/silences")
        assert [(s["id"], s["matchers"][0]["value"], s["status"]["state"]) for s in silences] == [
            (silence_id, "gw-2", "active")]

        # Both gateways come back: Alertmanager is told, and sends its "resolved".
        for gw in ("gw-1", "gw-2"):
            status(service, gw, online=True)
        resolved = service.evaluate(time.time_ns())
        assert [t.state.value for t in resolved] == ["resolved", "resolved"]
        assert service.flush(10)
        posts = hook.wait(2, timeout=20)
        assert posts[-1]["status"] == "resolved"
        S.wait_for(lambda: get(alertmanager.url + "/api/v2/alerts") == [], what="Alertmanager to drop resolved alerts")
    finally:
        service.close()
