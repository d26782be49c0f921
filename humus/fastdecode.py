"""The fast path of `humus.wire.decode_batch`: msgspec structs, checked column by column.

Why msgspec: it parses JSON straight into typed structs in C (types,
required and unknown keys checked as it goes), about ten times faster than
`json.loads` followed by per-value Python checks, it is maintained, has no
dependency of its own, and builds wheels for x86-64 and 64-bit ARM (a
centre on a Raspberry Pi 4/5). Only the ingest side imports it; gateways
never do, and without it `decode_batch` takes its exact path alone.

Contract: `decode` returns the `Batch` that the exact decoder would return,
or None, which means "decode exactly". It never refuses anything itself:
any doubt (a msgspec error, a check that fails, a colon count that does
not add up) hands the payload to the exact decoder, which then accepts it
or raises the one documented reason and message it always did. So every
rejection stays the exact decoder's, and this path only ever says yes to
what that one says yes to (tests/humus/test_wire_fast.py compares both).

The checks, per batch instead of per value:
- names: each distinct (probe, quantity, depth, unit, flag_test, model,
  source) is checked once by building one `Observation` of it (the record's
  own checks); valid ones are remembered, keyed by the JSON text of the
  names (one msgspec call per batch), which the row's key also is
  (`ObservationRows.keys`: the line-protocol encoder's tag-set cache);
- numbers: msgspec refuses NaN, infinities and floats out of range; time,
  flag and revision are checked by min/max or set over their columns;
- repeated keys (msgspec keeps the last silently; the exact decoder refuses
  them): the colons of the payload must add up to the keys decoded, as in
  `humus.wire._keys_surely_distinct`; optional keys sent as null (the
  collector never does) only make the count fall back to the exact path.

The rows come with their columns (`DecodedRows.columns`), which the
line-protocol encoder formats a column at a time.
"""

from __future__ import annotations

from functools import partial
from operator import is_not

import msgspec
from msgspec.structs import astuple

from humus.obsrows import ObservationRows
from humus.records import MAX_REVISION, MAX_TIME_NS, Observation, QualityFlag, Source


