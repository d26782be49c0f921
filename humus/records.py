"""The one record that flows from the collector to the archive.

A driver's `firmware_bridge.Reading` becomes one or more `Observation`s in
the collector; observations travel in batches over MQTT (`humus.wire`) and
are stored by `observatory` stores. Raw observations are always kept beside
calibrated ones so history can be recalibrated (DESIGN.md, Records).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum

# Anchored with \A and \Z, and used with fullmatch: `$` also matches before a
# trailing newline, so "gw-1\n" passed `re.match(r"^...$")` (Python `re` docs,
# "Regular Expression Syntax", `$` and `\Z`).
ID_PATTERN = re.compile(r"\A[a-z0-9-]{1,64}\Z")
"""Site, gateway and probe ids: safe in MQTT topics, file names and tags."""

MAX_REVISION = 2**31
"""Revisions are 0 (first publication) up to this, exclusive."""


class QualityFlag(IntEnum):
    """QARTOD primary flags (IOOS QARTOD manuals, "flag scheme")."""

    PASS = 1
    NOT_EVALUATED = 2
    SUSPECT = 3
    FAIL = 4
    MISSING = 9

    @classmethod
    def worst(cls, *flags: "QualityFlag") -> "QualityFlag":
        """Aggregate flags the QARTOD way: MISSING > FAIL > SUSPECT > PASS > NOT_EVALUATED."""
        order = {cls.NOT_EVALUATED: 0, cls.PASS: 1, cls.SUSPECT: 2, cls.FAIL: 3, cls.MISSING: 4}
        return max(flags, key=order.__getitem__, default=cls.NOT_EVALUATED)


class Source(str, Enum):
    """Whether a value is what the probe said or what a model made of it."""

    RAW = "raw"
    CALIBRATED = "calibrated"


Value = float | tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Observation:
    """One time-stamped value of one quantity at one probe and depth.

    `value` is a float, or a tuple of floats for spectra, in which case
    `wavelengths_nm` gives the axis (same length). `flag_test` names the
    check that set `flag` (for example ``"gross_range"``); calibrated values
    name the `model_id` and `model_version` that produced them.
    """

    site: str
    gateway: str
    probe: str
    quantity: str
    time_ns: int
    value: Value
    unit: str
    depth_cm: float | None = None
    uncertainty: float | None = None
    flag: QualityFlag = QualityFlag.NOT_EVALUATED
    flag_test: str | None = None
    source: Source = Source.RAW
    model_id: str | None = None
    model_version: str | None = None
    wavelengths_nm: tuple[float, ...] | None = None
    revision: int = 0
    """0 for the first publication; the collector re-publishes an observation
    with revision + 1 when a late verdict changes its flag (the newer copy wins)."""

    def __post_init__(self) -> None:
        if _plainly_valid(self):
            return
        problems = observation_problems(self)
        if problems:
            raise ValueError(f"invalid observation {short_repr(self.probe)}/{short_repr(self.quantity)}: {problems[0]}")
        _remember_names(self)

    @property
    def series_key(self) -> tuple:
        """What identifies a series: one value per key and time is stored."""
        return (self.site, self.gateway, self.probe, self.depth_cm, self.quantity, self.source.value)

    @property
    def is_spectrum(self) -> bool:
        return isinstance(self.value, tuple)


QUANTITY_PATTERN = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")

MAX_TEXT = {"unit": 32, "flag_test": 128, "model_id": 128, "model_version": 128}
"""Free-text fields and their longest length in characters."""

# C0 controls, DEL and C1 controls (Unicode 15, chapter 23.1 "Control Codes"),
# and the surrogate code points, which only a JSON "\ud800" escape can put in
# a str and which no UTF-8 encoder accepts (RFC 3629, section 3).
_BAD_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# Far enough in the future to catch a clock or a hostile payload, near enough
# to leave room for clocks that run a little fast: 2100-01-01T00:00:00Z.
MAX_TIME_NS = 4_102_444_800 * 10**9


def observation_problems(obs: Observation) -> list[str]:
    """Every reason `obs` breaks the record contract, as short one-line phrases."""
    problems: list[str] = []
    for name in ("site", "gateway", "probe"):
        v = getattr(obs, name)
        if not isinstance(v, str) or not ID_PATTERN.fullmatch(v):
            problems.append(f"{name} {short_repr(v)} is not an id of 1-64 characters a-z, 0-9 and '-'")
    if not isinstance(obs.quantity, str) or not QUANTITY_PATTERN.fullmatch(obs.quantity):
        problems.append(f"quantity {short_repr(obs.quantity)} is not a lower-case name like 'soil_temp'")
    if not _is_int(obs.time_ns) or not 0 <= obs.time_ns < MAX_TIME_NS:
        problems.append(f"time_ns {short_repr(obs.time_ns)} is not an integer of nanoseconds since 1970 before 2100")
    for name, longest in MAX_TEXT.items():
        v = getattr(obs, name)
        if v is None and name != "unit":
            continue
        if not isinstance(v, str) or len(v) > longest:
            problems.append(f"{name} {short_repr(v)} is not a string of at most {longest} characters")
        elif not text_is_clean(v):
            problems.append(f"{name} {short_repr(v)} holds a control character or a lone surrogate")
    if isinstance(obs.value, tuple):
        if not obs.value or not all(_finite(x) for x in obs.value):
            problems.append("spectrum value must be a non-empty sequence of finite numbers")
        wl = obs.wavelengths_nm
        if not isinstance(wl, tuple) or len(wl) != len(obs.value) or not all(_finite(x) for x in wl):
            problems.append("spectrum needs wavelengths_nm of the same length, all finite")
    else:
        if not _finite(obs.value) and not (obs.flag is QualityFlag.MISSING and _nan(obs.value)):
            problems.append(f"value {short_repr(obs.value)} is not a finite number (NaN only with flag 9, missing)")
        if obs.wavelengths_nm is not None:
            problems.append("wavelengths_nm belongs to a spectrum, and the value is not one")
    if obs.depth_cm is not None and not (_finite(obs.depth_cm) and -1000 <= obs.depth_cm <= 10000):
        problems.append(f"depth_cm {short_repr(obs.depth_cm)} is not a finite depth in cm")
    if obs.uncertainty is not None and not (_finite(obs.uncertainty) and obs.uncertainty >= 0):
        problems.append(f"uncertainty {short_repr(obs.uncertainty)} is not a finite number >= 0")
    if not isinstance(obs.flag, QualityFlag):
        problems.append(f"flag {short_repr(obs.flag)} is not a QARTOD flag (1, 2, 3, 4 or 9)")
    if not isinstance(obs.source, Source):
        problems.append(f"source {short_repr(obs.source)} is not 'raw' or 'calibrated'")
    elif obs.source is Source.CALIBRATED and not obs.model_id:
        problems.append("a calibrated observation must name its model_id")
    if not _is_int(obs.revision) or not 0 <= obs.revision < MAX_REVISION:
        problems.append(f"revision {short_repr(obs.revision)} is not an integer from 0 to 2**31 - 1")
    return problems


def text_is_clean(s: str) -> bool:
    """No control character (C0, DEL, C1) and no lone surrogate: safe in JSON, UTF-8, logs and line protocol."""
    # Printable ASCII, the common case, without the regex.
    return (s.isascii() and s.isprintable()) or _BAD_CHARACTER.search(s) is None


# Texts (site, gateway, probe, quantity, unit, flag_test, model_id,
# model_version) already found valid together: checking them again with
# regexes was most of the cost of decoding a batch on ingest.
_VALID_NAMES: set[tuple] = set()
_VALID_NAMES_MAX = 100_000


def _names(obs: Observation) -> tuple:
    return (obs.site, obs.gateway, obs.probe, obs.quantity, obs.unit, obs.flag_test, obs.model_id, obs.model_version)


def _remember_names(obs: Observation) -> None:
    if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(_names(obs))


def _plainly_valid(obs: Observation) -> bool:
    """The common case, checked fast: known names, float value, int time. False means 'check fully'."""
    try:
        if (obs.site, obs.gateway, obs.probe, obs.quantity, obs.unit, obs.flag_test, obs.model_id,
                obs.model_version) not in _VALID_NAMES:  # _names(obs), inlined: this runs per observation
            return False
    except TypeError:  # an unhashable name: certainly not valid
        return False
    t, v, d, u, r = obs.time_ns, obs.value, obs.depth_cm, obs.uncertainty, obs.revision
    # x - x == 0 exactly when x is finite (inf - inf and nan - nan are nan).
    return (type(t) is int and 0 <= t < MAX_TIME_NS
            and type(v) is float and v - v == 0
            and obs.wavelengths_nm is None
            and (d is None or (type(d) is float and -1000 <= d <= 10000))
            and (u is None or (type(u) is float and u - u == 0 and u >= 0))
            and type(obs.flag) is QualityFlag and type(obs.source) is Source
            and (obs.source is Source.RAW or bool(obs.model_id))
            and type(r) is int and 0 <= r < MAX_REVISION)


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _finite(x: object) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond the float range
        return False


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def short_repr(v: object) -> str:
    """A value for a one-line message: repr, cut short (a hostile payload can hold megabytes)."""
    if isinstance(v, str):
        text = repr(v[:60])
    elif isinstance(v, (float, bool, Enum)) or v is None:
        text = repr(v)
    elif isinstance(v, int):
        text = repr(v) if v.bit_length() <= 128 else f"<integer of {v.bit_length()} bits>"
    else:
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
