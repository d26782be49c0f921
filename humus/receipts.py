"""End-to-end receipts: the centre tells a gateway which batches are *stored*.

A broker's PUBACK only says the broker took a message; Mosquitto 2.0 hands a
message published just after a restart, before the ingest workers have
re-subscribed their shared subscription, to no one and still acknowledges
it. So a gateway keeps every batch in its spool until a receipt from the
centre names its seq, and re-sends what stays unconfirmed (docs/wire.md,
"Receipts").

Topic ``humus/v1/<site>/<gateway>/receipt``, QoS 1, not retained, written
by the ingest workers only (the broker's ACL), read by that gateway only::

    {"schema": "humus/v1/receipt", "site": "farm-1", "gateway": "gw-1",
     "time_ns": 1790000000123456789, "by": "ingest-1",
     "stored": [[1840, 1842], [1850, 1850]],     # durably stored (or already stored before)
     "refused": [[1843, 1843]],                  # kept in the centre's dead-letter table
     "resend": [[1800, 1839]]}                   # the centre misses these: send them again

Every list is optional and holds closed ranges ``[first, last]`` of seqs.
A seq that is ``stored`` or ``refused`` is at the centre for good: the
gateway deletes it. ``resend`` is only a request: the gateway re-sends
whatever of it it still has.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable

from humus.wire import TOPIC_ROOT

RECEIPT_SCHEMA = "humus/v1/receipt"
MAX_RANGES = 10_000
"""A receipt with more ranges is refused (a hostile or broken publisher)."""
MAX_RECEIPT_BYTES = 1024 * 1024
SEQ_LIMIT = 2**63

Range = tuple[int, int]


def receipt_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/receipt"


def to_ranges(seqs: Iterable[int]) -> list[Range]:
    """Sorted, merged closed ranges covering `seqs`."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(a, b) for a, b in out]


def in_ranges(seq: int, ranges: Iterable[Range]) -> bool:
    return any(a <= seq <= b for a, b in ranges)


@dataclass(frozen=True, slots=True)
class Receipt:
    site: str
    gateway: str
    stored: tuple[Range, ...] = ()
    refused: tuple[Range, ...] = ()
    resend: tuple[Range, ...] = ()
    by: str = ""

    def confirmed(self, seqs: Iterable[int]) -> list[int]:
        """The seqs among `seqs` that this receipt says are at the centre for good."""
        done = self.stored + self.refused
        return [s for s in seqs if in_ranges(s, done)]


def encode_receipt(site: str, gateway: str, *, stored: Iterable[int] = (), refused: Iterable[int] = (),
                   resend: Iterable[Range] = (), by: str = "", now_ns: int | None = None) -> bytes:
    doc: dict = {"schema": RECEIPT_SCHEMA, "site": site, "gateway": gateway,
                 "time_ns": time.time_ns() if now_ns is None else now_ns}
    if by:
        doc["by"] = by
    for key, ranges in (("stored", to_ranges(stored)), ("refused", to_ranges(refused)),
                        ("resend", [tuple(r) for r in resend])):
        if ranges:
            doc[key] = [list(r) for r in ranges]
    return json.dumps(doc, separators=(",", ":")).encode()


class ReceiptError(ValueError):
    """A receipt that does not follow the contract; the gateway logs it and ignores it."""


def decode_receipt(payload: bytes, site: str, gateway: str) -> Receipt:
    """Parse a receipt meant for `site`/`gateway`; ReceiptError for anything else."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"receipt of {len(payload)} bytes exceeds {MAX_RECEIPT_BYTES}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ReceiptError(f"receipt is not UTF-8 JSON ({str(e)[:100]})") from None
    if not isinstance(doc, dict) or doc.get("schema") != RECEIPT_SCHEMA:
        raise ReceiptError(f"receipt schema is not {RECEIPT_SCHEMA!r}")
    if doc.get("site") != site or doc.get("gateway") != gateway:
        raise ReceiptError(f"receipt for {str(doc.get('site'))[:70]}/{str(doc.get('gateway'))[:70]}, "
                           f"this gateway is {site}/{gateway}")
    parsed = {}
    for key in ("stored", "refused", "resend"):
        parsed[key] = _ranges(doc.get(key, []), key)
    by = doc.get("by", "")
    return Receipt(site, gateway, by=by[:200] if isinstance(by, str) else "", **parsed)


def _ranges(value: object, key: str) -> tuple[Range, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANGES:
        raise ReceiptError(f"receipt {key} is not a list of at most {MAX_RANGES} [first, last] ranges")
    out = []
    for r in value:
        if not (isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
                and 0 <= r[0] <= r[1] < SEQ_LIMIT):
            raise ReceiptError(f"receipt {key} holds {str(r)[:40]}, expected [first, last] with 0 <= first <= last")
        out.append((r[0], r[1]))
    return tuple(out)
