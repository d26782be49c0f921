"""`humus alerts --config observatory.toml`: the central alerts daemon.

It subscribes, with its own client id and its own subscriptions (never the
ingest workers' shared group, and it acknowledges only its own copies), to

- ``humus/v1/+/+/obs``: observation batches (plain, or ``$share/<group>/``
  between several alerts services), decoded with the wire contract's own
  validation (observatory.validate);
- ``humus/v1/+/+/status``: the gateways' retained status and last will;
- ``humus/v1/+/+/alerts``: the events gateways raise themselves.

At start it reads the rules' look-back from the archive and the gateway
history from its state, so a restart neither forgets a probe's last value
nor re-sends an alert it already sent. Every ``eval_interval_s`` (on whole
multiples of it since 1970, as the replay does) it evaluates the rules,
advances the life cycle, saves state and history, and hands the alerts to
Alertmanager or to the built-in notifier. A payload it cannot read is
counted and logged once per gateway and reason, never a traceback.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable

from humus.mqtt import connect_persistent, make_client
from humus.records import ID_PATTERN
from humus.wire import OBS_SUBSCRIPTION, TOPIC_ROOT, WireError
from observatory.alerts.buffers import NS, GatewayEventRecord, StatusPoint
from observatory.alerts.config import AlertsConfig, sqlite_path
from observatory.alerts.engine import Engine, align, next_tick
from observatory.alerts.lifecycle import AlertState, Transition, fingerprint
from observatory.alerts.notify.courier import Channel
from observatory.alerts.rules import archive_plan, lookback_s
from observatory.alerts.state import AlertStore
from observatory.store import Selection, StoreError
from observatory.validate import Validator

log = logging.getLogger("humus.alerts")

STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"
EVENTS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/alerts"
MAX_EVENT_BYTES = 64 * 1024
PRUNE_EVERY_S = 3600.0
CENTRE_TOPICS = f"{TOPIC_ROOT}/_"
"""humus/v1/_observatory/...: where the ingest workers publish their own status (observatory/metrics.py)."""


def obs_subscription(cfg: AlertsConfig) -> str:
    if cfg.alerts.obs_subscription == "shared":
        return f"$share/{cfg.alerts.group}/{OBS_SUBSCRIPTION}"
    return OBS_SUBSCRIPTION


def _topic_ids(topic: str, leaf: str) -> tuple[str, str] | None:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != leaf:
        return None
    site, gw = parts[2], parts[3]
    if not (ID_PATTERN.fullmatch(site) and ID_PATTERN.fullmatch(gw)):
        return None
    return site, gw


class AlertsService:
    """The daemon; usable in-process (`humus demo`, tests) with `clock` and `extra_channels`."""

    def __init__(self, cfg: AlertsConfig, *, clock: Callable[[], int] = time.time_ns,
                 extra_channels: Iterable[Channel] = (), connect: bool = True) -> None:
        self.cfg = cfg
        a = cfg.alerts
        self.clock = clock
        self.engine = Engine(a.rules, a.resolved_retention_s)
        self.engine.on_rule_error = self._rule_failed
        self.state = AlertStore(cfg.state_file)
        self.engine.lifecycle.restore(self.state.load())
        self.validator = Validator(max_future_s=86400.0 * 365 * 10)
        self.counts: Counter = Counter()
        self._logged: set[tuple] = set()
        self._queue: queue.Queue = queue.Queue()
        self._client: Any = None
        self._connected = threading.Event()
        self.subscribed = threading.Event()
        self._last_tick: int | None = None
        self._last_prune = 0.0
        self._closing = False
        self.history = None
        if not sqlite_path(a.store):
            from observatory.alerts.influx_history import InfluxHistory
            self.history = InfluxHistory(a.store)
        self.alertmanager = None
        self.builtin = None
        if a.alertmanager.url:
            from observatory.alerts.notify.alertmanager import AlertmanagerNotifier
            self.alertmanager = AlertmanagerNotifier(a.alertmanager)
        else:
            from observatory.alerts.notify.builtin import BuiltinNotifier
            self.builtin = BuiltinNotifier(a.notify, self.state, [*self._channels(), *extra_channels])
        if connect:
            self._client = self._make_client()

    # -- delivery channels ----------------------------------------------------------------------

    def _channels(self) -> list[Channel]:
        n = self.cfg.alerts.notify
        out: list[Channel] = []
        if n.log:
            from observatory.alerts.notify.log import LogChannel
            out.append(LogChannel())
        if n.mqtt:
            from observatory.alerts.notify.mqtt import MqttChannel
            out.append(MqttChannel(self._publish, n.mqtt_topic))
        for url in n.webhook_urls:
            from observatory.alerts.notify.webhook import WebhookChannel
            out.append(WebhookChannel(url, n.webhook_attempts, n.webhook_timeout_s))
        if n.email.host and n.email.to:
            from observatory.alerts.notify.email import EmailChannel
            out.append(EmailChannel(n.email))
        if n.apprise_urls:
            from observatory.alerts.notify.apprise import AppriseChannel
            out.append(AppriseChannel(n.apprise_urls))
        return out

    def _publish(self, topic: str, payload: bytes) -> None:
        if self._client is None:
            raise RuntimeError("no MQTT client")
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != 0:
            raise RuntimeError(f"publish to {topic} refused (paho rc {info.rc}); not connected?")

    # -- MQTT ---------------------------------------------------------------------------------

    def _make_client(self):
        m = self.cfg.mqtt
        client = make_client(m, self.cfg.alerts.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        connect_persistent(client, m, reconnect_max_s=30)
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        m = self.cfg.mqtt
        if reason_code.is_failure:
            self._once(("connect", str(reason_code)), logging.ERROR,
                       "broker %s:%d refused %s: %s; check [mqtt] username/password_file and the broker's ACL",
                       m.host, m.port, self.cfg.alerts.client_id, reason_code)
            return
        self._connected.set()
        topics = [(obs_subscription(self.cfg), 1), (STATUS_SUBSCRIPTION, 1), (EVENTS_SUBSCRIPTION, 1)]
        log.info("alerts connected to %s:%d as %s; subscribing to %s", m.host, m.port, self.cfg.alerts.client_id,
                 ", ".join(t for t, _ in topics))
        client.subscribe(topics)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("broker refused an alerts subscription (%s); check the broker's ACL for %s", bad[0],
                      self.cfg.alerts.client_id)
        else:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("alerts lost the broker %s:%d (%s); reconnecting. Check the broker is running",
                        self.cfg.mqtt.host, self.cfg.mqtt.port, reason_code)
        self._connected.clear()
        self.subscribed.clear()

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put((msg.topic, bytes(msg.payload), self.clock()))

    def _once(self, key: tuple, level: int, fmt: str, *args: Any) -> None:
        if key not in self._logged and len(self._logged) < 10_000:
            self._logged.add(key)
            log.log(level, fmt, *args)

    # -- input ----------------------------------------------------------------------------------

    def pump(self, limit: int = 100_000) -> int:
        """Move received messages into the engine (and gateway history into the state); how many."""
        statuses: list[tuple[str, str, StatusPoint]] = []
        events: list[tuple[str, str, GatewayEventRecord]] = []
        n = 0
        while n < limit:
            try:
                topic, payload, recv_ns = self._queue.get_nowait()
            except queue.Empty:
                break
            n += 1
            self.take(topic, payload, recv_ns, statuses, events)
        if statuses or events:
            try:
                self.state.record_gateway(statuses, events)
            except StoreError as e:
                self._once(("state", str(e)[:80]), logging.ERROR, "alerts: cannot record gateway history: %s; "
                           "check the state file %s (disk space, permissions)", e, self.cfg.state_file)
        return n

    def take(self, topic: str, payload: bytes, recv_ns: int, statuses: list, events: list) -> None:
        if topic.endswith("/obs"):
            try:
                batch = self.validator.check(topic, payload, now_ns=recv_ns)
            except WireError as e:
                self._reject(topic, e.reason.value, str(e))
                return
            except Exception as e:  # noqa: BLE001 - a decoder bug must not stop alerting
                self._reject(topic, "bad_schema", f"{type(e).__name__}: {e}")
                return
            self.counts["batches"] += 1
            self.counts["observations"] += self.engine.take_observations(batch.observations)
            return
        if topic.startswith(CENTRE_TOPICS):
            return       # the centre's own services (ingest workers' status), not gateways
        leaf = topic.rsplit("/", 1)[-1]
        ids = _topic_ids(topic, leaf)
        if ids is None or leaf not in ("status", "alerts"):
            self._reject(topic, "bad_topic", "not humus/v1/<site>/<gateway>/status|alerts with valid ids")
            return
        if not payload:
            return       # a cleared retained status
        try:
            if len(payload) > MAX_EVENT_BYTES:
                raise ValueError(f"{len(payload)} bytes, more than {MAX_EVENT_BYTES}")
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            if doc.get("site", ids[0]) != ids[0] or doc.get("gateway", ids[1]) != ids[1]:
                raise ValueError("site/gateway differ from the topic's")
        except (ValueError, UnicodeDecodeError) as e:
            self._reject(topic, "malformed_json", str(e)[:200])
            return
        site, gw = ids
        if leaf == "status":
            point = StatusPoint.from_doc(recv_ns, doc)
            self.counts["statuses"] += 1
            if self.engine.take_status(site, gw, point):
                statuses.append((site, gw, point))
        else:
            kind = doc.get("kind")
            if not isinstance(kind, str) or not kind:
                self._reject(topic, "bad_value", "an alert event without a 'kind'")
                return
            e = GatewayEventRecord(recv_ns, kind[:64], str(doc.get("subject", ""))[:128],
                                   str(doc.get("message", ""))[:400])
            self.counts["events"] += 1
            self.engine.take_event(site, gw, e)
            events.append((site, gw, e))

    def _rule_failed(self, rule: str, e: Exception) -> None:
        self.counts[f"rule_errors_{rule}"] += 1
        self._once(("rule", rule, type(e).__name__), logging.ERROR,
                   "alerts: rule %s failed (%s: %s); it is skipped where it fails and its alerts keep their state. "
                   "A bug to report with this line; [alerts.rules.%s] enabled = false turns it off", rule,
                   type(e).__name__, str(e)[:200], rule)

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        self.counts["rejected"] += 1
        self.counts[f"rejected_{reason}"] += 1
        self._once(("reject", topic[:200], reason), logging.WARNING,
                   "alerts: ignored a message on %s (%s: %s); check the gateway publishing there "
                   "(its version, and the broker's ACL)", topic[:200], reason, detail[:200])

    def prefill(self, now_ns: int | None = None) -> int:
        """Read the rules' look-back from the archive and the gateway history from the state; rows read."""
        from observatory.stores import open_store

        now_ns = self.clock() if now_ns is None else now_ns
        rules = self.cfg.alerts.rules
        rows = 0
        try:
            store = open_store(self.cfg.alerts.store, create=False)
        except StoreError as e:
            log.warning("alerts: cannot read the archive at start (%s); rules that look back start empty. "
                        "Check [alerts] store", e)
            store = None
        if store is not None:
            try:
                for quantity, seconds in archive_plan(rules):
                    sel = Selection(quantity=quantity, since_ns=now_ns - int(seconds * NS), until_ns=now_ns + 1)
                    for s in store.columns(sel):
                        self.engine.take_series(s)
                        rows += len(s.time_ns)
            except StoreError as e:
                log.warning("alerts: reading the archive at start failed (%s); rules that look back start "
                            "with what arrives from now on. Check [alerts] store", e)
            finally:
                store.close()
        since = now_ns - int(lookback_s(rules, None) * NS)
        statuses, events = self.state.gateway_history(since, now_ns + 1)
        for site, gw, p in statuses:
            self.engine.take_status(site, gw, p)
        for site, gw, e in events:
            self.engine.take_event(site, gw, e)
        return rows + len(statuses) + len(events)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, t_ns: int) -> list[Transition]:
        """One evaluation at `t_ns`: rules, life cycle, state, history, notifications."""
        before = {k: a.state for k, a in self.engine.lifecycle.alerts.items()}
        transitions = self.engine.step(t_ns)
        alerts = list(self.engine.lifecycle.alerts.values())
        gone = [a_key for a_key in before if a_key not in self.engine.lifecycle.alerts]
        try:
            self.state.save(alerts, transitions, [fingerprint(r, labels) for r, labels in gone])
        except StoreError as e:
            self._once(("state-save", str(e)[:80]), logging.ERROR, "alerts: cannot save alert state: %s; check "
                       "the state file %s (disk space, permissions)", e, self.cfg.state_file)
        for t in transitions:
            log.info("alert %s %s %s: %s", t.state.value, t.alert.rule, t.alert.subject, t.alert.summary)
        if self.history is not None and transitions:
            try:
                self.history.write(transitions)
            except StoreError as e:
                self._once(("history", str(e)[:80]), logging.WARNING, "alerts: cannot write alert history to "
                           "InfluxDB: %s; check [alerts] store", e)
        changed = bool(transitions) or any(a.state is AlertState.FIRING and before.get(a.key) is None
                                           for a in alerts)
        if self.alertmanager is not None:
            self.alertmanager.tick(t_ns, alerts, changed)
        else:
            self.builtin.tick(t_ns, alerts)
        self._last_tick = t_ns
        return transitions

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: take messages, evaluate at every tick, prune history hourly."""
        interval = self.cfg.alerts.eval_interval_s
        if self._client is not None:
            self._client.loop_start()
        try:
            rows = self.prefill()
            enabled = sum(1 for r in vars(self.cfg.alerts.rules).values() if r.enabled)
            via = f"Alertmanager {self.cfg.alerts.alertmanager.url}" if self.alertmanager else "the built-in notifier"
            log.info("alerts running: %d rule(s), evaluation every %g s, %d archived rows read at start, "
                     "%d alert(s) restored; notifying via %s", enabled, interval, rows,
                     len(self.engine.lifecycle.alerts), via)
            tick = next_tick(self.clock(), interval)
            while not stop.is_set():
                self.alive_mono = time.monotonic()
                self.pump()
                now = self.clock()
                if now >= tick:
                    try:
                        self.evaluate(align(now, interval))
                    except Exception as e:  # noqa: BLE001 - the daemon keeps alerting; one line, no traceback
                        self._once(("evaluate", type(e).__name__), logging.ERROR,
                                   "alerts: an evaluation failed (%s: %s); retrying at the next tick. A bug to "
                                   "report with this line", type(e).__name__, str(e)[:300])
                    tick = next_tick(now, interval)
                    if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                        self._last_prune = time.monotonic()
                        self._prune(now)
                stop.wait(min(0.2, max(0.0, (tick - self.clock()) / NS)))
        finally:
            self.close()

    def _prune(self, now_ns: int) -> None:
        try:
            self.state.prune(now_ns - int(self.cfg.alerts.history_days * 86400 * NS))
        except StoreError as e:
            self._once(("prune", str(e)[:80]), logging.WARNING, "alerts: pruning history failed: %s", e)

    def flush(self, timeout: float = 10.0) -> bool:
        n = self.alertmanager or self.builtin
        return n.flush(timeout)

    def close(self) -> None:
        self._closing = True
        n = self.alertmanager or self.builtin
        if n is not None:
            n.close()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self.history is not None:
            self.history.close()
            self.history = None
        self.state.close()

    def start(self) -> "AlertsService":
        """Connect (background network thread) without running the loop: for tests that drive `evaluate`."""
        if self._client is not None:
            self._client.loop_start()
        return self


def run_daemon(cfg: AlertsConfig) -> int:
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = AlertsService(cfg)
    service.alive_mono = time.monotonic()
    from humus.systemd import feed_watchdog

    feeding = threading.Thread(target=feed_watchdog, args=("alerts", lambda: service.alive_mono, stop),
                               name="sd-notify", daemon=True)
    feeding.start()
    try:
        service.run(stop)
    finally:
        stop.set()
    log.info("alerts stopped")
    return 0


def start_in_thread(cfg: AlertsConfig, say: Callable[[str], None] | None = None) -> Callable[[], None]:
    """Run the service in a thread of this process (`humus demo`); returns the function that stops it.

    With `say`, each notification is also handed to it as text (the demo prints it).
    """
    from observatory.alerts.notify.log import CallbackChannel

    def show(title: str, body: str) -> None:
        say("alert: " + title)
        for line in body.rstrip().splitlines():
            say("       " + line.strip())

    service = AlertsService(cfg, extra_channels=[CallbackChannel(show)] if say else [])
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="alerts", daemon=True)
    thread.start()

    def stop_it() -> None:
        stop.set()
        thread.join(15)

    return stop_it
