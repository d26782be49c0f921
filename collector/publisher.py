"""Store-and-forward to the centre: spool -> numbered batches -> QoS 1 -> receipt -> delete.

One thread owns the paho client and runs its network loop itself (paho's
external-loop calls: ``select`` on the client's socket, then ``loop_read``,
``loop_write``, ``loop_misc``), so callbacks (CONNACK, PUBACK, receipts)
arrive on this thread and need no locking. It sleeps in that ``select`` until
there is something to do: bytes from the broker (CONNACK, PUBACK, a receipt),
a stored poll (the collector's ``wake`` Event, which also writes a byte to a
socket pair in the same ``select``), an alert or a heartbeat asked for, or the
next deadline (heartbeat, receipt timeout, a backlog token); at most
``MAX_IDLE_S`` (the watchdog's sign of life, paho's keepalive). Per turn it:

1. reconnects when down, after an exponential back-off with full jitter
   (``uniform(min, current)``, AWS Architecture Blog, "Exponential Backoff
   And Jitter", 2015), so a field of gateways does not stampede a broker
   that comes back; the worst case between the broker's return and the
   next attempt is ``reconnect_max_s``;
2. handles the broker's PUBACKs (they free the in-flight window) and the
   centre's receipts (`humus.receipts`): a batch is deleted from the spool
   only when a receipt says it is stored, because a PUBACK only says the
   broker took it (Mosquitto acknowledges a message that no worker is
   subscribed to receive, for example just after a restart);
3. re-sends, byte for byte, each batch left unconfirmed for
   ``receipt_timeout_s`` (doubling per attempt up to
   ``receipt_timeout_max_s``) or that the centre asks for;
4. tops the in-flight window up to ``max_inflight_messages`` (and the
   unconfirmed batches up to ``max_unconfirmed_batches``): live data first
   (observations spooled since the connection came up), then the backlog
   (batches formed before a crash, then older observations) through a token
   bucket of ``backlog_messages_per_s``, so a week-long backlog drains
   steadily and today's readings are never stuck behind it;
5. refreshes the retained status (heartbeat) every ``heartbeat_s``.

With ``confirm = "puback"`` (a centre that sends no receipts) step 2
deletes on PUBACK, as MQTT alone allows.

The session is persistent (MQTT 5 clean start off with a session expiry;
3.1.1 clean session off): messages published before a drop are resent by
paho with the same packet id on reconnect, and receipts sent while the
gateway was away wait at the broker. After a process restart the spool
republishes its formed batches with their original seq and bytes.
"""

from __future__ import annotations

import json
import logging
import random
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from collector.config import GatewayConfig
from collector.spool import Spool, SpooledBatch
from collector.status import GatewayState, alert_payload, offline_payload
from humus.mqtt import make_client
from humus.receipts import ReceiptError, decode_receipt, receipt_topic
from humus.wire import alerts_topic, obs_topic, status_topic

log = logging.getLogger(__name__)

LINGER_S = 0.05
"""Wait this long after new data arrives so one poll cycle of many probes goes out as one message."""

MAX_IDLE_S = 1.0
"""The longest the publisher sleeps with nothing to do (alive_mono, keepalive pings, connection checks)."""

RETRY_S = 0.1
"""How soon to look again at a re-send that is due but waits for a free in-flight slot."""

RECEIPT_LOG_EVERY_S = 300.0
"""At most one 'no receipt' warning per this many seconds (an outage of the centre is one problem)."""


@dataclass(slots=True)
class Unconfirmed:
    """A batch the broker took (PUBACK) and the centre has not yet confirmed."""

    first_sent: float      # monotonic
    due: float             # monotonic: re-send at or after this
    attempts: int = 1


