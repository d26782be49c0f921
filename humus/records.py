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

ID_PATTERN = re.compile(r"^[a-z0-9-]{1,64}$")
"""Site, gateway and probe ids: safe in MQTT topics, file names and tags."""


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

    def __post_init__(self) -> None:
        if _plainly_valid(self):
            return
        problems = observation_problems(self)
        if problems:
            raise ValueError(f"invalid observation {self.probe!r}/{self.quantity!r}: {problems[0]}")
        _remember_names(self)

    @property
    def series_key(self) -> tuple:
        """What identifies a series: one value per key and time is stored."""
        return (self.site, self.gateway, self.probe, self.depth_cm, self.quantity, self.source.value)

    @property
    def is_spectrum(self) -> bool:
        return isinstance(self.value, tuple)


QUANTITY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Far enough in the future to catch a clock or a hostile payload, near enough
# to leave room for clocks that run a little fast: 2100-01-01T00:00:00Z.
MAX_TIME_NS = 4_102_444_800 * 10**9


def observation_problems(obs: Observation) -> list[str]:
    """Every reason `obs` breaks the record contract, as short phrases."""
    problems: list[str] = []
    for name in ("site", "gateway", "probe"):
        v = getattr(obs, name)
        if not isinstance(v, str) or not ID_PATTERN.match(v):
            problems.append(f"{name} {v!r} is not an id of 1-64 characters a-z, 0-9 and '-'")
    if not isinstance(obs.quantity, str) or not QUANTITY_PATTERN.match(obs.quantity):
        problems.append(f"quantity {obs.quantity!r} is not a lower-case name like 'soil_temp'")
    if not isinstance(obs.time_ns, int) or isinstance(obs.time_ns, bool) or not 0 <= obs.time_ns < MAX_TIME_NS:
        problems.append(f"time_ns {obs.time_ns!r} is not an integer of nanoseconds since 1970 before 2100")
    if not isinstance(obs.unit, str) or len(obs.unit) > 32:
        problems.append(f"unit {obs.unit!r} is not a string of at most 32 characters")
    if isinstance(obs.value, tuple):
        if not obs.value or not all(_finite(x) for x in obs.value):
            problems.append("spectrum value must be a non-empty sequence of finite numbers")
        wl = obs.wavelengths_nm
        if wl is None or len(wl) != len(obs.value) or not all(_finite(x) for x in wl):
            problems.append("spectrum needs wavelengths_nm of the same length, all finite")
    elif not _finite(obs.value) and not (obs.flag is QualityFlag.MISSING and _nan(obs.value)):
        problems.append(f"value {obs.value!r} is not a finite number (NaN only with flag 9, missing)")
    if obs.depth_cm is not None and not (_finite(obs.depth_cm) and -1000 <= obs.depth_cm <= 10000):
        problems.append(f"depth_cm {obs.depth_cm!r} is not a finite depth in cm")
    if obs.uncertainty is not None and not (_finite(obs.uncertainty) and obs.uncertainty >= 0):
        problems.append(f"uncertainty {obs.uncertainty!r} is not a finite number >= 0")
    if not isinstance(obs.flag, QualityFlag):
        problems.append(f"flag {obs.flag!r} is not a QARTOD flag (1, 2, 3, 4 or 9)")
    if not isinstance(obs.source, Source):
        problems.append(f"source {obs.source!r} is not 'raw' or 'calibrated'")
    elif obs.source is Source.CALIBRATED and not obs.model_id:
        problems.append("a calibrated observation must name its model_id")
    return problems


# Names (site, gateway, probe, quantity, unit) already found valid: checking
# them again with regexes was most of the cost of decoding a batch on ingest.
_VALID_NAMES: set[tuple] = set()
_VALID_NAMES_MAX = 100_000


def _remember_names(obs: Observation) -> None:
    if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES.add((obs.site, obs.gateway, obs.probe, obs.quantity, obs.unit))


def _plainly_valid(obs: Observation) -> bool:
    """The common case, checked fast: known names, float value, int time. False means 'check fully'."""
    try:
        if (obs.site, obs.gateway, obs.probe, obs.quantity, obs.unit) not in _VALID_NAMES:
            return False
    except TypeError:  # an unhashable name: certainly not valid
        return False
    t, v, d, u = obs.time_ns, obs.value, obs.depth_cm, obs.uncertainty
    # x - x == 0 exactly when x is finite (inf - inf and nan - nan are nan).
    return (type(t) is int and 0 <= t < MAX_TIME_NS
            and type(v) is float and v - v == 0
            and obs.wavelengths_nm is None
            and (d is None or (type(d) is float and -1000 <= d <= 10000))
            and (u is None or (type(u) is float and u - u == 0 and u >= 0))
            and type(obs.flag) is QualityFlag and type(obs.source) is Source
            and (obs.source is Source.RAW or bool(obs.model_id)))


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
