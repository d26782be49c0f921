"""The ingest worker: MQTT batches in, stored exactly once, acknowledged after.

Delivery (DESIGN.md, wire and storage contracts): QoS 1, a stable client id
and a persistent session (MQTT 5 clean start off with a session expiry, or
3.1.1 clean session off), manual acknowledgement. Several messages are
stored in one write, then each is acknowledged, in the order received
(MQTT 5.0 section 4.6 and 3.1.1 section 4.6: PUBACKs in PUBLISH order).
A message that was never acknowledged is redelivered by the broker; the
idempotent store turns that "at least once" into exactly once.

No message stops the flow: a batch the store refuses for its data
(`StoreRejected`) is dead-lettered after a few tries and acknowledged; only
a store that refuses everything is an outage (held, retried, logged once).
Of two copies of one observation, the gateway's newer one stays stored
whichever worker writes last (observatory.revisions).

Threads: paho's network thread receives, validates (so decoding overlaps
the store write in hand), lets the store encode it ahead (`prepare`: line
protocol for InfluxDB) and queues each message, and keeps the connection
alive (reconnecting with back-off); `run()` takes batches from the queue,
writes, records and acknowledges. With a store that can write in the
background (`write_async`: InfluxDB), `run()` starts the next write before
it finishes the one on the wire (waits for it, records its seqs, sends its
receipts and PUBACKs): the server always has a write to parse, and each
write's acknowledgements still follow its own durable write and ledger
record. Decoded batches travel as rows
(humus.obsrows), not as one `Observation` per value. `Client.ack` only queues a packet for the
network thread, which paho allows from any thread.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from humus.mqtt import connect_persistent, make_client
from humus.obsrows import BatchedObservations, time_span
from humus.receipts import encode_receipt, receipt_topic
from humus.records import ID_PATTERN, Observation
from humus.wire import OBS_SUBSCRIPTION, Batch, Rejection, WireError
from observatory.config import ObservatoryConfig, state_path
from observatory.deadletter import BatchLedger, DeadLetters, safe_text
from observatory.ledgershare import LEDGER_FILTER, LedgerNews, decode_news, encode_news, is_ledger_topic, \
    ledger_topic, uncovered
from observatory.metrics import IngestMetrics, log_line, worker_status_topic
from observatory.sequence import GapTracker, merge
from observatory.revisions import RevisionLog, Written, newest_copies, overtaken
from observatory.store import Store, StoreError, StoreRejected, StoreUnavailable
from observatory.validate import Validator

log = logging.getLogger("humus.ingest")

T = TypeVar("T")

STORE_REJECTED = Rejection.STORE_REJECTED.value

SHUTDOWN_GRACE_S = 10.0
"""How long a stopping worker keeps retrying a write before leaving its messages to the broker."""

LOGGED_REJECTIONS_MAX = 10_000

REFUSALS_TO_DEAD_LETTER = 3
"""Tries of a batch the store refuses before it is dead-lettered: a refusal that passes (a shard being
created) is told from a fault of the data, and one poison message holds the rest for about a second."""
REFUSAL_BACKOFF_S = 0.2
REWRITE_ROUNDS_MAX = 10
"""Rounds of 'write again the copies revised meanwhile' (observatory.revisions, step 4) in one write."""
NEWS_HELD_MAX = 10_000
"""Ledger news waiting for the main thread (held while the state file is unavailable); beyond, the oldest go:
each news of a gateway repeats its merged ranges, so a later one repairs what a dropped one said."""
LIVE_AGE_S = 60.0
"""A batch whose oldest observation is younger than this on arrival is live: it goes into the next write
ahead of the backlog held here, so a reconnect storm does not keep today's readings behind hours of
replay from other gateways (bench/storm.py). By the gateway's clock; a wrong clock only costs priority."""


def _one_line(text: str, limit: int) -> str:
    """Text from the wire or a store's answer, safe for one log line (no newline, no lone surrogate)."""
    return safe_text(text[:limit]).replace("\r", "\\r").replace("\n", "\\n")


def _data_fault(e: BaseException) -> bool:
    """The store refused this data (and would again); any other error may be the store's fault."""
    return isinstance(e, (StoreRejected, UnicodeError))


class _Abandon(Exception):
    """Stop was asked while the store is down: leave the messages unacknowledged."""


