"""The MQTT wire contract: topics and the versioned JSON batch payload.

Schema documented in docs/wire.md. `encode_batch` is used by the collector,
`decode_batch` by the ingest side, which must reject anything that does not
follow the contract with a reason, never with a traceback. Decoding takes
a fast path first when msgspec is installed (humus.fastdecode: the same
answers, about ten times faster); everything it is unsure of, and every
rejection, comes from the exact path here.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Sequence

from humus.records import ID_PATTERN, MAX_REVISION, MAX_TIME_NS, Observation, QualityFlag, Source
from humus.records import short_repr as _show

SCHEMA = "humus/v1"
TOPIC_ROOT = "humus/v1"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Messages above this are rejected unread (a hostile or broken publisher)."""
MAX_OBS_PER_BATCH = 50_000


def obs_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/obs"


def status_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/status"


def alerts_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/alerts"


OBS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/obs"


class Rejection(str, Enum):
    """Why the ingest side refused a message (stored with it in the dead-letter table).

    Every member is documented in docs/wire.md, "Rejections".
    """

    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_VALUE = "bad_value"
    FUTURE_TIME = "future_time"
    UNKNOWN_GATEWAY = "unknown_gateway"
    BAD_SIGNATURE = "bad_signature"
    """A gateway with a registered key sent an unsigned batch, or one whose signature does not verify."""
    SEQ_JUMP = "seq_jump"
    """A seq absurdly far beyond what its gateway sent before (or not representable as a JSON number)."""
    STORE_REJECTED = "store_rejected"
    """Valid on the wire but refused by the store (e.g. a field type conflict in InfluxDB)."""


MAX_MESSAGE_CHARS = 400
"""A rejection's message is cut to this: it goes to logs and the dead-letter table."""


class WireError(ValueError):
    """A payload that breaks the wire contract; `reason` says which way, the message (one line) where."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS - 3] + "...")
        self.reason = reason
        self.seq: int | None = None
        """The batch's seq when the payload named a valid one and its site/gateway match the topic:
        the refusal can then be confirmed to that gateway (humus.receipts, `refused`)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One MQTT message: observations of one gateway with its sequence number.

    `observations` is a tuple, or, from the fast decoder, a `humus.obsrows.ObservationRows`
    that builds its `Observation`s only when iterated (the stores read its rows instead).
    """

    site: str
    gateway: str
    seq: int
    sent_ns: int
    observations: Sequence[Observation]
    signed: bool = False
    """The gateway's Ed25519 signature was verified against its registered key (humus.signing)."""


FAST_PATH = True
"""Decode through `humus.fastdecode` (msgspec) when it is installed; tests switch it off to compare."""
_fast_module: Any = None


def _fast_decoder() -> Any:
    """humus.fastdecode, imported on first use (gateways never decode), or None without msgspec."""
    global _fast_module
    if not FAST_PATH:
        return None
    if _fast_module is None:
        try:
            from humus import fastdecode
        except ImportError:
            fastdecode = False  # type: ignore[assignment]
        _fast_module = fastdecode
    return _fast_module or None


_OPTIONAL = ("depth_cm", "uncertainty", "flag_test", "model_id", "model_version")


def observation_to_dict(o: Observation) -> dict[str, Any]:
    """One observation as its JSON object (site and gateway live on the batch)."""
    d: dict[str, Any] = {
        "probe": o.probe,
        "quantity": o.quantity,
        "time_ns": o.time_ns,
        "value": list(o.value) if isinstance(o.value, tuple) else (None if math.isnan(o.value) else o.value),
        "unit": o.unit,
        "flag": int(o.flag),
        "source": o.source.value,
    }
    for k in _OPTIONAL:
        v = getattr(o, k)
        if v is not None:
            d[k] = v
    if o.wavelengths_nm is not None:
        d["wavelengths_nm"] = list(o.wavelengths_nm)
    if o.revision:
        d["rev"] = o.revision
    return d


