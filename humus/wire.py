"""The MQTT wire contract: topics and the versioned JSON batch payload.

Schema documented in docs/wire.md. `encode_batch` is used by the collector,
`decode_batch` by the ingest side, which must reject anything that does not
follow the contract with a reason, never with a traceback.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable

from humus.records import ID_PATTERN, MAX_TIME_NS, Observation, QualityFlag, Source, observation_problems

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
    """Why the ingest side refused a message (stored with it in the dead-letter table)."""

    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_VALUE = "bad_value"
    FUTURE_TIME = "future_time"
    UNKNOWN_GATEWAY = "unknown_gateway"
    STORE_REJECTED = "store_rejected"
    """Valid on the wire but refused by the store (e.g. a field type conflict in InfluxDB)."""


class WireError(ValueError):
    """A payload that breaks the wire contract; `reason` says which way."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Batch:
    """One MQTT message: observations of one gateway with its sequence number."""

    site: str
    gateway: str
    seq: int
    sent_ns: int
    observations: tuple[Observation, ...]


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
            or not ID_PATTERN.match(parts[2]) or not ID_PATTERN.match(parts[3]):
        raise WireError(Rejection.BAD_TOPIC, f"topic {topic[:200]!r} is not {TOPIC_ROOT}/<site>/<gateway>/obs")
    return parts[2], parts[3]


def decode_batch(topic: str, payload: bytes, *, now_ns: int | None = None, max_future_s: float = 600.0) -> Batch:
    """Parse and validate one message against its topic; raise `WireError` on any breach."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(Rejection.TOO_LARGE, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    site, gateway = parse_obs_topic(topic)
    try:
        doc = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise WireError(Rejection.MALFORMED_JSON, f"payload is not JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise WireError(Rejection.BAD_SCHEMA, "payload is not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise WireError(Rejection.BAD_SCHEMA, f"schema is {str(doc.get('schema'))[:50]!r}, expected {SCHEMA!r}")
    unknown = set(doc) - {"schema", "site", "gateway", "seq", "sent_ns", "observations"}
    if unknown:
        raise WireError(Rejection.BAD_SCHEMA, f"unknown batch keys {sorted(unknown)[:5]}")
    if doc.get("site") != site or doc.get("gateway") != gateway:
        raise WireError(Rejection.TOPIC_MISMATCH,
                        f"payload says {str(doc.get('site'))[:70]}/{str(doc.get('gateway'))[:70]}, topic says {site}/{gateway}")
    seq, sent_ns, items = doc.get("seq"), doc.get("sent_ns"), doc.get("observations")
    if not _is_int(seq) or seq < 0 or seq >= 2**63:
        raise WireError(Rejection.BAD_SCHEMA, f"seq {str(seq)[:30]} is not a non-negative integer")
    if not _is_int(sent_ns) or not 0 <= sent_ns < MAX_TIME_NS:
        raise WireError(Rejection.BAD_SCHEMA, "sent_ns is not an integer time in nanoseconds")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_OBS_PER_BATCH:
        raise WireError(Rejection.BAD_SCHEMA, f"observations must be a list of 1 to {MAX_OBS_PER_BATCH} objects")
    limit_ns = (time.time_ns() if now_ns is None else now_ns) + int(max_future_s * 1e9)
    out = []
    for i, item in enumerate(items):
        o = _observation(site, gateway, i, item)
        if o.time_ns > limit_ns:
            raise WireError(Rejection.FUTURE_TIME,
                            f"observations[{i}] time_ns {o.time_ns} is more than {max_future_s:g} s in the future")
        out.append(o)
    return Batch(site, gateway, seq, sent_ns, tuple(out))


_ITEM_KEYS = frozenset({"probe", "quantity", "time_ns", "value", "unit", "flag", "source", "wavelengths_nm",
                        *_OPTIONAL})
_REQUIRED_KEYS = frozenset({"probe", "quantity", "time_ns", "value", "unit", "flag", "source"})
_FLAGS = {int(f): f for f in QualityFlag}
_SOURCES = {s.value: s for s in Source}


def _observation(site: str, gateway: str, i: int, item: Any) -> Observation:
    # The ingest side decodes every observation of every message: this runs
    # hundreds of thousands of times a second, so plain lookups, no regexes
    # (Observation's own checks run once, in its constructor).
    if type(item) is not dict:
        raise WireError(Rejection.BAD_SCHEMA, f"observations[{i}] is not an object")
    keys = item.keys()
    if not (keys <= _ITEM_KEYS and keys >= _REQUIRED_KEYS):
        unknown, missing = sorted(keys - _ITEM_KEYS)[:5], sorted(_REQUIRED_KEYS - keys)
        raise WireError(Rejection.BAD_SCHEMA, f"observations[{i}]: unknown keys {unknown}, missing keys {missing}")
    f, src = item["flag"], item["source"]
    flag = _FLAGS.get(f) if type(f) is int else None
    source = _SOURCES.get(src) if type(src) is str else None
    if flag is None or source is None:
        raise WireError(Rejection.BAD_VALUE,
                        f"observations[{i}]: flag must be 1, 2, 3, 4 or 9 and source 'raw' or 'calibrated'")
    value = item["value"]
    tv = type(value)
    if tv is int:
        value = float(value)
    elif tv is list:
        value = tuple([float(x) if type(x) is int else x for x in value])
    elif value is None:
        value = math.nan
    wl = item.get("wavelengths_nm")
    if type(wl) is list:
        wl = tuple([float(x) if type(x) is int else x for x in wl])
    depth = item.get("depth_cm")
    unc = item.get("uncertainty")
    flag_test, model_id, model_version = item.get("flag_test"), item.get("model_id"), item.get("model_version")
    for k, v in (("flag_test", flag_test), ("model_id", model_id), ("model_version", model_version)):
        if v is not None and (type(v) is not str or len(v) > 128):
            raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: {k} must be a string of at most 128 characters")
    try:
        return Observation(
            site, gateway, item["probe"], item["quantity"], item["time_ns"], value, item["unit"],
            float(depth) if type(depth) is int else depth,
            float(unc) if type(unc) is int else unc,
            flag, flag_test, source, model_id, model_version, wl,
        )
    except (ValueError, TypeError) as e:
        raise WireError(Rejection.BAD_VALUE, f"observations[{i}]: {str(e)[:300]}") from None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")