class WireObservation(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One observation object of the payload (docs/wire.md); site and gateway live on the batch."""

    probe: str
    quantity: str
    time_ns: int
    value: float | list[float] | None
    unit: str
    flag: int
    source: str
    depth_cm: float | None = None
    uncertainty: float | None = None
    flag_test: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    wavelengths_nm: list[float] | None = None
    rev: int = 0


class WireBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    schema: str
    site: str
    gateway: str
    seq: int
    sent_ns: int
    observations: list[WireObservation]


class DecodedRows(ObservationRows):
    """`ObservationRows` that also hand their columns over (time_ns, value, uncertainty, flag: tuples in row
    order), so that a store encodes them column by column (observatory.stores.lineprotocol)."""

    __slots__ = ("columns",)


_DECODER = msgspec.json.Decoder(WireBatch)
_ENCODE = msgspec.json.Encoder().encode
_FIELDS = WireObservation.__struct_fields__
(_PROBE, _QUANTITY, _TIME, _VALUE, _UNIT, _FLAG, _SOURCE, _DEPTH, _UNC, _FLAG_TEST, _MODEL_ID, _MODEL_VERSION,
 _WL, _REV) = map(_FIELDS.index, ("probe", "quantity", "time_ns", "value", "unit", "flag", "source", "depth_cm",
                                  "uncertainty", "flag_test", "model_id", "model_version", "wavelengths_nm", "rev"))
_NOT_NONE = partial(is_not, None)
_FLAG_CODES = frozenset(int(f) for f in QualityFlag)
_SOURCES = {s.value: s for s in Source}
_MISSING = int(QualityFlag.MISSING)
_REQUIRED_PER_ITEM = 7
_BATCH_KEYS = 6

_known: dict[tuple[str, str], set[bytes]] = {}
"""Per site/gateway: each distinct set of names found valid, by its key (the JSON text of the names)."""
_KNOWN_GATEWAYS_MAX = 20_000
_KNOWN_NAMES_MAX = 10_000


def decode(site: str, gateway: str, schema: str, payload: bytes, max_obs: int, limit_ns: int):
    """(seq, sent_ns, ObservationRows) of a payload the exact decoder accepts, or None: decode exactly."""
    try:
        doc = _DECODER.decode(payload)
    except Exception:  # noqa: BLE001 - any refusal is the exact decoder's to explain
        return None
    if doc.schema != schema or doc.site != site or doc.gateway != gateway:
        return None
    seq, sent_ns, items = doc.seq, doc.sent_ns, doc.observations
    n = len(items)
    if not (0 <= seq < 2**63 and 0 <= sent_ns < MAX_TIME_NS and 0 < n <= max_obs):
        return None

    # All columns in one pass (msgspec's astuple, then zip). Each row's names are keyed by their JSON text,
    # made in one call for the batch: bytes, which hash once and which the garbage collector never scans
    # (a tuple per row kept it busy). JSON has no colon outside strings, so the colons of the names are
    # the colons of their text.
    cols = list(zip(*map(astuple, items)))
    depths, flag_tests = cols[_DEPTH], cols[_FLAG_TEST]
    model_ids, model_versions = cols[_MODEL_ID], cols[_MODEL_VERSION]
    names_text = _ENCODE(list(zip(cols[_PROBE], cols[_QUANTITY], depths, cols[_UNIT], flag_tests, model_ids,
                                  model_versions, cols[_SOURCE])))
    row_keys = names_text[2:-2].split(b"],[")
    if len(row_keys) != n:  # "],[" inside a name
        return None
    known = _known.get((site, gateway))
    if known is None:
        if len(_known) >= _KNOWN_GATEWAYS_MAX:
            _known.clear()
        known = _known[(site, gateway)] = set()
    new = set(row_keys).difference(known)
    for key in new:
        it = items[row_keys.index(key)]
        if not _names_valid(site, gateway, (it.probe, it.quantity, it.depth_cm, it.unit, it.flag_test, it.model_id,
                                            it.model_version, it.source)):
            return None
    if new:
        if len(known) + len(new) > _KNOWN_NAMES_MAX:
            known.clear()
        known.update(new)
    colons_in_names = names_text.count(b":")
    optional = 4 * n - depths.count(None) - flag_tests.count(None) - model_ids.count(None) \
        - model_versions.count(None)

    times = cols[_TIME]
    t_min, t_max = min(times), max(times)
    if t_min < 0 or t_max >= MAX_TIME_NS or t_max > limit_ns:
        return None
    flags = cols[_FLAG]
    if not set(flags) <= _FLAG_CODES:
        return None
    revs = cols[_REV]
    if min(revs) < 0 or max(revs) >= MAX_REVISION:
        return None
    uncs = cols[_UNC]
    n_unc = n - uncs.count(None)
    if n_unc:
        known_uncs = list(filter(_NOT_NONE, uncs))
        total = sum(known_uncs)
        if min(known_uncs) < 0 or total - total != 0:
            return None
    values = cols[_VALUE]
    n_wl = n - cols[_WL].count(None)
    kinds = set(map(type, values))
    if kinds == {float}:
        total = sum(values)
        if n_wl or (total - total != 0 and not all(v - v == 0 for v in values)):
            return None
    elif not _mixed_values_valid(items, n_wl):
        return None

    # Keys decoded against the colons of the payload (see the module docstring).
    keys = _BATCH_KEYS + _REQUIRED_PER_ITEM * n + n_unc + n_wl + (n - revs.count(0)) + optional
    colons = payload.count(b":")
    if keys != colons:
        colons += payload.count(b"\\u003a") + payload.count(b"\\u003A")
        if keys != colons - colons_in_names - schema.count(":"):
            return None
    rows = DecodedRows(site, gateway, items, t_min, t_max, n - revs.count(0), row_keys)
    rows.columns = (times, values, uncs, flags)
    return seq, sent_ns, rows


def _names_valid(site: str, gateway: str, key: tuple) -> bool:
    """Check one distinct set of names with the record's own rules."""
    probe, quantity, depth, unit, flag_test, model_id, model_version, source = key
    src = _SOURCES.get(source)
    if src is None:
        return False
    try:
        Observation(site, gateway, probe, quantity, 0, 0.0, unit, depth, None, QualityFlag.NOT_EVALUATED,
                    flag_test, src, model_id, model_version)
    except (ValueError, TypeError):
        return False
    return True


def _mixed_values_valid(items: list[WireObservation], n_wl: int) -> bool:
    """Missing values (null, flag 9 only) and spectra (finite, with an axis of the same length)."""
    spectra = 0
    for it in items:
        v = it.value
        if type(v) is float:
            if v - v != 0 or it.wavelengths_nm is not None:
                return False
        elif v is None:
            if it.flag != _MISSING or it.wavelengths_nm is not None:
                return False
        else:
            wl = it.wavelengths_nm
            if not v or wl is None or len(wl) != len(v):
                return False
            total = sum(v) + sum(wl)
            if total - total != 0 and not all(x - x == 0 for x in (*v, *wl)):
                return False
            spectra += 1
    return spectra == n_wl