def encode_batch(site: str, gateway: str, seq: int, observations: Iterable[Observation], sent_ns: int | None = None) -> bytes:
    """Serialise a batch; every observation must belong to `site`/`gateway`."""
    items = []
    for o in observations:
        if o.site != site or o.gateway != gateway:
            raise ValueError(f"observation of {o.site}/{o.gateway} in a batch of {site}/{gateway}")
        items.append(observation_to_dict(o))
    doc = {
        "schema": SCHEMA,
        "site": site,
        "gateway": gateway,
        "seq": seq,
        "sent_ns": time.time_ns() if sent_ns is None else sent_ns,
        "observations": items,
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def parse_obs_topic(topic: str) -> tuple[str, str]:
    """(site, gateway) from ``humus/v1/<site>/<gateway>/obs``."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "obs" \
            or not ID_PATTERN.fullmatch(parts[2]) or not ID_PATTERN.fullmatch(parts[3]):
        raise WireError(Rejection.BAD_TOPIC, f"topic {topic[:200]!r} is not {TOPIC_ROOT}/<site>/<gateway>/obs")
    return parts[2], parts[3]


def decode_batch(topic: str, payload: bytes, *, now_ns: int | None = None, max_future_s: float = 600.0) -> Batch:
    """Parse and validate one message against its topic; raise `WireError`, and nothing else, on any breach."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(Rejection.TOO_LARGE, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    site, gateway = parse_obs_topic(topic)
    limit_ns = (time.time_ns() if now_ns is None else now_ns) + int(max_future_s * 1e9)
    fast = _fast_decoder()
    if fast is not None:  # says yes to what the exact path below accepts, or hands it over (humus.fastdecode)
        try:
            got = fast.decode(site, gateway, SCHEMA, payload, MAX_OBS_PER_BATCH, limit_ns)
        except Exception:  # noqa: BLE001 - never a traceback: the exact path answers instead
            got = None
        if got is not None:
            return Batch(site, gateway, *got)
    doc = _parse(payload)
    if type(doc) is not dict:
        raise WireError(Rejection.BAD_SCHEMA, "payload is not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise WireError(Rejection.BAD_SCHEMA, f"schema is {_show(doc.get('schema'))}, expected {SCHEMA!r}")
    unknown = doc.keys() - _BATCH_KEYS
    if unknown:
        raise WireError(Rejection.BAD_SCHEMA, f"unknown batch keys {[_show(k) for k in sorted(unknown)[:5]]}")
    if doc.get("site") != site or doc.get("gateway") != gateway:
        raise WireError(Rejection.TOPIC_MISMATCH,
                        f"payload says {_show(doc.get('site'))}/{_show(doc.get('gateway'))}, "
                        f"topic says {site}/{gateway}")
    seq, sent_ns, items = doc.get("seq"), doc.get("sent_ns"), doc.get("observations")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise WireError(Rejection.BAD_SCHEMA, f"seq {_show(seq)} is not an integer from 0 to 2**63 - 1")
    if type(sent_ns) is not int or not 0 <= sent_ns < MAX_TIME_NS:
        raise WireError(Rejection.BAD_SCHEMA, f"sent_ns {_show(sent_ns)} is not an integer time in nanoseconds")
    if type(items) is not list or not 0 < len(items) <= MAX_OBS_PER_BATCH:
        raise WireError(Rejection.BAD_SCHEMA, f"observations must be a list of 1 to {MAX_OBS_PER_BATCH} objects")
    out = []
    try:
        for i, item in enumerate(items):
            o = _observation(site, gateway, i, item)
            if o.time_ns > limit_ns:
                raise WireError(Rejection.FUTURE_TIME,
                                f"observations[{i}] time_ns {o.time_ns} is more than {max_future_s:g} s in the future")
            out.append(o)
    except WireError as e:
        e.seq = seq
        raise
    return Batch(site, gateway, seq, sent_ns, tuple(out))


_BATCH_KEYS = frozenset({"schema", "site", "gateway", "seq", "sent_ns", "observations"})


class _NotJSON(Exception):
    """NaN or Infinity: Python's json reads them, RFC 8259 (section 6) has no such numbers."""


class _DuplicateKey(Exception):
    """An object names a key twice: RFC 8259 (section 4) leaves the meaning to the reader; we refuse it."""


def _reject_constant(name: str) -> float:
    raise _NotJSON(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _distinct_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(f"an object names the key {_show(k)} twice")
            seen.add(k)
    return d


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_distinct_pairs)


def _parse(payload: bytes) -> Any:
    """The payload as JSON: UTF-8 without a byte order mark (RFC 8259, section 8.1), no repeated keys."""
    try:
        text = payload.decode("utf-8")  # strict: also refuses encoded surrogates
    except UnicodeDecodeError as e:
        raise WireError(Rejection.MALFORMED_JSON, f"payload is not UTF-8: byte {e.start} ({e.reason})") from None
    if text.startswith("\ufeff"):
        raise WireError(Rejection.MALFORMED_JSON, "payload starts with a byte order mark (JSON over MQTT has none)")
    try:
        doc = _DECODER.decode(text)
        if not _keys_surely_distinct(text, doc):
            _STRICT_DECODER.decode(text)
    except _DuplicateKey as e:
        raise WireError(Rejection.BAD_SCHEMA, f"payload is ambiguous: {e}") from None
    except (json.JSONDecodeError, _NotJSON, RecursionError) as e:
        raise WireError(Rejection.MALFORMED_JSON, f"payload is not JSON: {str(e)[:200]}") from None
    except ValueError:
        # What is left is int() refusing a literal over sys.get_int_max_str_digits()
        # digits (CPython's defence against quadratic conversion, Python 3.11).
        raise WireError(Rejection.BAD_VALUE, f"payload holds an integer of more than "
                                             f"{sys.get_int_max_str_digits()} digits") from None
    return doc


def _keys_surely_distinct(text: str, doc: Any) -> bool:
    """True when no object of `doc` can have had a repeated key; False means "check with the strict decoder".

    Counting, not hooking: an object_pairs_hook costs a Python call per
    observation (about 10 % of decoding a batch). Every member of a JSON
    object has one ':' outside strings, so the colons of the text, less the
    colons counted in the parsed strings, bound the members from above; the
    dicts we see hold at most that many keys, exactly that many only if no
    key repeated and no other object exists.
    """
    if type(doc) is not dict:
        return ":" not in text
    items = doc.get("observations")
    items = items if type(items) is list else []
    keys = len(doc) + sum([len(x) for x in items if type(x) is dict])
    colons = text.count(":")
    if keys == colons:
        return True
    # Colons in strings ("2024-05-01T00:00" as a model version): discount those of the values
    # we see; a colon may also be written \u003a, which the raw count must then include.
    colons += text.count("\\u003a") + text.count("\\u003A")
    in_strings = sum([v.count(":") for v in doc.values() if type(v) is str])
    in_strings += sum([v.count(":") for x in items if type(x) is dict for v in x.values() if type(v) is str])
    return keys == colons - in_strings


_ITEM_KEYS = frozenset({"probe", "quantity", "time_ns", "value", "unit", "flag", "source", "wavelengths_nm", "rev",
                        *_OPTIONAL})
_REQUIRED_KEYS = frozenset({"probe", "quantity", "time_ns", "value", "unit", "flag", "source"})
_FLAGS = {int(f): f for f in QualityFlag}
_SOURCES = {s.value: s for s in Source}


def _observation(site: str, gateway: str, i: int, item: Any) -> Observation:
    # The ingest side decodes every observation of every message: this runs
    # hundreds of thousands of times a second, so plain lookups, no regexes
    # (Observation's own checks, names and texts included, run in its
    # constructor, and only once per distinct set of names).
    if type(item) is not dict:
        raise WireError(Rejection.BAD_SCHEMA, f"observations[{i}] is not an object")
    keys = item.keys()
    if not (keys <= _ITEM_KEYS and keys >= _REQUIRED_KEYS):
        unknown, missing = [_show(k) for k in sorted(keys - _ITEM_KEYS)[:5]], sorted(_REQUIRED_KEYS - keys)
        raise WireError(Rejection.BAD_SCHEMA, f"observations[{i}]: unknown keys {unknown}, missing keys {missing}")
    f, src = item["flag"], item["source"]
    flag = _FLAGS.get(f) if type(f) is int else None
    source = _SOURCES.get(src) if type(src) is str else None
    if flag is None or source is None:
        raise WireError(Rejection.BAD_VALUE,
                        f"observations[{i}]: flag must be 1, 2, 3, 4 or 9 and source 'raw' or 'calibrated'")
    rev = item.get("rev", 0)
    if type(rev) is not int or not 0 <= rev < MAX_REVISION:
        raise WireError(Rejection.BAD_VALUE,
                        f"observations[{i}]: rev {_show(rev)} is not an integer from 0 to 2**31 - 1")
    value, wl, depth, unc = item["value"], item.get("wavelengths_nm"), item.get("depth_cm"), item.get("uncertainty")
    try:
        tv = type(value)
        if tv is int:
            value = float(value)
        elif tv is list:
            value = tuple([float(x) if type(x) is int else x for x in value])
        elif value is None:
            value = math.nan
        elif tv is not float:
            raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: value {_show(value)} is not a number, "
                                                 "null or a list of numbers")
        if type(wl) is list:
            wl = tuple([float(x) if type(x) is int else x for x in wl])
        elif wl is not None:
            raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: wavelengths_nm is not a list of numbers")
        if type(depth) is int:
            depth = float(depth)
        if type(unc) is int:
            unc = float(unc)
    except OverflowError:
        raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: an integer is beyond the range of a 64-bit float "
                                             "(value, wavelengths_nm, depth_cm or uncertainty)") from None
    try:
        return Observation(
            site, gateway, item["probe"], item["quantity"], item["time_ns"], value, item["unit"], depth, unc,
            flag, item.get("flag_test"), source, item.get("model_id"), item.get("model_version"), wl, rev,
        )
    except (ValueError, TypeError) as e:
        raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: {e}") from None