@dataclass(slots=True)
class Received:
    """One PUBLISH as handed over by the network thread."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_ns: int
    received_mono: float
    batch: Batch | None = None
    rejection: tuple[str, str] | None = None
    refused_seq: int | None = None   # a content rejection of a batch whose topic, site and seq are sound
    live: bool = False               # a batch of fresh observations (LIVE_AGE_S): written ahead of the backlog
    done: bool = False               # processed; acknowledged once every message received before it is


@dataclass(slots=True)
class _Write:
    """One store write of messages, from screening to acknowledgement (`_start`, `_finish`)."""

    items: list[Received]
    good: list[tuple[Received, Batch]]             # to store, in the order taken
    rejected: list[tuple[Received, str, str]]      # (message, reason, detail): dead-lettered
    copies: list[tuple[Observation, ...]] | None = None  # the newest copies sent (observatory.revisions, step 2)
    seen: Written | None = None
    pending: Any = None                            # the store's write on the wire (`write_async`)
    started: float = 0.0


def _size(it: Received) -> int:
    """Observations a message brings to a write."""
    return len(it.batch.observations) if it.batch is not None else 0


def _open_state(cls: Callable[[Any], T], path: Any, tries: int = 6) -> T:
    """Open the state file, retrying while another worker holds the lock that switching to WAL needs
    (two workers started together on a new file: "database is locked")."""
    delay = 0.05
    for attempt in range(tries):
        try:
            return cls(path)
        except StoreError as e:
            if "locked" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def subscription_topic(cfg: ObservatoryConfig) -> str:
    if cfg.ingest.subscription == "shared":
        return f"$share/{cfg.ingest.group}/{OBS_SUBSCRIPTION}"
    return OBS_SUBSCRIPTION


class IngestWorker:
    """One worker; `run(stop)` blocks until `stop` is set. Usable in-process (humus demo) or as the daemon.

    `store` is any `observatory.store.Store`; the worker does not close it.
    Dead letters and batch seqs go to the state file (`[ingest] state_file`).
    """

    def __init__(self, config: ObservatoryConfig, store: Store, *,
                 letters: DeadLetters | None = None, ledger: BatchLedger | None = None,
                 revisions: RevisionLog | None = None) -> None:
        self.config = config
        self.ing = config.ingest
        self.store = store
        self.client_id = config.client_id
        path = self.state_file = state_path(config)
        if path is None and (letters is None or ledger is None or revisions is None):
            raise StoreError(f"store {config.ingest.store.split(':', 1)[0]} needs [ingest] state_file "
                             "(dead letters, batch seqs and revisions)")
        self._owned: list[Any] = []
        try:
            if letters is None:
                letters = _open_state(DeadLetters, path)
                self._owned.append(letters)
            if ledger is None:
                ledger = _open_state(BatchLedger, path)
                self._owned.append(ledger)
            if revisions is None:
                revisions = _open_state(RevisionLog, path)
                self._owned.append(revisions)
        except BaseException:
            for state in self._owned:
                state.close()
            raise
        self.letters, self.ledger, self.revisions = letters, ledger, revisions
        self.validator = Validator(gateways=self.ing.gateways, max_future_s=self.ing.max_future_s,
                                   max_message_bytes=self.ing.max_message_bytes,
                                   registry_file=self.ing.registry_file or None)
        self._highest_seq: dict[tuple[str, str], int] = {}
        self.metrics = IngestMetrics()
        self.gaps = GapTracker(grace_ns=int(self.ing.gap_grace_s * 1e9))
        self.resend_requests = GapTracker(grace_ns=int(self.ing.resend_after_s * 1e9))
        self.status_topic = worker_status_topic(self.client_id)
        self.subscribed = threading.Event()
        self._queue: queue.Queue[Received] = queue.Queue()
        self._held: list[Received] = []           # taken from the queue, not yet written (arrival order)
        self._unacked: deque[Received] = deque()  # taken from the queue, not yet acknowledged (arrival order)
        self._generation = 0
        self._connected = False
        self._broker_problem_logged = False
        self._down: str | None = None  # what is down ("store", "ingest state"...), logged once
        self._logged_rejections: set[tuple[str, str]] = set()
        self._letter_failure_logged = False
        self._client: Any = None
        self.alive_mono = time.monotonic()
        """Last turn of the main loop or of a retry (the systemd watchdog is fed only while it moves)."""
        self._prepare: Callable[[Any], None] | None = getattr(store, "prepare", None)
        self._write_async: Callable[[Any], Any] | None = getattr(store, "write_async", None)
        # Ledger sharing (observatory.ledgershare): news from the network thread, merged by the main thread.
        self._ledger_id: str | None = None
        if self.ing.share_ledger and self.ing.subscription == "shared" and hasattr(self.ledger, "record_ranges"):
            self._ledger_id = self.ledger.ledger_id()
        self._news: deque[LedgerNews] = deque(maxlen=NEWS_HELD_MAX)
        self._announce: set[tuple[str, str]] = set()   # gateways written since the last tick
        user = config.mqtt.username or self.client_id
        self._ledger_topic = ledger_topic(user)
        if self._ledger_id is not None and any(c in user for c in "/+#"):
            log.warning("[mqtt] username %r holds '/', '+' or '#', which cannot name a topic level: this worker "
                        "does not share its batch seqs (docs/ingest.md, Several workers)", _one_line(user, 100))
            self._ledger_id = None
        self._news_refusal_logged = False
        self._ledger_refusal_logged = False

    # -- MQTT callbacks (paho network thread) -------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._broker_problem_logged:
                log.error("broker %s:%d refused %s: %s; check [mqtt] username/password_file and the broker's ACL",
                          self.config.mqtt.host, self.config.mqtt.port, self.client_id, reason_code)
                self._broker_problem_logged = True
            return
        self._generation += 1
        self._connected = self.metrics.connected = True
        self._broker_problem_logged = False
        topic = subscription_topic(self.config)
        log.info("connected to %s:%d as %s (session %s); subscribing to %s", self.config.mqtt.host,
                 self.config.mqtt.port, self.client_id,
                 "resumed" if flags.session_present else "new", topic)
        if self._ledger_id is not None:
            client.subscribe([(topic, 1), (LEDGER_FILTER, 0)])
        else:
            client.subscribe(topic, qos=1)
        client.publish(self.status_topic, json.dumps({"state": "online", "client_id": self.client_id}),
                       qos=1, retain=True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if len(reason_codes) > 1 and reason_codes[1].is_failure and not self._ledger_refusal_logged:
            log.warning("broker refused the subscription to %s: %s; this worker will not learn the batches its "
                        "group's workers on other machines store, and may report their share as gaps. Give the "
                        "ingest user the ledger topics: `humus gateway init` rewrites the ACL of this version, then "
                        "reload mosquitto (docs/deploy.md)",
                        LEDGER_FILTER, reason_codes[1])
            self._ledger_refusal_logged = True
        bad = [rc for rc in reason_codes[:1] if rc.is_failure]
        if bad:
            hint = (" (amqtt serves neither MQTT 5 nor $share: set [ingest] subscription = \"plain\" and "
                    "[mqtt] protocol = \"3.1.1\")" if self.ing.subscription == "shared" else "")
            log.error("broker refused the subscription to %s: %s; check the broker's ACL%s",
                      subscription_topic(self.config), bad[0], hint)
        else:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = self.metrics.connected = False
        self.subscribed.clear()
        if was and not self._stopping:
            log.warning("lost the broker %s:%d (%s); reconnecting with back-off. Unacknowledged messages stay "
                        "in the persistent session; check the broker is running and reachable",
                        self.config.mqtt.host, self.config.mqtt.port, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._broker_problem_logged:
            log.warning("cannot reach the broker %s:%d; retrying with back-off. Check [mqtt] host/port and "
                        "that the broker runs", self.config.mqtt.host, self.config.mqtt.port)
            self._broker_problem_logged = True

    def _on_message(self, client, userdata, msg) -> None:
        if self._ledger_id is not None and is_ledger_topic(msg.topic):
            self._on_news(client, msg)
            return
        # Validated here, on the network thread, so that decoding the next
        # messages overlaps the store write of the previous batch (which
        # waits on I/O without the GIL): about 1.3x the throughput on InfluxDB.
        now_ns = time.time_ns()
        it = Received(msg.topic, msg.payload, msg.mid, msg.qos, self._generation, now_ns, time.monotonic())
        try:
            it.batch = self.validator.check(it.topic, it.payload, now_ns=now_ns)
        except WireError as e:
            it.rejection = (e.reason.value, str(e))
            if e.seq is not None and e.reason in (Rejection.BAD_VALUE, Rejection.FUTURE_TIME):
                it.refused_seq = e.seq
        except Exception as e:  # noqa: BLE001 - a bug in decoding must not kill the network thread
            # A documented reason (docs/ingest.md); what the decoder tripped on goes in the detail.
            it.rejection = (Rejection.BAD_SCHEMA.value, f"payload the decoder could not handle "
                            f"({type(e).__name__}: {safe_text(str(e)[:300])}); a bug to report with this row")
        if it.batch is not None and self._prepare is not None:
            try:  # encoded here too (InfluxDB), while the main thread waits on the store
                self._prepare(it.batch.observations)
            except Exception:  # noqa: BLE001 - the write encodes it again and reports what it finds
                pass
        if it.batch is not None and it.batch.observations:
            it.live = now_ns - time_span(it.batch.observations)[0] <= LIVE_AGE_S * 1e9
        self.metrics.add(messages_in=1, observations_in=len(it.batch.observations) if it.batch else 0)
        self._queue.put(it)

    def _on_news(self, client, msg) -> None:
        """Seq ranges another worker of the group stored (observatory.ledgershare), for the main thread."""
        if msg.qos:  # subscribed at QoS 0; a broker granting more still gets its PUBACK
            client.ack(msg.mid, msg.qos)
        try:
            news = decode_news(msg.payload)
        except ValueError as e:
            self.metrics.add(ledger_news_rejected=1)
            if not self._news_refusal_logged:
                log.warning("ignored ledger news on %s: %s (further ones are only counted)",
                            _one_line(msg.topic, 200), _one_line(str(e), 300))
                self._news_refusal_logged = True
            return
        if news.ledger_id != self._ledger_id and news.group == self.ing.group:
            self.metrics.add(ledger_news=1)
            self._news.append(news)

    def _merge_news(self, stop: threading.Event) -> None:
        """Merge what the other workers told into the ledger: what it lacks, in one transaction."""
        if not self._news:
            return
        stored: dict[tuple[str, str], list[tuple[int, int]]] = {}
        verified: dict[tuple[str, str], list[tuple[int, int]]] = {}
        while self._news:
            news = self._news.popleft()
            for mine, theirs in ((stored, news.stored), (verified, news.verified)):
                for key, ranges in theirs.items():
                    mine.setdefault(key, []).extend(ranges)
        held = self._retry("ingest state", lambda: self._ranges_of(stored), stop) if stored else {}
        new = {k: uncovered(r, held.get(k, ())) for k, r in stored.items()}
        new = {k: r for k, r in new.items() if r}
        if new or verified:
            self._retry("ingest state", lambda: self.ledger.record_ranges(new, verified), stop)
        for key, ranges in new.items():
            if key in self._highest_seq:  # else `_seq_jump` reads it from the ledger
                self._highest_seq[key] = max(self._highest_seq[key], *(hi for _, hi in ranges))

    def _tell(self, stored: dict[tuple[str, str], list[tuple[int, int]]],
              verified: dict[tuple[str, str], list[tuple[int, int]]] | None = None) -> None:
        """Publish stored seq ranges to the group's other workers (QoS 0: see observatory.ledgershare)."""
        if self._ledger_id is None or self._client is None or not self._connected or not (stored or verified):
            return
        for payload in encode_news(self._ledger_id, self.ing.group, self.client_id, stored, verified):
            self._client.publish(self._ledger_topic, payload, qos=0)

    # -- life cycle ---------------------------------------------------------------------------

    _stopping = False

    def _make_client(self):
        m = self.config.mqtt
        client = make_client(m, self.client_id)
        client.manual_ack_set(True)
        client.will_set(self.status_topic, json.dumps({"state": "offline", "client_id": self.client_id}),
                        qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        # A restarted broker must see the workers back within seconds: until they re-subscribe,
        # Mosquitto hands shared-subscription messages to no one (gateways re-send on receipt timeout).
        connect_persistent(client, m, reconnect_max_s=2)
        return client

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; then finish the write in hand, acknowledge, disconnect."""
        self._client = client = self._make_client()
        client.loop_start()
        next_tick = time.monotonic() + self.ing.metrics_interval_s
        in_flight: _Write | None = None  # on the wire while the next write is prepared (write_async)
        try:
            while True:
                self.alive_mono = time.monotonic()
                if stop.is_set():
                    items = []
                elif in_flight is None:
                    items = self._collect(stop, timeout=max(0.0, min(0.5, next_tick - time.monotonic())))
                else:  # what is here already: the write on the wire is finished next, not held back
                    items = self._collect(stop, timeout=0.0, linger=False)
                try:
                    started = None
                    if items and self._write_async is None:
                        self._process(items, stop)
                    elif items:
                        started = self._start(items, stop, ahead=in_flight)
                    if in_flight is not None:
                        self._finish(in_flight, stop)
                except _Abandon:
                    n = len(items) + (len(in_flight.items) if in_flight is not None else 0)
                    log.warning("stopping with %d message(s) unacknowledged while the store is down; the "
                                "broker redelivers them to this client id", n)
                    break
                in_flight = started
                if stop.is_set() and in_flight is None:
                    break
                if self._news:
                    self._merge_news(stop)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.ing.metrics_interval_s
                    self._tick()
                else:
                    self._check_gaps()
        finally:
            self._stopping = True
            doc = self._tick(final=True)
            try:
                info = client.publish(self.status_topic, json.dumps(doc), qos=1, retain=True)
                if self._connected:
                    info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
            client.disconnect()
            client.loop_stop()
            for state in self._owned:
                state.close()

    def _hold(self, it: Received) -> None:
        self._held.append(it)
        self._unacked.append(it)

    def _collect(self, stop: threading.Event, timeout: float, linger: bool = True) -> list[Received]:
        """The next write: the live messages held, then the others, each in arrival order.

        Up to `batch_messages` messages and `batch_observations` observations
        (at least one message), waiting at most `batch_latency_s` after the
        oldest message held for the write to fill (not at all without `linger`: a write is on the wire
        and its acknowledgements wait for this one to start). Everything received is taken
        from the queue first (at most the broker's `max_inflight_messages`), so
        that a live message is seen behind any backlog.
        """
        if not self._held:
            try:
                self._hold(self._queue.get(timeout=timeout))
            except queue.Empty:
                return []
        deadline = self._held[0].received_mono + self.ing.batch_latency_s if linger else 0.0
        n_obs = sum(_size(it) for it in self._held)
        while True:
            left = deadline - time.monotonic()
            full = len(self._held) >= self.ing.batch_messages or n_obs >= self.ing.batch_observations
            try:
                it = self._queue.get_nowait() if full or left <= 0 else self._queue.get(timeout=left)
            except queue.Empty:
                break
            self._hold(it)
            n_obs += _size(it)
        # Live first, then the backlog fills the write: a write of live messages alone would be
        # quicker, but a steady live stream would then hold the backlog back for good.
        pool = [it for it in self._held if it.live] + [it for it in self._held if not it.live]
        items: list[Received] = []
        n_obs = 0
        for it in pool:
            n = _size(it)
            if len(items) >= self.ing.batch_messages or (items and n_obs + n > self.ing.batch_observations):
                break       # the rest waits, in arrival order
            items.append(it)
            n_obs += n
        taken = {id(it) for it in items}
        self._held = [it for it in self._held if id(it) not in taken]
        return items

    # -- one batch of messages ----------------------------------------------------------------

    def _process(self, items: list[Received], stop: threading.Event) -> None:
        """Store, record and acknowledge one write of messages, waiting for the store."""
        self._finish(self._screen(items, stop), stop)

    def _start(self, items: list[Received], stop: threading.Event, ahead: _Write | None = None) -> _Write:
        """Screen the messages and put their store write on the wire (`write_async`) without waiting for it;
        `_finish` waits, then records, receipts and acknowledges. `ahead`: the write still on the wire,
        finished right after this one starts (its seqs count as stored for `max_seq_jump`)."""
        w = self._screen(items, stop, ahead)
        batches = [b for _, b in w.good]
        if any(b.observations for b in batches):
            # Steps 1 and 2 of observatory.revisions, as in _write; step 4 follows the write in _finish.
            self._retry("ingest state", lambda: self.revisions.record(batches), stop)
            kept = self._retry("ingest state", lambda: self.revisions.newer(batches), stop)
            w.copies, w.seen = newest_copies(batches, kept)
            w.started = time.monotonic()
            try:
                w.pending = self._write_async(BatchedObservations(w.copies))
            except Exception:  # noqa: BLE001 - data the store refuses: _write narrows it down in _finish
                w.pending = None
        return w

    def _screen(self, items: list[Received], stop: threading.Event, ahead: _Write | None = None) -> _Write:
        """Sort a write's messages into those to store and those to dead-letter (with the reason)."""
        w = _Write(items, [], [(it, *it.rejection) for it in items if it.rejection is not None])
        being_stored: dict[tuple[str, str], int] = {}  # the highest seq of each gateway in `ahead`
        for _, b in ahead.good if ahead is not None else ():
            key = (b.site, b.gateway)
            being_stored[key] = max(b.seq, being_stored.get(key, b.seq))
        for it in items:
            b = it.batch
            if b is None:
                continue
            if isinstance(b.site, str) and isinstance(b.gateway, str) \
                    and ID_PATTERN.fullmatch(b.site) and ID_PATTERN.fullmatch(b.gateway):
                jump = self._seq_jump(b, stop, being_stored)
                if jump:
                    w.rejected.append((it, Rejection.SEQ_JUMP.value, jump))
                else:
                    w.good.append((it, b))
            else:  # the validator should have refused it; the ingest state is keyed by these ids
                w.rejected.append((it, Rejection.BAD_VALUE.value, f"site/gateway {ascii(b.site)[:80]}/"
                                   f"{ascii(b.gateway)[:80]} is not an id of 1-64 characters a-z, 0-9 and '-'"))
        return w

    def _finish(self, w: _Write, stop: threading.Event) -> None:
        """Wait for the store write (or make it: `_write`), then record the seqs, dead-letter, send the
        receipts and acknowledge: each only after the write it reports on is durable."""
        good, rejected = w.good, w.rejected
        # Duplicates: a seq already recorded for its gateway, or twice in this batch.
        # They are still written: the store is idempotent, and a gateway whose
        # counter restarted (a new SD card) must not have its data dropped.
        # One query, not one per message: the stored seq ranges of each gateway.
        # Counted here, after the write before this one was recorded.
        seen_here: set[tuple[str, str, int]] = set()
        stored_ranges = self._retry("ingest state", lambda: self._ranges_of({(b.site, b.gateway) for _, b in good}),
                                    stop) if good else {}
        duplicates = 0
        for _, b in good:
            k = (b.site, b.gateway, b.seq)
            if k in seen_here or any(lo <= b.seq <= hi for lo, hi in stored_ranges[(b.site, b.gateway)]):
                duplicates += 1
            seen_here.add(k)

        refused: dict[tuple[str, str], list[int]] = {}
        for i, exc in self._end_write(w, stop):
            it, b = good[i]
            refused.setdefault((b.site, b.gateway), []).append(b.seq)
            why = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            rejected.append((it, STORE_REJECTED, f"store refused batch seq {b.seq}: {why[:300]}"))
            good[i] = (it, None)  # type: ignore[assignment]
        stored = [(it, b) for it, b in good if b is not None]

        by_gateway: dict[tuple[str, str], list[int]] = {}
        for _, b in stored:
            by_gateway.setdefault((b.site, b.gateway), []).append(b.seq)
        verified: dict[tuple[str, str], list[int]] = {}
        for _, b in stored:
            if b.signed:
                verified.setdefault((b.site, b.gateway), []).append(b.seq)
        self._retry("ingest state", lambda: self._record_seqs(by_gateway, verified), stop)
        if self._ledger_id is not None and by_gateway:
            self._announce.update(by_gateway)
            self._tell({k: merge(stored_ranges.get(k, ()), seqs) for k, seqs in by_gateway.items()},
                       {k: merge((), seqs) for k, seqs in verified.items()})
        self._merge_news(stop)
        for it, reason, message in rejected:
            kept = self._dead_letter(it, reason, message, stop)
            if kept and it.refused_seq is not None:
                # Refused for its content, kept whole at the centre: the gateway may let it go.
                site, gw = it.topic.split("/")[2:4]
                refused.setdefault((site, gw), []).append(it.refused_seq)
            elif not kept and it.batch is not None and it.batch.seq in refused.get((it.batch.site, it.batch.gateway), ()):
                refused[(it.batch.site, it.batch.gateway)].remove(it.batch.seq)

        self._send_receipts(by_gateway, refused)
        acked = self._ack(w.items)
        self.metrics.add(duplicates=duplicates, messages_acked=acked)
        self._gaps_of(by_gateway)

    def _end_write(self, w: _Write, stop: threading.Event) -> list[tuple[int, Exception]]:
        """The write started by `_start` once it is through (then step 4 of observatory.revisions); if it was
        not started or failed in any way, the whole write again the careful way (`_write`: retries, refusals
        narrowed down, dead letters). Returns (index, error) to dead-letter."""
        batches = [b for _, b in w.good]
        if w.pending is not None:
            try:
                w.pending.result()
            except Exception:  # noqa: BLE001 - an outage or a refusal: _write tells them apart
                pass
            else:
                self._write_done(w.started, sum(map(len, w.copies)), batches)
                self._write_overtaken(batches, w.copies, dict(w.seen), stop)
                return []
        return self._write(batches, stop)

    def _send_receipts(self, stored: dict[tuple[str, str], list[int]],
                       refused: dict[tuple[str, str], list[int]]) -> None:
        """Tell each gateway which of its batches are now durably at the centre (humus.receipts).

        Sent after the store write and the ledger record, so a receipt never
        promises more than a crash would leave. A receipt lost on the way (the
        broker restarts, the gateway is away) only means the gateway re-sends:
        the duplicate is stored once and receipted again.
        """
        if not self.ing.receipts or self._client is None:
            return
        for key in stored.keys() | refused.keys():
            payload = encode_receipt(*key, stored=stored.get(key, ()), refused=refused.get(key, ()),
                                     by=self.client_id)
            self._client.publish(receipt_topic(*key), payload, qos=1)
        self.metrics.add(receipts=len(stored.keys() | refused.keys()))

    def _seq_jump(self, b: Batch, stop: threading.Event, being_stored: dict[tuple[str, str], int] | None = None
                  ) -> str | None:
        """Why `b.seq` is absurd for its gateway (a hostile or broken publisher), or None.

        Beyond 2**53 a seq is not exact as a JSON number in most languages;
        past the highest stored seq by more than `max_seq_jump`, it would open
        a hole of years of batches (and every later real batch would look old).
        """
        if b.seq >= 2**53:
            return f"seq {b.seq} is beyond 2**53"
        key = (b.site, b.gateway)
        high = self._highest_seq.get(key)
        if high is None:
            ranges = self._retry("ingest state", lambda: self.ledger.ranges(*key), stop)
            high = self._highest_seq[key] = ranges[-1][1] if ranges else 0
        if being_stored:  # the write on the wire counts as stored (it is, unless the store refuses it)
            high = max(high, being_stored.get(key, high))
        if b.seq > high + self.ing.max_seq_jump:
            return (f"seq {b.seq} is {b.seq - high} past the highest stored seq {high} of {b.site}/{b.gateway} "
                    f"(at most {self.ing.max_seq_jump}, [ingest] max_seq_jump)")
        return None

    def _record_seqs(self, by_gateway: dict[tuple[str, str], list[int]],
                     verified: dict[tuple[str, str], list[int]] | None = None) -> None:
        """After the store write: one transaction for all gateways if the ledger offers it."""
        for key, seqs in by_gateway.items():
            if seqs and seqs[-1] > self._highest_seq.get(key, -1):
                self._highest_seq[key] = max(seqs)
        record_batches = getattr(self.ledger, "record_batches", None)
        if record_batches is not None:
            if verified:
                record_batches(by_gateway, verified)
            else:
                record_batches(by_gateway)
            return
        for (site, gw), seqs in by_gateway.items():
            self.ledger.record_many(site, gw, seqs)

    def _write(self, batches: Sequence[Batch], stop: threading.Event) -> list[tuple[int, Exception]]:
        """Store the batches' observations, the newest copies winning; return (index, error) to dead-letter.

        Refusals: a write that fails (other than `StoreUnavailable`) is narrowed
        down batch by batch. A batch is dead-lettered after
        REFUSALS_TO_DEAD_LETTER tries when the store refused its data
        (`StoreRejected`), or when its error is another one while other batches
        went through. A store that refuses everything else (no batch goes
        through: unknown database, credentials, a read-only file) is at fault,
        not the data: the messages are held and retried like in an outage.

        Newest copies: steps 1, 2 and 4 of observatory.revisions around the write.
        """
        if not any(b.observations for b in batches):
            return []
        self._retry("ingest state", lambda: self.revisions.record(batches), stop)
        pending = list(range(len(batches)))
        copies: dict[int, tuple[Observation, ...]] = {}  # what was stored, by batch index
        written: Written = {}
        refusals: dict[int, int] = {}
        dead: list[tuple[int, Exception]] = []

        def attempt() -> None:
            """One round over the pending batches; raises StoreUnavailable for an outage."""
            nonlocal pending
            todo = [batches[i] for i in pending]
            kept = self._retry("ingest state", lambda: self.revisions.newer(todo), stop)
            lists, seen = newest_copies(todo, kept)
            failed: dict[int, Exception] = {}
            try:
                self._timed_write(BatchedObservations(lists), todo)
            except StoreUnavailable:
                raise
            except Exception as e:  # noqa: BLE001 - a store refusing data must not stop the worker
                if len(todo) == 1:
                    failed[pending[0]] = e
                else:
                    for i, b, obs in zip(pending, todo, lists):
                        try:
                            self._timed_write(BatchedObservations([obs]), [b])
                        except StoreUnavailable:
                            raise
                        except Exception as e1:  # noqa: BLE001
                            failed[i] = e1
            for i, obs in zip(pending, lists):
                if i not in failed:
                    copies[i] = obs
            for key, (rank, o) in seen.items():
                if key not in written or rank > written[key][0]:
                    written[key] = (rank, o)
            if not copies and not all(_data_fault(e) for e in failed.values()):
                first = next(e for e in failed.values() if not _data_fault(e))
                raise StoreUnavailable(f"the store refused every batch of a write of {len(todo)}: {first}")
            for i, e in failed.items():
                refusals[i] = refusals.get(i, 0) + 1
                if refusals[i] >= REFUSALS_TO_DEAD_LETTER:
                    dead.append((i, e))
            pending = [i for i in failed if refusals[i] < REFUSALS_TO_DEAD_LETTER]

        delay = REFUSAL_BACKOFF_S
        while pending:
            self._retry("store", attempt, stop)
            if pending:
                self._sleep(delay, None)
                delay *= 2
        if dead:
            self._retry("ingest state", lambda: self.revisions.withdraw([batches[i] for i, _ in dead]), stop)
        stored = sorted(copies)
        self._write_overtaken([batches[i] for i in stored], [copies[i] for i in stored], written, stop)
        return dead

    def _write_overtaken(self, batches: list[Batch], copies: list[tuple[Observation, ...]], written: Written,
                         stop: threading.Event) -> None:
        """Step 4 of observatory.revisions: write again what a revision recorded meanwhile outranks."""
        if not batches:
            return
        for _ in range(REWRITE_ROUNDS_MAX):
            kept = self._retry("ingest state", lambda: self.revisions.newer(batches), stop)
            again = overtaken(batches, copies, written, kept)
            if not again or not self._retry("store", lambda: self._rewrite(again), stop):
                return
        log.warning("newer copies of observations of %s kept being revised during %d rewrites; the next write "
                    "of these keys settles it", ", ".join(sorted({f"{b.site}/{b.gateway}" for b in batches})),
                    REWRITE_ROUNDS_MAX)

    def _rewrite(self, observations: list[Observation]) -> bool:
        """Write newer copies; False if the store refuses their data (the older copies then stay)."""
        try:
            self.store.write(observations)
        except Exception as e:  # noqa: BLE001 - StoreUnavailable and the store's faults: held by _retry
            if not _data_fault(e):
                raise
            o = observations[0]
            log.warning("the store refused %d newer copies of observations (first %s/%s %s at %d): %s; the older "
                        "copies stay", len(observations), o.site, o.gateway, _one_line(o.probe, 70), o.time_ns,
                        _one_line(str(e), 300))
            return False
        self.metrics.add(observations_written=len(observations))
        return True

    def _dead_letter(self, it: Received, reason: str, message: str, stop: threading.Event) -> bool:
        """Keep a rejected message in the dead-letter table, count it, log it once per reason and topic.

        True when the whole payload is kept (only then may a receipt call it `refused`).

        A state file that is unavailable (locked, disk full) holds the worker
        like a store outage. Any other failure of the insert is logged as what
        it is and the message acknowledged all the same: one message never
        holds the rest.
        """
        keep = self.ing.dead_letter_max_bytes
        size = len(it.payload)
        detail = f"{message} ({size} bytes{', first %d kept' % keep if size > keep else ''})"

        def add() -> Exception | None:
            try:
                self.letters.add(it.topic, it.payload[:keep], reason, detail, it.received_ns)
            except StoreUnavailable:
                raise
            except Exception as e:  # noqa: BLE001 - reported below; retrying would fail the same way
                return e
            return None

        failure = self._retry("dead-letter table", add, stop)
        if failure is None:
            self._letter_failure_logged = False
        elif not self._letter_failure_logged:
            log.error("dead-letter table %s: %s; a message on %s (%s) was acknowledged without its copy. Check "
                      "the state file (permissions, a SQLite file of this humus version)", self.state_file,
                      _one_line(f"{type(failure).__name__}: {failure}", 300), _one_line(it.topic, 200), reason)
            self._letter_failure_logged = True
        self.metrics.reject(reason)
        self._log_rejection(it.topic, reason, message)
        return failure is None and size <= keep

    def _timed_write(self, observations: Sequence[Observation], batches: Sequence[Batch]) -> None:
        t0 = time.monotonic()
        self.store.write(observations)
        self._write_done(t0, len(observations), batches)

    def _write_done(self, t0: float, observations: int, batches: Sequence[Batch]) -> None:
        lag = (time.time_ns() - max(b.sent_ns for b in batches)) / 1e9
        self.metrics.store_write(time.monotonic() - t0, observations, len(batches), lag)

    def _retry(self, what: str, fn: Callable[[], T], stop: threading.Event) -> T:
        """Call `fn` until it works, with exponential back-off while the store or state file is unavailable.

        Any failure counts as unavailability (a refused batch is not a failure
        here: `_write` returns it); nothing is acknowledged until it works.
        """
        delay = self.ing.retry_min_s
        stop_deadline: float | None = None
        while True:
            self.alive_mono = time.monotonic()
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - StoreUnavailable, sqlite3.Error, a bug: hold and retry
                self._unavailable(what, e)
            else:
                if self._down == what:  # not another, nested call that worked meanwhile
                    down = (time.time_ns() - (self.metrics.store_down_since_ns or time.time_ns())) / 1e9
                    log.warning("%s available again after %.1f s; writing the %d held message(s)", what, down,
                                self._queue.qsize())
                    self._down = None
                    self.metrics.store_down_since_ns = None
                return result
            if stop.is_set():
                stop_deadline = stop_deadline or time.monotonic() + SHUTDOWN_GRACE_S
                if time.monotonic() >= stop_deadline:
                    raise _Abandon()
            self._sleep(min(delay, self.ing.retry_max_s), stop_deadline)
            delay = min(delay * 2, self.ing.retry_max_s)

    def _sleep(self, seconds: float, stop_deadline: float | None) -> None:
        end = time.monotonic() + seconds
        if stop_deadline is not None:
            end = min(end, stop_deadline)
        time.sleep(max(0.0, end - time.monotonic()))

    def _unavailable(self, what: str, e: Exception) -> None:
        self.metrics.add(store_failures=1)
        if self._down is None:
            self.metrics.store_down_since_ns = time.time_ns()
            if what == "store" and self.ing.store.startswith("sqlite:"):
                target, hint = self.ing.store, "the file and its directory writable, disk space, another process " \
                                               "holding a lock"
            elif what == "store":
                target, hint = self.ing.store, "server running and reachable, database created, credentials, disk space"
            else:
                target, hint = str(self.state_file), "disk space, permissions, another process holding a lock"
            log.error("%s unavailable (%s): holding messages unacknowledged at the broker (at most its "
                      "max_inflight_messages) and retrying with back-off up to %g s. Check %s: %s", what,
                      _one_line(str(e), 400), self.ing.retry_max_s, target, hint)
            self._down = what

    def _ack(self, items: list[Received]) -> int:
        """Mark `items` processed and acknowledge, in receive order, every message up to the first one
        not yet processed (a live message written ahead of the backlog waits for it: MQTT 5.0 and 3.1.1
        section 4.6). Messages from an earlier connection are left to redelivery (their packet ids may
        since name other messages)."""
        for it in items:
            it.done = True
        client, gen, n = self._client, self._generation, 0
        unacked = self._unacked
        while unacked and unacked[0].done:
            it = unacked.popleft()
            if it.generation == gen and self._connected:
                client.ack(it.mid, it.qos)
                n += 1
        return n

    def _log_rejection(self, topic: str, reason: str, message: str) -> None:
        key = (reason, topic)
        if key in self._logged_rejections:
            return
        if len(self._logged_rejections) < LOGGED_REJECTIONS_MAX:
            self._logged_rejections.add(key)
        log.warning("rejected a message on %s (%s): %s; kept in the dead-letter table, further %s rejections "
                    "on this topic are only counted", _one_line(topic, 200), reason, _one_line(message, 300), reason)

    # -- sequence gaps and metrics ------------------------------------------------------------

    def _ranges_of(self, keys) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """The stored seq ranges of several gateways, in one query if the ledger offers it."""
        ranges_of = getattr(self.ledger, "ranges_of", None)
        if ranges_of is not None:
            return ranges_of(keys)
        return {key: self.ledger.ranges(*key) for key in keys}

    def _gaps_of(self, keys) -> None:
        if not keys:
            return
        try:
            found = self._ranges_of(keys)
        except sqlite3.Error:
            return  # checked again on the next tick
        now_ns = time.time_ns()
        for key, ranges in found.items():
            asks = self.resend_requests.observe(key, ranges, now_ns)
            if asks and self.ing.receipts and self._client is not None:
                # A hole open this long: the batch went to no one (a broker restart) or is stuck; the
                # gateway re-sends what it still has (its own receipt timeout would too, later).
                self._client.publish(receipt_topic(*key), encode_receipt(*key, resend=asks, by=self.client_id),
                                     qos=1)
                self.metrics.add(resend_requests=len(asks))
            for lo, hi in self.gaps.observe(key, ranges, now_ns):
                n = hi - lo + 1
                self.metrics.add(gaps=1, gap_seqs=n)
                log.warning("gateway %s/%s: batches %d-%d (%d) missing for %g s; check the gateway's spool, clock "
                            "and link (they are stored if they still arrive)", key[0], key[1], lo, hi, n,
                            self.ing.gap_grace_s)

    def _check_gaps(self) -> None:
        self._gaps_of(list(self.gaps.open_keys()))

    def _tick(self, final: bool = False) -> dict:
        """Log the metrics and publish them (retained); the last one, on a clean stop, says offline."""
        self.metrics.pending = self._queue.qsize() + len(self._held)
        try:
            oldest = self._held[0].received_mono if self._held else self._queue.queue[0].received_mono
            self.metrics.oldest_pending_s = time.monotonic() - oldest
        except IndexError:
            self.metrics.oldest_pending_s = 0.0
        if self._announce and not final:
            keys, self._announce = self._announce, set()
            try:
                self._tell(self._ranges_of(keys))
            except sqlite3.Error:
                pass  # the next write tells its gateways again
        self._check_gaps()
        doc = self.metrics.snapshot()
        doc.update(client_id=self.client_id, state="offline" if final else "online")
        log.info("%s", log_line(doc))
        if self._client is not None and self._connected and not final:
            self._client.publish(self.status_topic, json.dumps(doc), qos=1, retain=True)
        return doc
