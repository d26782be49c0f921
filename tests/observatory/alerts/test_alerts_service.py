"""The alerts service against a real Mosquitto: live run vs replay, notifications on every channel, restarts."""

from __future__ import annotations

import json

import pytest

import alerts_support as S
from humus.wire import encode_batch
from observatory.alerts.config import load_alerts_config
from observatory.alerts.replay import replay, timeline_from_history
from observatory.alerts.service import AlertsService
from observatory.alerts.state import AlertStore
from observatory.stores import open_store

pytestmark = pytest.mark.timeout(120)


def write_config(tmp_path, mosquitto, extra: str = "") -> str:
    path = tmp_path / "observatory.toml"
    path.write_text(f"""
[ingest]
store = "sqlite:{tmp_path / 'archive.sqlite'}"

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
protocol = "5"

[alerts]
client_id = "alerts-test"
eval_interval_s = 900
{extra}
""")
    return str(path)


def publisher(mosquitto, client_id="test-gateway"):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    return c


def publish(c, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def test_a_live_run_and_a_replay_over_its_archive_give_the_same_timeline(tmp_path, mosquitto):
    season = S.faulty_season(days=6)
    cfg = load_alerts_config(write_config(tmp_path, mosquitto, "[alerts.notify]\nlog = false\nmqtt = false"))
    clock = S.FakeClock(season.start_ns)
    store = open_store(cfg.store)
    service = AlertsService(cfg, clock=clock).start()
    gw = publisher(mosquitto)
    try:
        assert service.subscribed.wait(10)
        obs = sorted(season.observations, key=lambda o: o.time_ns)
        statuses = sorted(season.statuses, key=lambda s: s[2].time_ns)
        i = j = seq = published = sent_statuses = 0
        t = season.start_ns
        while t <= season.end_ns:
            clock.t = t
            batch = []
            while i < len(obs) and obs[i].time_ns <= t:
                batch.append(obs[i])
                i += 1
            window = []                                    # one status per tick: the last will wins
            while j < len(statuses) and statuses[j][2].time_ns <= t:
                window.append(statuses[j][2])
                j += 1
            offline = [p for p in window if not p.online]
            latest = offline[-1] if offline else window[-1] if window else None
            if batch:
                store.write(batch)                         # what ingest stores
                publish(gw, f"humus/v1/{S.SITE}/{S.GATEWAY}/obs", encode_batch(S.SITE, S.GATEWAY, seq, batch))
                seq += 1
                published += 1
            if latest is not None:
                doc = S.status_doc(S.SITE, S.GATEWAY, latest)
                publish(gw, f"humus/v1/{S.SITE}/{S.GATEWAY}/status", json.dumps(doc).encode(), retain=True)
                sent_statuses += 1
            S.wait_for(lambda: service.pump() >= 0 and service.counts["batches"] == published
                       and service.counts["statuses"] == sent_statuses, what="the service to receive the tick")
            service.evaluate(t)
            t += 900 * 10**9
        live = timeline_from_history(service.state.history())
    finally:
        gw.loop_stop()
        gw.disconnect()
        service.close()
    assert service.counts["rejected"] == 0
    assert {e.rule for e in live} >= {"no_data", "gateway_offline", "flat_line", "spool_backlog"}
    again = replay(store, season.start_ns, season.end_ns, cfg.alerts.rules, step_s=900,
                   state_path=tmp_path / "archive.sqlite")
    store.close()
    assert [e.key() for e in again.timeline] == [e.key() for e in live]


def test_notifications_reach_mqtt_webhook_and_email_and_a_restart_resends_nothing(tmp_path, mosquitto):
    hook = S.WebhookSink(fail_first=1)               # the first POST fails: the courier retries
    smtp = S.SmtpSink(tmp_path)
    pw = tmp_path / "smtp.password"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    extra = f"""
[alerts.rules.gateway_offline]
for_s = 0
[alerts.notify]
group_wait_s = 0
group_interval_s = 0
webhook_urls = ["{hook.url}"]
[alerts.notify.email]
host = "127.0.0.1"
port = {smtp.port}
security = "starttls"
username = "alerts"
password_file = "{pw}"
sender = "alerts@farm.example"
to = ["field-team@farm.example"]
ca_file = "{smtp.ca_file}"
"""
    cfg = load_alerts_config(write_config(tmp_path, mosquitto, extra))
    got: list = []
    listener = publisher(mosquitto, "listener")
    listener.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    listener.subscribe("humus/v1/farm-a/alerts", qos=1)
    gw = publisher(mosquitto)
    status_topic = "humus/v1/farm-a/gw-1/status"
    clock = S.FakeClock(S.T0)
    service = AlertsService(cfg, clock=clock).start()
    try:
        assert service.subscribed.wait(10)
        online = S.status_doc("farm-a", "gw-1", S.StatusPoint(S.T0, True, disk_free_bytes=8e9))
        publish(gw, status_topic, json.dumps(online).encode(), retain=True)
        S.wait_for(lambda: service.pump() >= 0 and service.counts["statuses"] == 1)
        assert service.evaluate(S.T0) == []
        clock.t = S.T0 + 900 * 10**9
        publish(gw, status_topic, json.dumps({"schema": "humus/v1/status", "state": "offline", "site": "farm-a",
                                              "gateway": "gw-1"}).encode(), retain=True)
        S.wait_for(lambda: service.pump() >= 0 and service.counts["statuses"] == 2)
        (fired,) = service.evaluate(clock.t)
        assert fired.alert.rule == "gateway_offline"
        posts = hook.wait(1)
        mails = smtp.wait(1)
        S.wait_for(lambda: len(got) == 1, what="the MQTT notification")
    finally:
        service.close()
    assert hook.refused == 1
    doc = posts[0]
    assert doc["status"] == "firing" and doc["version"] == "4" and doc["groupLabels"] == {"site": "farm-a"}
    labels = doc["alerts"][0]["labels"]
    assert {k: labels[k] for k in ("alertname", "site", "gateway", "severity")} == {
        "alertname": "gateway_offline", "site": "farm-a", "gateway": "gw-1", "severity": "critical"}
    assert "check" in doc["alerts"][0]["annotations"] and doc["alerts"][0]["startsAt"].startswith("2026-01-01T00:15")
    rcpt, mail, over_tls = mails[0]
    assert rcpt == ["field-team@farm.example"] and over_tls and smtp.logins == ["alerts"]
    assert mail["Subject"] == "[FIRING:1] farm-a: gateway_offline on farm-a/gw-1"
    body = mail.get_payload()
    assert "since 2026-01-01 00:15:00Z" in body and "check:" in body
    assert got[0]["schema"] == "humus/v1/notification" and got[0]["alerts"][0]["labels"]["gateway"] == "gw-1"

    # Restart: the alert is still firing; nothing is sent again. Then the gateway comes back: one "resolved".
    clock.t = S.T0 + 1800 * 10**9
    service = AlertsService(cfg, clock=clock).start()
    try:
        assert service.subscribed.wait(10)
        S.wait_for(lambda: service.pump() >= 0 and service.counts["statuses"] == 1, what="the retained status")
        assert [a.rule for a in service.engine.lifecycle.firing()] == ["gateway_offline"]
        assert service.evaluate(clock.t) == []
        assert service.flush(5)
        assert len(hook.posts) == 1 and len(smtp.messages) == 1 and len(got) == 1
        clock.t = S.T0 + 2700 * 10**9
        publish(gw, status_topic, json.dumps(online).encode(), retain=True)
        S.wait_for(lambda: service.pump() >= 0 and service.counts["statuses"] == 2)
        (resolved,) = service.evaluate(clock.t)
        assert resolved.state.value == "resolved"
        posts = hook.wait(2)
        mails = smtp.wait(2)
    finally:
        service.close()
        gw.loop_stop()
        listener.loop_stop()
        hook.close()
        smtp.close()
    assert posts[1]["status"] == "resolved" and posts[1]["alerts"][0]["status"] == "resolved"
    assert mails[1][1]["Subject"].startswith("[RESOLVED] farm-a: gateway_offline")
    with AlertStore(tmp_path / "archive.sqlite") as st:
        assert [r.state for r in st.history()] == ["firing", "resolved"]


def test_unreadable_messages_are_counted_and_logged_never_raised(tmp_path, mosquitto, caplog):
    cfg = load_alerts_config(write_config(tmp_path, mosquitto, "[alerts.notify]\nmqtt = false"))
    service = AlertsService(cfg).start()
    gw = publisher(mosquitto)
    try:
        assert service.subscribed.wait(10)
        for topic, payload in [("humus/v1/farm-a/gw-1/obs", b"{not json"),
                               ("humus/v1/farm-a/gw-1/status", b"\xff\xfe"),
                               ("humus/v1/farm-a/gw-1/status", b'{"site": "other", "state": "online"}'),
                               ("humus/v1/farm-a/gw-1/alerts", b'{"message": "no kind"}'),
                               ("humus/v1/farm-a/gw-1/alerts", b"[1, 2]")]:
            publish(gw, topic, payload)
        S.wait_for(lambda: service.pump() >= 0 and service.counts["rejected"] == 5)
        service.evaluate(S.T0)
    finally:
        gw.loop_stop()
        service.close()
    lines = [r.getMessage() for r in caplog.records if "ignored a message" in r.getMessage()]
    assert len(lines) == 4 and all("check the gateway" in x for x in lines)    # once per topic and reason
    assert not [r for r in caplog.records if r.exc_info]
