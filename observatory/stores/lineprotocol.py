"""Observations as InfluxDB line protocol, and spectra packed losslessly into string fields.

Design (docs/stores.md has the reader's version):

- Measurement `humus_observation` for scalar values, `humus_spectrum` for
  spectra, `humus_wavelength_axis` for each distinct wavelength axis. One measurement per
  kind rather than per quantity: a selection by any tag is one InfluxQL
  statement, and the quantity is a tag like the others.
- Tags (the series key, indexed): site, gateway, probe, depth_cm (omitted
  when unknown), quantity, source. Ids are `[a-z0-9-]`, so they need no
  escaping; depth is written canonically (`repr(float)`).
- Fields, all written on every point so a rewrite of the same series and
  time replaces every one of them (InfluxDB merges field sets of a
  rewritten point; a field left out would keep its old value):
  value (float; left out when NaN), missing (bool: the value is NaN),
  uncertainty (float, -1 when none), flag (int), flag_test, unit,
  model_id, model_version (strings, "" when none).
  Spectra: `values` = base64 of little-endian float64 (split into
  `values_1`, `values_2`... past 48,000 characters, under the 64 KB string
  field limit of InfluxDB 1.x), `n_bands` (int), `axis` = SHA-256 of the
  float64 wavelengths. `humus_wavelength_axis,axis=<sha256>` holds the axis the
  same way, written at the time of the first spectrum of each batch that
  uses it, so it ages out with its spectra under a retention policy.
- Timestamps in nanoseconds (`precision=ns`).

Line protocol syntax: InfluxDB 1.x docs, "Line protocol reference"
(escaping: commas, equals signs and spaces in tags with a backslash; double
quotes and backslashes in string fields).
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

from humus.records import Observation

# Prefixed: a database is often shared with other systems (Telegraf, a peer project), and
# a bare `observation` measurement of theirs with other field types would refuse our writes.
SCALAR, SPECTRUM, AXIS = "humus_observation", "humus_spectrum", "humus_wavelength_axis"
CHUNK_CHARS = 48_000
"""Base64 characters per string field: below InfluxDB 1.x's 64 KB string field limit."""


def _tag_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string(v: str | None) -> str:
    return '"' + (v or "").replace("\\", "\\\\").replace('"', '\\"') + '"'


def depth_tag(depth: float | None) -> str | None:
    return None if depth is None else repr(float(depth))


def pack_floats(values: Sequence[float] | np.ndarray) -> tuple[bytes, str]:
    """(float64 little-endian bytes, their base64 text)."""
    raw = np.asarray(values, dtype="<f8").tobytes()
    return raw, base64.b64encode(raw).decode("ascii")


def unpack_floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8")


def chunk_fields(name: str, text: str) -> str:
    parts = [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    return ",".join(f"{name if i == 0 else f'{name}_{i}'}={_string(p)}" for i, p in enumerate(parts))


def join_chunks(fields: dict[str, object], name: str) -> str:
    """Reassemble `name`, `name_1`, `name_2`... from a row of fields."""
    parts = [fields.get(name) or ""]
    i = 1
    while fields.get(f"{name}_{i}"):
        parts.append(fields[f"{name}_{i}"])
        i += 1
    return "".join(parts)


def axis_id(wavelengths: Sequence[float]) -> tuple[str, str]:
    """(sha256 hex of the float64 axis, base64 of it)."""
    raw, text = pack_floats(wavelengths)
    return hashlib.sha256(raw).hexdigest(), text


def _tags(o: Observation) -> str:
    tags = f"site={o.site},gateway={o.gateway},probe={o.probe}"
    if o.depth_cm is not None:
        tags += f",depth_cm={depth_tag(o.depth_cm)}"
    return tags + f",quantity={o.quantity},source={o.source.value}"


def _common_fields(o: Observation) -> str:
    unc = -1.0 if o.uncertainty is None else float(o.uncertainty)
    return (f"uncertainty={unc!r},flag={int(o.flag)}i,flag_test={_string(o.flag_test)},unit={_string(o.unit)},"
            f"model_id={_string(o.model_id)},model_version={_string(o.model_version)}")


def encode(observations: Iterable[Observation]) -> list[str]:
    """One line per observation, plus one `wavelength_axis` line per distinct axis."""
    lines: list[str] = []
    axes: dict[str, tuple[str, int]] = {}
    for o in observations:
        if isinstance(o.value, tuple):
            digest, axis_text = axis_id(o.wavelengths_nm)
            if digest not in axes or o.time_ns < axes[digest][1]:
                axes[digest] = (axis_text, o.time_ns)
            _, text = pack_floats(o.value)
            lines.append(f"{SPECTRUM},{_tags(o)} {chunk_fields('values', text)},n_bands={len(o.value)}i,"
                         f"axis=\"{digest}\",{_common_fields(o)} {o.time_ns}")
        else:
            v = float(o.value)
            value = "missing=true" if math.isnan(v) else f"value={v!r},missing=false"
            lines.append(f"{SCALAR},{_tags(o)} {value},{_common_fields(o)} {o.time_ns}")
    for digest, (text, t) in axes.items():
        lines.append(f"{AXIS},axis={digest} {chunk_fields('wavelengths', text)} {t}")
    return lines
