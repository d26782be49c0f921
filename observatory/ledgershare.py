"""Stored batch seqs told to the other workers of the group: gaps judged on the union, across machines.

Why: workers on one host share the state file, so each judges a gateway's
holes on every seq stored (observatory.sequence). Workers on several
machines behind a clustered broker, on one shared subscription, each keep
their own state file and see only their share of a gateway's seqs; the
others' shares would look like holes: `resend` requests after
`resend_after_s`, false gap reports after `gap_grace_s`, every few batches.

So after each store write a worker publishes the stored seq ranges of the
gateways it wrote (merged with what its ledger already holds, the last
`MAX_RANGES` of each) on ``humus/v1/_ingest/<user>/ledger``, and merges
what the other workers of its group publish into its own ledger. Only
ingest users may publish there, each under its own name (docs/deploy.md).

QoS 0, not retained: nothing queues at the broker for a worker that is
away (a persistent session would hold every peer write for as long as its
session lives). What a worker misses is repaired by the next news about the
same gateway, which carries the merged ranges, and by the re-announcement
of every gateway written in each metrics interval. News from the same state
file (workers of one host) and from another group are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from humus.records import ID_PATTERN
from observatory.sequence import GatewayKey, Interval

SCHEMA = "humus/ledger/v1"
TOPIC_PREFIX = "humus/v1/_ingest/"
LEDGER_FILTER = TOPIC_PREFIX + "+/ledger"
MAX_GATEWAYS = 5_000
"""Gateways per message: a re-announcement of more is split (about 60 bytes each)."""
MAX_RANGES = 64
"""Ranges per gateway in a message: the newest ones (a ledger shared this way has one, plus one per hole)."""
MAX_BYTES = 1_000_000
"""Receivers refuse larger messages."""
MESSAGE_BYTES = 250_000
"""A message is cut at about this size (a gateway with MAX_RANGES ranges takes about 3 kB)."""
MAX_SEQ = 2**63 - 1
_LEDGER_ID = re.compile(r"[0-9a-f]{8,64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")

Ranges = Mapping[GatewayKey, Sequence[Interval]]


def ledger_topic(user: str) -> str:
    """Where a worker publishes: under its broker user (the ACL's name for it), else its client id."""
    return f"{TOPIC_PREFIX}{user}/ledger"


def is_ledger_topic(topic: str) -> bool:
    return topic.startswith(TOPIC_PREFIX) and topic.endswith("/ledger")


@dataclass(frozen=True)
class LedgerNews:
    ledger_id: str
    group: str
    by: str
    stored: dict[GatewayKey, tuple[Interval, ...]] = field(default_factory=dict)
    verified: dict[GatewayKey, tuple[Interval, ...]] = field(default_factory=dict)


def encode_news(ledger_id: str, group: str, by: str, stored: Ranges, verified: Ranges | None = None) -> list[bytes]:
    """Messages telling `stored` and `verified` seq ranges, each of at most MAX_GATEWAYS gateways and about
    MESSAGE_BYTES (well under MAX_BYTES, which receivers refuse, and the broker's packet limit)."""
    verified = verified or {}
    head = {"schema": SCHEMA, "ledger": ledger_id, "group": group, "by": by}

    def entry(s: str, g: str, ranges: Sequence[Interval]) -> str:
        return json.dumps([s, g, [list(r) for r in list(ranges)[-MAX_RANGES:]]], separators=(",", ":"))

    out: list[bytes] = []
    parts: tuple[list[str], list[str]] = ([], [])
    size = gateways = 0

    def flush() -> None:
        nonlocal size, gateways
        if gateways:
            text = json.dumps(head, separators=(",", ":"))[:-1]
            out.append(f'{text},"stored":[{",".join(parts[0])}],"verified":[{",".join(parts[1])}]}}'.encode())
        parts[0].clear()
        parts[1].clear()
        size = gateways = 0

    for s, g in sorted(set(stored) | set(verified)):
        texts = [entry(s, g, d[(s, g)]) if d.get((s, g)) else "" for d in (stored, verified)]
        if gateways and (gateways >= MAX_GATEWAYS or size + sum(map(len, texts)) > MESSAGE_BYTES):
            flush()
        for part, text in zip(parts, texts):
            if text:
                part.append(text)
        size += sum(map(len, texts)) + 2
        gateways += 1
    flush()
    return out


def decode_news(payload: bytes) -> LedgerNews:
    """The news in a message; `ValueError` saying what is wrong, where, and what was expected."""
    if len(payload) > MAX_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than {MAX_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"expected a JSON object with schema {SCHEMA!r}")
    ledger_id, group, by = doc.get("ledger"), doc.get("group"), doc.get("by")
    if not isinstance(ledger_id, str) or not _LEDGER_ID.fullmatch(ledger_id):
        raise ValueError("ledger: expected 8 to 64 lower-case hex digits")
    for name, v in (("group", group), ("by", by)):
        if not isinstance(v, str) or not _NAME.fullmatch(v):
            raise ValueError(f"{name}: expected 1 to 128 of letters, digits, '_', '.', '-'")
    return LedgerNews(ledger_id, group, by, _ranges(doc.get("stored", []), "stored"),
                      _ranges(doc.get("verified", []), "verified"))


def _ranges(items: object, where: str) -> dict[GatewayKey, tuple[Interval, ...]]:
    if not isinstance(items, list) or len(items) > MAX_GATEWAYS:
        raise ValueError(f"{where}: expected a list of at most {MAX_GATEWAYS} [site, gateway, ranges]")
    out: dict[GatewayKey, tuple[Interval, ...]] = {}
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item[:2])
                and all(ID_PATTERN.fullmatch(x) for x in item[:2]) and isinstance(item[2], list)
                and len(item[2]) <= MAX_RANGES):
            raise ValueError(f"{where}[{i}]: expected [site, gateway, ranges] with ids of a-z, 0-9 and '-' and "
                             f"at most {MAX_RANGES} ranges")
        ranges = []
        for r in item[2]:
            if not (isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
                    and 0 <= r[0] <= r[1] <= MAX_SEQ):
                raise ValueError(f"{where}[{i}]: range {str(r)[:60]} is not [first, last] seqs, "
                                 f"0 <= first <= last < 2**63")
            ranges.append((r[0], r[1]))
        out[(item[0], item[1])] = tuple(ranges)
    return out


def uncovered(news: Iterable[Interval], held: Sequence[Interval]) -> list[Interval]:
    """The intervals of `news` not inside one interval already `held` (sorted, disjoint): what a merge adds."""
    return [r for r in news if not any(lo <= r[0] and r[1] <= hi for lo, hi in held)]