class Wake(threading.Event):
    """The collector's "a poll was stored" signal; `set` also calls `on_set` (the publisher's wake-up of
    its select), so a stored poll goes out at once while an idle publisher sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        hook = self.on_set
        if hook is not None:
            hook()


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
        self.receipt_topic = receipt_topic(g.site, g.id)
        self.pub = cfg.publish
        self.client: Any = None
        self.connected = False
        self.inflight: dict[int, int] = {}          # mid -> seq, waiting for the broker's PUBACK
        self.unconfirmed: dict[int, Unconfirmed] = {}   # seq -> waiting for the centre's receipt
        self._confirmed_early: set[int] = set()     # receipts that overtook their PUBACK
        self._acks: list[tuple[int, bool]] = []
        self._receipts: list[bytes] = []
        self._next_due = float("inf")
        self._last_receipt_warning = -RECEIPT_LOG_EVERY_S
        # Batches formed before this process started are republished from the spool, seq by seq.
        self._republish_cursor = 0
        self._republish_below: int | None = None
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
        self._starved = False          # backlog or re-sends wait for a token of backlog_messages_per_s
        # Other threads (a stored poll, an alert, heartbeat_now) break the select through this pair.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_lock = threading.Lock()     # no poke into a closed (and maybe reused) descriptor
        self._wake_closed = False
        self._hook_wake()

    def _hook_wake(self) -> None:
        """Make the collector's `wake.set()` (a poll stored) also break this publisher's select.

        A plain `threading.Event` works too, seen only at the next deadline (at most MAX_IDLE_S)."""
        if isinstance(self.wake, Wake):
            self.wake.on_set = self._poke      # a restarted publisher takes it over

    def _unhook_wake(self) -> None:
        if isinstance(self.wake, Wake) and self.wake.on_set == self._poke:
            self.wake.on_set = None

    def _poke(self) -> None:
        with self._wake_lock:
            if self._wake_closed:
                return
            try:
                self._wake_w.send(b"\0")
            except OSError:      # the pair's buffer is full: a wake-up is pending anyway
                pass

    @property
    def by_receipt(self) -> bool:
        return self.pub.confirm == "receipt"

    # -- paho callbacks (called from client.loop on this thread) ---------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s:%s refused the connection (%s); check mqtt.username, the password file "
                        "and the broker's ACL", self.cfg.mqtt.host, self.cfg.mqtt.port, reason_code)
            return
        self.connected = True
        self._backoff = 0.0
        self.live_mark = self.spool.max_obs_id()
        if self.by_receipt:
            # Subscribed on every connect: a broker restarted without persistence forgets it.
            client.subscribe(self.receipt_topic, qos=1)
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

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic == self.receipt_topic and len(self._receipts) < 10_000:
            self._receipts.append(msg.payload)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self.run, args=(stop,), name="publisher", daemon=True)
        self.thread.start()

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt

        c = make_client(self.cfg.mqtt, self.cfg.client_id())
        c.on_connect, c.on_disconnect, c.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        c.on_message = self._on_message
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
            delay = self._next_backoff()
            log.warning("cannot reach broker %s:%s (%s); retrying in %.1f s, check the network and the broker",
                        m.host, m.port, e, delay)

    def _next_backoff(self) -> float:
        """Full-jitter exponential back-off: the next attempt in uniform(min, current) seconds."""
        pub = self.pub
        self._backoff = pub.reconnect_min_s if not self._backoff else min(self._backoff * 2, pub.reconnect_max_s)
        delay = random.uniform(pub.reconnect_min_s, max(pub.reconnect_min_s, self._backoff))
        self._next_attempt = time.monotonic() + delay
        return delay

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
                self._sleep(min(0.2, max(0.0, self._next_attempt - time.monotonic())))
                return
        rc = self._network(self._idle_timeout())
        if rc != self._mqtt.MQTT_ERR_SUCCESS and not self.connected:
            self._on_disconnect(self.client, None, None, rc, None)
            self._close_socket()
            return
        self._process_acks()
        self._process_receipts()
        if not self.connected:
            return
        self._fill()
        self._heartbeat()

    def _sleep(self, timeout: float) -> None:
        """Wait up to `timeout` for a wake-up from another thread (nothing to do on the network)."""
        if select.select([self._wake_r], [], [], timeout)[0]:
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:      # BlockingIOError: drained
            pass

    def _idle_timeout(self) -> float:
        """How long the select may sleep: until the next deadline, at most MAX_IDLE_S."""
        if not self.connected:
            return MAX_IDLE_S       # the CONNACK arrives on the socket
        if self._acks or self._receipts or self._pending_alerts or self.wake.is_set():
            return 0.0
        now = time.monotonic()
        t = min(MAX_IDLE_S, self._next_heartbeat - now)
        if self.unconfirmed:
            t = min(t, max(RETRY_S, self._next_due - now))
        if self._starved:
            rate = self.pub.backlog_messages_per_s
            t = min(t, max(0.01, (1.0 - self._tokens) / rate) if rate > 0 else MAX_IDLE_S)
        return max(0.0, t)

    def _network(self, timeout: float) -> Any:
        """`client.loop(timeout)` through paho's external-loop calls, with our wake-up socket in the select."""
        client = self.client
        sock = client.socket()
        if sock is None:
            return self._mqtt.MQTT_ERR_NO_CONN
        pending = sock.pending() if hasattr(sock, "pending") else 0    # TLS bytes already decrypted
        try:
            readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [],
                                                  0.0 if pending else timeout)
        except (OSError, ValueError, TypeError):
            return client.loop(timeout=0.0)     # a socket closed under us: paho's loop says what happened
        if self._wake_r in readable:
            self._drain_wake()
        if pending or sock in readable:
            rc = client.loop_read()
            if rc or client.socket() is None:
                return rc
        if writable:
            rc = client.loop_write()
            if rc or client.socket() is None:
                return rc
        return client.loop_misc()

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
        self._next_backoff()

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
            with self.state.lock:
                self.state.mqtt["acked"] += len(done)
            if self.by_receipt:
                now = time.monotonic()
                for seq in done:
                    if seq in self._confirmed_early:
                        self._confirmed_early.discard(seq)
                    else:
                        self._await(seq, now)
            else:
                self.spool.ack(done)
        if failed:
            with self.state.lock:
                self.state.mqtt["rejected"] += len(failed)
            log.warning("broker refused %d batch(es) (seq %s...); kept in the spool and retried later; "
                        "check the broker's ACL for topic %s", len(failed), failed[0], self.obs_topic)
            now = time.monotonic()
            for seq in failed:
                self._await(seq, now)

    def _await(self, seq: int, now: float) -> None:
        """Start (or restart, doubling) the receipt timer of a batch the broker has taken."""
        u = self.unconfirmed.get(seq)
        if u is None:
            u = self.unconfirmed[seq] = Unconfirmed(first_sent=now, due=0.0, attempts=1)
        wait = min(self.pub.receipt_timeout_s * 2 ** (u.attempts - 1), self.pub.receipt_timeout_max_s)
        u.due = now + wait
        self._next_due = min(self._next_due, u.due)

    def _process_receipts(self) -> None:
        if not self._receipts:
            return
        payloads, self._receipts = self._receipts, []
        g = self.cfg.gateway
        for payload in payloads:
            try:
                r = decode_receipt(payload, g.site, g.id)
            except ReceiptError as e:
                with self.state.lock:
                    self.state.mqtt["bad_receipts"] = self.state.mqtt.get("bad_receipts", 0) + 1
                log.warning("ignored a receipt on %s: %s; check who may publish there (the broker's ACL)",
                            self.receipt_topic, e)
                continue
            confirmed = r.confirmed([*self.unconfirmed, *self.inflight.values()])
            if self._republish_below is not None:
                # Formed before this start and not re-sent yet (a receipt for an earlier copy).
                lo, hi = self._republish_cursor + 1, self._republish_below - 1
                for a, b in r.stored + r.refused:
                    a, b = max(a, lo), min(b, hi, max(a, lo) + 100_000)
                    confirmed.extend(range(a, b + 1))
            inflight = set(self.inflight.values())
            for seq in confirmed:
                self.unconfirmed.pop(seq, None)
                if seq in inflight:
                    self._confirmed_early.add(seq)
            if confirmed:
                self.spool.ack(confirmed)
                self._maybe_more = True
            refused = r.refused and [s for s in confirmed if any(a <= s <= b for a, b in r.refused)]
            with self.state.lock:
                m = self.state.mqtt
                m["receipts"] = m.get("receipts", 0) + 1
                m["confirmed"] = m.get("confirmed", 0) + len(confirmed)
                if refused:
                    m["refused_by_centre"] = m.get("refused_by_centre", 0) + len(refused)
            if refused:
                log.warning("the centre refused batch(es) %s (kept in its dead-letter table); check the ingest "
                            "log for the reason", refused[:10])
            now = time.monotonic()
            for a, b in r.resend:
                for seq, u in self.unconfirmed.items():
                    if a <= seq <= b:
                        u.due = now
                        self._next_due = now

    # -- publishing ------------------------------------------------------------------------
    def _tokens_available(self) -> bool:
        now = time.monotonic()
        rate = self.pub.backlog_messages_per_s
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return self._tokens >= 1.0

    def _window_open(self) -> bool:
        pub = self.pub
        return (len(self.inflight) < pub.max_inflight_messages
                and len(self.inflight) + len(self.unconfirmed) < pub.max_unconfirmed_batches)

    def _fill(self) -> None:
        if self._republish_below is None:
            self._republish_below = self.spool.stats().next_seq
        if self.wake.is_set():
            time.sleep(LINGER_S)     # let the rest of this poll cycle land: one message, not one per probe
            self.wake.clear()
            self._maybe_more = True
        self._starved = False
        self._resend_due()
        republishing = self._republish_cursor + 1 < self._republish_below
        if not (self._maybe_more or republishing or self.live_mark):
            return          # nothing new since the last empty look: skip the query
        self._maybe_more = False
        pub = self.pub
        while self._window_open():
            batch = self.spool.form_batch(max_obs=pub.max_batch_observations, max_bytes=pub.max_batch_bytes,
                                          after_id=self.live_mark)
            if batch is None:
                if not self._tokens_available():
                    self._starved = True
                    break
                batch = self._next_republish()
                if batch is None and self.live_mark:
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

    def _next_republish(self) -> SpooledBatch | None:
        """The next batch formed before this process started (still in the spool), oldest first."""
        below = self._republish_below or 0
        while self._republish_cursor + 1 < below:
            found = self.spool.pending_batches(self._republish_cursor, 1)
            if not found or found[0].seq >= below:
                self._republish_cursor = below
                return None
            b = found[0]
            self._republish_cursor = b.seq
            if b.seq not in self.unconfirmed and b.seq not in self.inflight.values():
                return b
        return None

    def _resend_due(self) -> None:
        """Re-send, byte for byte, the batches whose receipt is overdue (oldest first, at the backlog rate)."""
        now = time.monotonic()
        if not self.by_receipt and not self.unconfirmed:
            return
        if now < self._next_due:
            return
        due = sorted(seq for seq, u in self.unconfirmed.items() if u.due <= now)
        self._next_due = min((u.due for u in self.unconfirmed.values() if u.due > now), default=float("inf"))
        sent = 0
        for i, seq in enumerate(due):
            if len(self.inflight) >= self.pub.max_inflight_messages:
                self._next_due = now      # the rest when a PUBACK frees a slot
                break
            if not self._tokens_available():
                self._next_due = now      # the rest when a token comes
                self._starved = True
                break
            found = self.spool.pending_batches(seq - 1, 1)
            if not found or found[0].seq != seq:
                self.unconfirmed.pop(seq, None)     # no longer in the spool (dropped by the quota)
                continue
            u = self.unconfirmed[seq]
            u.attempts += 1
            u.due = float("inf")                   # restarted by its PUBACK
            self._tokens -= 1.0
            self._send(found[0])
            sent += 1
        if sent:
            with self.state.lock:
                self.state.mqtt["resent"] = self.state.mqtt.get("resent", 0) + sent
            if now - self._last_receipt_warning >= RECEIPT_LOG_EVERY_S:
                self._last_receipt_warning = now
                oldest = max(now - u.first_sent for u in self.unconfirmed.values()) if self.unconfirmed else 0.0
                log.warning("no receipt from the centre for %d batch(es) (oldest sent %.0f s ago); re-sending "
                            "them. Check that humus ingest runs and reaches the broker", len(self.unconfirmed),
                            oldest)

    def _send(self, batch: SpooledBatch) -> None:
        info = self.client.publish(self.obs_topic, batch.payload, qos=1)
        self.inflight[info.mid] = batch.seq
        self.published_seqs.append(batch.seq)
        if len(self.published_seqs) > 10000:
            del self.published_seqs[:5000]
        with self.state.lock:
            self.state.mqtt["published"] += 1

    def receipt_stats(self) -> dict[str, Any]:
        """For the heartbeat: batches awaiting the centre's receipt and the oldest one's age."""
        now = time.monotonic()
        oldest = min((u.first_sent for u in self.unconfirmed.values()), default=None)
        return {"confirm": self.pub.confirm, "awaiting_receipt": len(self.unconfirmed),
                "oldest_unconfirmed_s": None if oldest is None else round(now - oldest, 3)}

    def _heartbeat(self) -> None:
        now = time.monotonic()
        while self._pending_alerts:
            self.client.publish(self.alerts_topic, self._pending_alerts.pop(0), qos=1)
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.cfg.gateway.heartbeat_s
        with self.state.lock:
            self.state.mqtt.update(self.receipt_stats())
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
            self._poke()

    def heartbeat_now(self) -> None:
        self._next_heartbeat = 0.0
        self._poke()

    def _shutdown(self) -> None:
        """Clean stop: say 'offline' (retained), wait briefly for outstanding PUBACKs, disconnect."""
        self._unhook_wake()
        with self._wake_lock:
            self._wake_closed = True
            self._wake_r.close()
            self._wake_w.close()
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
                    self._process_receipts()
            self.client.disconnect()
            self.client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001 - shutting down; the spool is durable anyway
            pass
