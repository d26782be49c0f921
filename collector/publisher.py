"""Store-and-forward to the broker: spool -> numbered batches -> QoS 1 -> PUBACK -> delete.

One thread owns the paho client and runs its network loop itself
(`client.loop`), so callbacks (CONNACK, PUBACK) arrive on this thread and
need no locking. Per turn it:

1. reconnects when down, after an exponential back-off with full jitter
   (``uniform(min, current)``, AWS Architecture Blog, "Exponential Backoff
   And Jitter", 2015), so a field of gateways does not stampede a broker
   that comes back;
2. deletes the batches the broker acknowledged (PUBACK, MQTT 3.1.1 §4.3.2 /
   MQTT 5 §4.3.2: the receiver owns the message from then on);
3. tops the in-flight window up to ``max_inflight_messages``: live data first
   (observations spooled since the connection came up), then the backlog
   (batches formed before a crash, then older observations) through a token
   bucket of ``backlog_messages_per_s``, so a week-long backlog drains
   steadily and today's readings are never stuck behind it;
4. refreshes the retained status (heartbeat) every ``heartbeat_s``.

The session is persistent (MQTT 5 clean start off with a session expiry;
3.1.1 clean session off): messages published before a drop are resent by
paho with the same packet id on reconnect, and the broker keeps our QoS 1
state. After a process restart the spool republishes its formed batches
with their original seq and bytes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from collector.config import GatewayConfig
from collector.spool import Spool, SpooledBatch
from collector.status import GatewayState, alert_payload, offline_payload
from humus.mqtt import make_client
from humus.wire import alerts_topic, obs_topic, status_topic

log = logging.getLogger(__name__)

LINGER_S = 0.05
"""Wait this long after new data arrives so one poll cycle of many probes goes out as one message."""


class Publisher:
    def __init__(self, cfg: GatewayConfig, spool: Spool, state: GatewayState, wake: threading.Event,
                 status_fn: Callable[[], dict[str, Any]]) -> None:
        self.cfg = cfg
        self.spool = spool
        self.state = state
        self.wake = wake
        self.status_fn = status_fn
        g = cfg.gateway
        self.obs_topic = obs_topic(g.site, g.id)
        self.status_topic = status_topic(g.site, g.id)
        self.alerts_topic = alerts_topic(g.site, g.id)
        self.pub = cfg.publish
        self.client: Any = None
        self.connected = False
        self.inflight: dict[int, int] = {}          # mid -> seq
        self._acks: list[tuple[int, bool]] = []
        self._republish: list[SpooledBatch] = []     # formed before this process started
        self._republish_loaded = False
        self._last_republished_seq = 0
        self.live_mark = 0
        self._tokens = 1.0
        self._tokens_at = time.monotonic()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._next_heartbeat = 0.0
        self._pending_alerts: list[bytes] = []
        self.alive_mono = time.monotonic()
        self.thread: threading.Thread | None = None
        self.published_seqs: list[int] = []
        self._closing = False
        self._maybe_more = True

    # -- paho callbacks (called from client.loop on this thread) ---------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s:%s refused the connection (%s); check mqtt.username, the password file "
                        "and the broker's ACL", self.cfg.mqtt.host, self.cfg.mqtt.port, reason_code)
            return
        self.connected = True
        self._backoff = 0.0
        self.live_mark = self.spool.max_obs_id()
        with self.state.lock:
            self.state.mqtt["connected"] = True
        log.info("connected to broker %s:%s as %s (session present: %s)", self.cfg.mqtt.host, self.cfg.mqtt.port,
                 self.cfg.client_id(), getattr(flags, "session_present", "?"))
        self._next_heartbeat = 0.0

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.connected and not self._closing:
            log.warning("lost the broker %s:%s (%s); observations stay in the spool, reconnecting with back-off",
                        self.cfg.mqtt.host, self.cfg.mqtt.port, reason_code)
        self.connected = False
        with self.state.lock:
            self.state.mqtt["connected"] = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.append((mid, not getattr(reason_code, "is_failure", False)))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self.run, args=(stop,), name="publisher", daemon=True)
        self.thread.start()

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt

        c = make_client(self.cfg.mqtt, self.cfg.client_id())
        c.on_connect, c.on_disconnect, c.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        c.will_set(self.status_topic, offline_payload(self.cfg.gateway.site, self.cfg.gateway.id), qos=1, retain=True)
        c.max_inflight_messages_set(self.pub.max_inflight_messages + 5)   # + status and alerts
        c.max_queued_messages_set(0)
        self._mqtt = mqtt
        return c

    def _connect(self) -> None:
        now = time.monotonic()
        if now < self._next_attempt:
            return
        m = self.cfg.mqtt
        try:
            if self.client is None:
                self.client = self._make_client()
            if m.protocol == "5":
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = m.session_expiry_s
                self.client.connect(m.host, m.port, m.keepalive_s, clean_start=False, properties=props)
            else:
                self.client.connect(m.host, m.port, m.keepalive_s)
            with self.state.lock:
                self.state.mqtt["reconnects"] += 1
        except (OSError, ValueError) as e:
            pub = self.pub
            self._backoff = pub.reconnect_min_s if not self._backoff else min(self._backoff * 2, pub.reconnect_max_s)
            delay = random.uniform(pub.reconnect_min_s, max(pub.reconnect_min_s, self._backoff))
            self._next_attempt = now + delay
            log.warning("cannot reach broker %s:%s (%s); retrying in %.1f s, check the network and the broker",
                        m.host, m.port, e, delay)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.alive_mono = time.monotonic()
                self.turn()
        except Exception:  # noqa: BLE001
            log.exception("publisher failed; the spool keeps every observation, the watchdog will restart us")
            raise
        finally:
            self._shutdown()

    def turn(self) -> None:
        if self.client is None or not (self.connected or self._socket_open()):
            self._connect()
            if self.client is None or not self._socket_open():
                self.wake.wait(0.2)
                return
        rc = self.client.loop(timeout=0.1)
        if rc != self._mqtt.MQTT_ERR_SUCCESS and not self.connected:
            self._on_disconnect(self.client, None, None, rc, None)
            self._close_socket()
            return
        self._process_acks()
        if not self.connected:
            return
        self._fill()
        self._heartbeat()

    def _socket_open(self) -> bool:
        return self.client is not None and self.client.socket() is not None

    def _close_socket(self) -> None:
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.client.loop(timeout=0.01)
        except Exception:  # noqa: BLE001
            pass
        self._backoff = self.pub.reconnect_min_s if not self._backoff else min(self._backoff * 2, self.pub.reconnect_max_s)
        self._next_attempt = time.monotonic() + random.uniform(self.pub.reconnect_min_s,
                                                               max(self.pub.reconnect_min_s, self._backoff))

    # -- acknowledgements ---------------------------------------------------------------
    def _process_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        done, failed = [], []
        for mid, ok in acks:
            seq = self.inflight.pop(mid, None)
            if seq is None:
                continue          # status or alert message
            (done if ok else failed).append(seq)
        if done:
            self.spool.ack(done)
            with self.state.lock:
                self.state.mqtt["acked"] += len(done)
        if failed:
            with self.state.lock:
                self.state.mqtt["rejected"] += len(failed)
            log.warning("broker refused %d batch(es) (seq %s...); kept in the spool and retried at the backlog rate; "
                        "check the broker's ACL for topic %s", len(failed), failed[0], self.obs_topic)
            self._republish.extend(b for b in self.spool.pending_batches(min(failed) - 1, len(failed) + 100)
                                   if b.seq in set(failed))

    # -- publishing ------------------------------------------------------------------------
    def _tokens_available(self) -> bool:
        now = time.monotonic()
        rate = self.pub.backlog_messages_per_s
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return self._tokens >= 1.0

    def _fill(self) -> None:
        if not self._republish_loaded:
            self._republish = self.spool.pending_batches(0, 100000)
            self._republish_loaded = True
        pub = self.pub
        if self.wake.is_set():
            time.sleep(LINGER_S)     # let the rest of this poll cycle land: one message, not one per probe
            self.wake.clear()
            self._maybe_more = True
        if not (self._maybe_more or self._republish or self.live_mark):
            return          # nothing new since the last empty look: skip the query
        self._maybe_more = False
        while len(self.inflight) < pub.max_inflight_messages:
            batch = self.spool.form_batch(max_obs=pub.max_batch_observations, max_bytes=pub.max_batch_bytes,
                                          after_id=self.live_mark)
            if batch is None:
                if not self._tokens_available():
                    break
                if self._republish:
                    batch = self._republish.pop(0)
                elif self.live_mark:
                    batch = self.spool.form_batch(max_obs=pub.max_batch_observations,
                                                  max_bytes=pub.max_batch_bytes, up_to_id=self.live_mark)
                    if batch is None:
                        self.live_mark = 0   # backlog drained: everything is live again
                if batch is None:
                    break
                self._tokens -= 1.0
            self._send(batch)
        else:
            self._maybe_more = True     # window full: look again when an ack frees a slot

    def _send(self, batch: SpooledBatch) -> None:
        info = self.client.publish(self.obs_topic, batch.payload, qos=1)
        self.inflight[info.mid] = batch.seq
        self.published_seqs.append(batch.seq)
        if len(self.published_seqs) > 10000:
            del self.published_seqs[:5000]
        with self.state.lock:
            self.state.mqtt["published"] += 1

    def _heartbeat(self) -> None:
        now = time.monotonic()
        while self._pending_alerts:
            self.client.publish(self.alerts_topic, self._pending_alerts.pop(0), qos=1)
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.cfg.gateway.heartbeat_s
        import json

        try:
            payload = json.dumps(self.status_fn(), separators=(",", ":"), default=str).encode()
        except Exception:  # noqa: BLE001
            log.exception("cannot build the status payload")
            return
        self.client.publish(self.status_topic, payload, qos=1, retain=True)

    def alert(self, kind: str, subject: str, message: str, **extra: Any) -> None:
        """Queue an alert for the alerts topic (sent when connected; dropped beyond 100 queued)."""
        if len(self._pending_alerts) < 100:
            self._pending_alerts.append(alert_payload(self.cfg.gateway.site, self.cfg.gateway.id, kind, subject,
                                                      message, **extra))

    def heartbeat_now(self) -> None:
        self._next_heartbeat = 0.0

    def _shutdown(self) -> None:
        """Clean stop: say 'offline' (retained), wait briefly for outstanding PUBACKs, disconnect."""
        if self.client is None:
            return
        self._closing = True
        try:
            if self.connected:
                info = self.client.publish(self.status_topic,
                                           offline_payload(self.cfg.gateway.site, self.cfg.gateway.id),
                                           qos=1, retain=True)
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline and self.connected and (self.inflight or not info.is_published()):
                    self.client.loop(timeout=0.05)
                    self._process_acks()
            self.client.disconnect()
            self.client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001 - shutting down; the spool is durable anyway
            pass
