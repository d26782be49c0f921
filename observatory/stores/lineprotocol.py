r"""Observations as InfluxDB line protocol, and spectra packed losslessly into string fields.

Point layout 2 (docs/stores.md has the reader's version; the layout 1 of
archives written before is kept below for reading and migrating them):

- Measurement `humus_obs` for scalar values, `humus_obs_spectrum` for
  spectra, `humus_wavelength_axis` for each distinct wavelength axis. One
  measurement per kind rather than per quantity: a selection by any tag is
  one InfluxQL statement, and the quantity is a tag like the others.
- Tags, sorted by key (InfluxDB, "Optimize writes": sorted tags parse
  faster): depth_cm (left out when unknown; written as a configuration
  writes it, "10" for 10.0, "12.5", so that `depth_cm='10'` finds it),
  gateway, model_id, model_version (left out when none), probe, quantity,
  site, source, unit (left out when ""). What identifies a series or
  rarely changes is a tag: InfluxDB indexes a tag once per series, while a
  string field is parsed, stored and compacted on every point (measured:
  bench/influx_layout.py, layout 2 costs the server about half the CPU of
  layout 1 per point).
- Fields: value (float; left out when missing), uncertainty (float; left
  out when unknown), flag (int, QARTOD) and qc (int): 4 x the code of the
  test that set the flag (TEST_CODES; 0 none, 255 "named in the string
  field flag_test", written only then) + the bits of what this write did
  not carry (1: value, 2: uncertainty) + SIGNED (1024) when the point
  came from a batch whose Ed25519 signature ingest verified against the
  gateway's registered key (docs/wire.md, "Signed batches"); readers take
  the test code as (qc >> 2) & 255. Why `qc`: InfluxDB merges the
  fields of a rewritten point (same series and time), so a field left out
  keeps the value of an earlier write; qc, written on every point, says
  which fields belong to this write, and readers ignore the others. Why
  codes: a string field on every point cost the server a quarter of its CPU
  per point (bench/influx_layout.py); all-numeric points cost it about
  what plain 3-field points do. A test name is a field, not a tag: a late
  verdict re-publishes a point with another flag_test, and a changed tag
  would make a second point beside the first instead of replacing it.
  Spectra: `values` = base64 of little-endian float64 (split into
  `values_1`, `values_2`... past 48,000 characters, under the 64 KB string
  field limit of InfluxDB 1.x; readers take as many chunks as `n_bands`
  needs), `n_bands` (int), `axis` = SHA-256 of the float64 wavelengths.
  `humus_wavelength_axis,axis=<sha256>` holds the axis the same way,
  written at the time of the first spectrum of each batch that uses it,
  so it ages out with its spectra under a retention policy.
- Timestamps in nanoseconds (`precision=ns`).
- A rewrite that changes unit, model_id or model_version writes another
  series: readers keep, per series key and time, the point of the latest
  model version (observatory.stores.influx).

Line protocol syntax: InfluxDB 1.x docs, "Line protocol reference",
"Special characters": measurement names escape commas and spaces; tag keys
and tag values escape commas, equals signs and spaces; string field values
escape double quotes and backslashes; all with a backslash. Its note: "Line
protocol does not support the newline character \n in tag values or field
values". Ids are validated upstream, so escaping is defence in depth; what
cannot be written exactly is refused with `StoreRejected` before any line
is returned, so a batch is stored whole or not at all:

- a newline or carriage return in a tag or string (it ends the point: the
  rest of the line became a point of its own or a parse error, after the
  points before it were stored);
- a backslash in a measurement, tag key or tag value (so also in a unit or
  a model id or version). Measured on this project's servers: InfluxDB
  1.6.7 (Debian's) stores the tag written `a\\b` as `a\\b` and refuses a
  tag ending in a backslash; VictoriaMetrics (the v2 write API) stores
  `a\\b` as `a\b`. No spelling is read the same by both;
- an empty site, gateway, probe or quantity (the reference: "Tag values
  cannot be empty").

Lines are encoded per batch: each series' tag set once per worker
(cached, with the ends of its lines), then one f-string per observation
from the rows as decoded (humus.obsrows), without an `Observation` object
each. Rows from humus.fastdecode bring their columns: the floats of a
column are formatted in one msgspec call (the digits repr() writes; a
column msgspec would spell otherwise takes the per-row way).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from operator import attrgetter
from typing import Iterable, Sequence

import numpy as np

try:  # numbers of a whole column formatted in C (installed with the centre extra; optional)
    from msgspec.json import encode as _json_encode
except ImportError:  # pragma: no cover - armv7l: no msgspec wheel, each number by repr()
    _json_encode = None

from humus.obsrows import BatchedObservations, ObservationRows, groups
from humus.records import Observation
from observatory.store import StoreRejected

# Prefixed: a database is often shared with other systems (Telegraf, a peer project), and
# a bare `observation` measurement of theirs with other field types would refuse our writes.
SCALAR, SPECTRUM, AXIS = "humus_obs", "humus_obs_spectrum", "humus_wavelength_axis"
LEGACY_SCALAR, LEGACY_SPECTRUM = "humus_observation", "humus_spectrum"
"""Layout 1 (archives written before schema 2): read, and migrated by observatory.archive_migrate."""
ABSENT_VALUE, ABSENT_UNCERTAINTY = 1, 2
"""Bits of `qc` (qc & 3): what this write of the point did not carry."""
SIGNED = 1024
"""Bit of `qc` (qc & SIGNED): this write came from a batch whose signature verified. Above 4 x 255 + 3, the
largest test code and absent bits; in qc, not a field of its own, because qc is on every write of a point
(a field a later unsigned write left out would keep the earlier write's value)."""
TEST_MASK = 255
"""The test code in `qc` is (qc >> 2) & TEST_MASK."""
TEST_CODES = {
    "gross_range": 1, "spike": 2, "flat_line": 3, "rate_of_change": 4, "climatology": 5, "location": 6,
    "attenuated_signal": 7, "neighbor": 8, "missing": 9, "missing_input": 10, "clock_unsynced": 11,
    "calibration_missing": 12, "calibration_error": 13, "applicability_domain": 14, "timeout": 15,
    "crc_error": 16, "garbled": 17, "partial": 18, "out_of_range": 19, "saturated": 20, "stuck": 21,
    "absent": 22, "busy": 23, "error": 24, "no_answer": 25,
}
"""flag_test names as codes in `qc` ((qc >> 2) & TEST_MASK); 0 is no test. Append only: archives keep these numbers."""
TEST_NAMED = 255
"""Code of a test name not in TEST_CODES: the name is in the string field `flag_test` of the same write."""
TEST_NAMES = {code: name for name, code in TEST_CODES.items()}
CHUNK_CHARS = 48_000
"""Base64 characters per string field: below InfluxDB 1.x's 64 KB string field limit."""

_NEEDS_CARE = re.compile(r"[,= \\\n\r]")
"""In a name or tag: escaped (comma, equals sign, space) or refused (backslash, newline, carriage return)."""


def escape_measurement(name: str, subject: object = None) -> str:
    """A measurement name as line protocol: commas and spaces escaped."""
    _refuse_unwritable(name, "measurement name", subject)
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_tag(text: str, where: str = "tag", subject: object = None) -> str:
    """A tag key or tag value as line protocol: commas, equals signs and spaces escaped."""
    if _NEEDS_CARE.search(text) is None and text:
        return text
    _refuse_unwritable(text, where, subject)
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _refuse_unwritable(text: str, where: str, subject: object) -> None:
    for ch, name in (("\n", "a newline (a line break)"), ("\r", "a carriage return (a line break)"),
                     ("\\", "a backslash")):
        if ch in text:
            raise StoreRejected(f"{_describe(subject)}: {where} {text[:60]!r} holds {name}, which line protocol "
                                "cannot carry exactly; nothing of this batch was sent")
    if not text:
        raise StoreRejected(f"{_describe(subject)}: {where} is empty, which line protocol cannot carry; "
                            "nothing of this batch was sent")


def _describe(subject: object) -> str:
    if isinstance(subject, Observation):
        subject = (subject.site, subject.gateway, subject)
    if isinstance(subject, tuple) and len(subject) == 3:
        site, gateway, o = subject
        return (f"observation {str(site)[:64]!r}/{str(gateway)[:64]!r}/{str(o.probe)[:64]!r} "
                f"{str(o.quantity)[:64]!r} at {o.time_ns}")
    return "line protocol" if subject is None else str(subject)[:200]


_AXIS_KEY = "axis="


def _string(v: str | None) -> str:
    return '"' + (v or "").replace("\\", "\\\\").replace('"', '\\"') + '"'


def depth_tag(depth: float | None) -> str | None:
    """The depth as a configuration writes it: "10" for 10.0, "12.5" for 12.5 (None: no tag)."""
    if depth is None:
        return None
    d = float(depth)
    return str(int(d)) if d.is_integer() and abs(d) < 1e15 else repr(d)


def pack_floats(values: Sequence[float] | np.ndarray) -> tuple[bytes, str]:
    """(float64 little-endian bytes, their base64 text)."""
    raw = np.asarray(values, dtype="<f8").tobytes()
    return raw, base64.b64encode(raw).decode("ascii")


def unpack_floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8")


def chunk_fields(name: str, text: str) -> str:
    parts = [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    return ",".join(f"{name if i == 0 else f'{name}_{i}'}={_string(p)}" for i, p in enumerate(parts))


def join_chunks(fields: dict[str, object], name: str, chunks: int | None = None) -> str:
    """Reassemble `name`, `name_1`, `name_2`... from a row of fields (`chunks` of them when known:
    a rewrite with fewer chunks leaves the old later ones in place)."""
    parts = [fields.get(name) or ""]
    i = 1
    while (chunks is None or i < chunks) and fields.get(f"{name}_{i}"):
        parts.append(fields[f"{name}_{i}"])
        i += 1
    return "".join(parts)


def chunks_for(n_bands: int) -> int:
    """How many string fields hold the base64 of `n_bands` float64 values."""
    return max(1, -(-(4 * -(-8 * n_bands // 3)) // CHUNK_CHARS))


def axis_id(wavelengths: Sequence[float]) -> tuple[str, str]:
    """(sha256 hex of the float64 axis, base64 of it)."""
    raw, text = pack_floats(wavelengths)
    return hashlib.sha256(raw).hexdigest(), text


# -- layout 2 --------------------------------------------------------------------------------------

_SOURCE_TEXT = {"raw": "raw", "calibrated": "calibrated"}  # Source members hash and compare as their value
_MAX_CACHED = 100_000
_heads_cache: dict[tuple[str, str, bool], dict[object, tuple[str, int, str, str, str]]] = {}
"""Per site/gateway/signed, per distinct names of a row: ("humus_obs,<tag set> ", 4 x test code (+ SIGNED),
flag_test field, and the end of a scalar line after its flag with and without an uncertainty:
"i,qc=<qc>i<flag_test field> "); the signed bit lives in the cache key, so it costs a signed batch nothing per row.
Building the tag set was a third of the encoding time; now it is one dict lookup per row."""

NAMES = attrgetter("probe", "quantity", "depth_cm", "unit", "flag_test", "model_id", "model_version", "source")
"""The names of a row: its key in the tag-set cache, unless the rows come with keys (`ObservationRows.keys`:
humus.fastdecode keys each row by the JSON text of these names, which stands for them one to one)."""


def _tag_set(site: str, gateway: str, r) -> str:
    where = (site, gateway, r)
    source = _SOURCE_TEXT.get(r.source)
    if source is None:
        raise StoreRejected(f"{_describe(where)}: source {str(r.source)[:40]!r} is not raw or calibrated")
    tags = [("depth_cm", depth_tag(r.depth_cm)), ("gateway", gateway), ("model_id", r.model_id or None),
            ("model_version", r.model_version or None), ("probe", r.probe), ("quantity", r.quantity),
            ("site", site), ("source", source), ("unit", r.unit or None)]
    return ",".join(f"{k}={escape_tag(v, f'tag {k}', where)}" for k, v in tags
                    if v is not None or k in ("gateway", "probe", "quantity", "site"))


def _heads(site: str, gateway: str, rows: Sequence, keys: list | None,
           signed: bool = False) -> list[tuple[str, int, str, str, str]]:
    """(head, 4 x test code (+ SIGNED), flag_test field, line ends) of each row, from the cache of each distinct
    set of names (`_heads_cache`)."""
    cache = _heads_cache.get((site, gateway, signed))
    if cache is None:
        if len(_heads_cache) >= _MAX_CACHED // 10:
            _heads_cache.clear()
        cache = _heads_cache[(site, gateway, signed)] = {}
    if keys is None:
        keys = list(map(NAMES, rows))
    heads = list(map(cache.get, keys))
    if None in heads:
        for i, head in enumerate(heads):
            if head is None:
                head = cache.get(keys[i])
                if head is None:
                    if len(cache) >= _MAX_CACHED:
                        cache.clear()
                    r = rows[i]
                    code, named = _test_code(site, gateway, r)
                    qc = code + SIGNED if signed else code
                    head = cache[keys[i]] = (f"{SCALAR},{_tag_set(site, gateway, r)} ", qc, named,
                                             f"i,qc={qc}i{named} ", f"i,qc={qc + ABSENT_UNCERTAINTY}i{named} ")
                heads[i] = head
    return heads


def _test_code(site: str, gateway: str, r) -> tuple[int, str]:
    """(4 x the test's code, "" or the `flag_test` string field for a name not in TEST_CODES)."""
    test = r.flag_test
    code = TEST_CODES.get(test) if test else 0
    if code is not None:
        return 4 * code, ""
    if "\n" in test or "\r" in test:
        raise StoreRejected(f"{_describe((site, gateway, r))}: flag_test {test[:60]!r} holds a line break, "
                            "which line protocol cannot carry; nothing of this batch was sent")
    return 4 * TEST_NAMED, ",flag_test=" + _string(test)


def encode(observations: Iterable[Observation] | Sequence) -> list[str]:
    """One line per observation, plus one `humus_wavelength_axis` line per distinct axis.

    Takes a sequence of `Observation`s or decoded batches (humus.obsrows).
    Raises `StoreRejected`, before returning any line, for an observation
    that line protocol cannot carry exactly (see the module's docstring).
    """
    if not isinstance(observations, Sequence):
        observations = list(observations)
    lines: list[str] = []
    axes: dict[str, tuple[str, int]] = {}
    parts = observations.parts if isinstance(observations, BatchedObservations) else (observations,)
    for part in parts:
        done = part.prepared if isinstance(part, ObservationRows) else None
        if done is not None:
            lines += done[0]
            for digest, (text, t) in done[1].items():
                if digest not in axes or t < axes[digest][1]:
                    axes[digest] = (text, t)
            continue
        if isinstance(part, ObservationRows):
            _encode_rows(part.site, part.gateway, part.rows, lines, axes, part.keys, part.signed,
                         getattr(part, "columns", None))
            continue
        for site, gateway, rows, signed in groups(part):
            _encode_rows(site, gateway, rows, lines, axes, signed=signed)
    for digest, (text, t) in axes.items():
        lines.append(f"{AXIS},{_AXIS_KEY}{digest} {chunk_fields('wavelengths', text)} {t}")
    return lines


def prepare(rows: ObservationRows) -> None:
    """Encode a decoded batch ahead, keeping the lines on it for `encode` (the ingest worker does this
    on its network thread while its main thread waits on the server). A batch line protocol cannot
    carry is left as it is: `encode` raises for it when it is written."""
    if rows.prepared is None and rows.rows:
        lines: list[str] = []
        axes: dict[str, tuple[str, int]] = {}
        try:
            _encode_rows(rows.site, rows.gateway, rows.rows, lines, axes, rows.keys, rows.signed,
                         getattr(rows, "columns", None))
        except StoreRejected:
            return
        rows.prepared = (lines, axes)


def _float_texts(column: Sequence, nulls: int = 0) -> list[str] | None:
    """The floats of a column as repr() writes them, formatted in one C call (msgspec), or None: then each
    by repr. msgspec writes the same shortest round-trip digits as repr, but its exponents (1e16, not
    1e+16) and small numbers (0.00001, not 1e-05) differently, and NaN or infinity as null: any 'e' or
    '0.0000' in the text, a null beyond the `nulls` expected (None values), or a nested list sends the
    column the per-row way."""
    if _json_encode is None or not column:
        return None
    text = _json_encode(column)
    if b"e" in text or b"0.0000" in text or text.count(b"n") != nulls or text.count(b"[") != 1:
        return None
    return text[1:-1].decode().split(",")


def _encode_columns(heads: list, columns: tuple, add) -> bool:
    """Lines of rows whose values are all finite floats, from the decoder's columns (humus.fastdecode),
    the floats of each column formatted at once. False (nothing added) if a column needs the per-row way."""
    times, values, uncs, flags = columns
    n = len(values)
    vt = _float_texts(values)
    if vt is None or len(vt) != n:
        return False
    ut = _float_texts(uncs, uncs.count(None))
    if ut is None or len(ut) != n or len(times) != n or len(flags) != n or len(heads) != n:
        return False
    for (head, _, _, with_u, without_u), v, u, f, t in zip(heads, vt, ut, flags, times):
        if u == "null":
            add(f"{head}value={v},flag={f}{without_u}{t}")
        else:
            add(f"{head}value={v},uncertainty={u},flag={f}{with_u}{t}")
    return True


def _encode_rows(site: str, gateway: str, rows: Sequence, lines: list[str], axes: dict,
                 keys: list | None = None, signed: bool = False, columns: tuple | None = None) -> None:
    add = lines.append
    heads = _heads(site, gateway, rows, keys, signed)
    if columns is not None and _encode_columns(heads, columns, add):
        return
    for r, (head, qc, named, _, _) in zip(rows, heads):
        v, u = r.value, r.uncertainty
        if v.__class__ is float and v == v:
            if u is None:
                add(f"{head}value={v!r},flag={r.flag}i,qc={qc + 2}i{named} {r.time_ns}")
            else:
                add(f"{head}value={v!r},uncertainty={float(u)!r},flag={r.flag}i,qc={qc}i{named} {r.time_ns}")
        elif isinstance(v, (tuple, list)):
            digest, axis_text = axis_id(r.wavelengths_nm)
            if digest not in axes or r.time_ns < axes[digest][1]:
                axes[digest] = (axis_text, r.time_ns)
            _, text = pack_floats(v)
            unc = f"uncertainty={float(u)!r},qc={qc}i" if u is not None else f"qc={qc + ABSENT_UNCERTAINTY}i"
            add(f"{SPECTRUM},{head[len(SCALAR) + 1:-1]} {chunk_fields('values', text)},n_bands={len(v)}i,"
                f"axis=\"{digest}\",flag={r.flag}i,{unc}{named} {r.time_ns}")
        else:
            value = None if v is None else float(v)
            absent = (ABSENT_VALUE if value is None or math.isnan(value) else 0) | (
                ABSENT_UNCERTAINTY if u is None else 0)
            fields = [] if absent & ABSENT_VALUE else [f"value={value!r}"]
            if u is not None:
                fields.append(f"uncertainty={float(u)!r}")
            add(f"{head}{','.join(fields + [f'flag={r.flag}i', f'qc={qc + absent}i'])}{named} {r.time_ns}")


# -- layout 1 (archives written before schema 2) -------------------------------------------------------

def encode_legacy(observations: Iterable[Observation]) -> list[str]:
    """Layout 1, as written before: 6 tags ("10.0" depths), every field on every point, -1 for no
    uncertainty, `missing` for no value. Only to make such archives in tests and benches."""
    lines: list[str] = []
    axes: dict[str, tuple[str, int]] = {}
    for o in observations:
        tags = (f"site={escape_tag(o.site)},gateway={escape_tag(o.gateway)},probe={escape_tag(o.probe)}"
                + (f",depth_cm={float(o.depth_cm)!r}" if o.depth_cm is not None else "")
                + f",quantity={escape_tag(o.quantity)},source={_SOURCE_TEXT[o.source]}")
        unc = -1.0 if o.uncertainty is None else float(o.uncertainty)
        common = (f"uncertainty={unc!r},flag={int(o.flag)}i,flag_test={_string(o.flag_test)},unit={_string(o.unit)},"
                  f"model_id={_string(o.model_id)},model_version={_string(o.model_version)}")
        if isinstance(o.value, tuple):
            digest, axis_text = axis_id(o.wavelengths_nm)
            if digest not in axes or o.time_ns < axes[digest][1]:
                axes[digest] = (axis_text, o.time_ns)
            _, text = pack_floats(o.value)
            lines.append(f"{LEGACY_SPECTRUM},{tags} {chunk_fields('values', text)},n_bands={len(o.value)}i,"
                         f"axis=\"{digest}\",{common} {o.time_ns}")
        else:
            v = float(o.value)
            value = "missing=true" if math.isnan(v) else f"value={v!r},missing=false"
            lines.append(f"{LEGACY_SCALAR},{tags} {value},{common} {o.time_ns}")
    for digest, (text, t) in axes.items():
        lines.append(f"{AXIS},{_AXIS_KEY}{digest} {chunk_fields('wavelengths', text)} {t}")
    return lines
