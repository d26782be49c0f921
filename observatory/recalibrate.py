"""Recalibrate archived history with a new spectral model, beside the old values, never over them.

Input: the raw observations the collector keeps for this purpose
(collector/pipeline.py): `spectrum` (counts, reflectance or absorbance as
the probe sent it) and, for counts, `spectrum_dark` and `spectrum_white`
of the very same reading. Output: for each spectrum, the model's value with
its uncertainty and flag, written as the variant series of the model
version (observatory.versions: quantity `Q__r<tag>`, model id and version
on every row), then one catalogue row per probe and depth. So:

- the values written before (the gateway's live model, earlier
  recalibrations) are never touched: they are other series;
- a second run with the same model writes the same series and times again,
  which the stores keep once (idempotent);
- the same model id and version from a different file (content hash) is
  refused: two different models must not share a name in a paper.

The flag of a recalibrated value is the worst of the model's and of its
inputs' (as on the gateway, collector/pipeline.py): a suspect spectrum
never gives a passing carbon value. A missing or unusable spectrum gives a
missing value (flag 9) with the reason, so gaps stay recorded.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from humus.records import Observation, QualityFlag, Source
from observatory import filters as flt
from observatory import versions
from observatory.store import Selection, SeriesData, StoreError

SPECTRUM, DARK, WHITE = "spectrum", "spectrum_dark", "spectrum_white"
WRITE_BATCH = 5000
DEFAULT_WINDOW_NS = 30 * 86400 * 10**9
_KINDS = {"counts": "counts", "1": "reflectance", "reflectance": "reflectance", "absorbance": "absorbance"}
_ORDER = {QualityFlag.NOT_EVALUATED: 0, QualityFlag.PASS: 1, QualityFlag.SUSPECT: 2, QualityFlag.FAIL: 3,
          QualityFlag.MISSING: 4}


class RecalibrationError(StoreError):
    """A recalibration that must not run (one line for the user)."""


@dataclass
class Result:
    model_id: str
    model_version: str
    quantity: str
    variant: str
    spectra: int = 0
    written: int = 0
    missing: int = 0
    suspect: int = 0
    series: int = 0
    seconds: float = 0.0


def recalibrate(store, model, *, quantity: str = "soc", site: str | None = None, gateway: str | None = None,
                probe: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
                kind: str | None = None, window_ns: int = DEFAULT_WINDOW_NS, now_ns: int | None = None,
                progress: Callable[[int, str], None] | None = None) -> Result:
    """Recalibrate the raw spectra of the selection with `model` (a calibration.model.SpectralModel)."""
    start = time.monotonic()
    unit = str(model.meta.get("unit") or "%")[:32]
    content_hash = str(model.meta.get("content_hash") or "")
    variant = versions.variant_quantity(quantity, model.id, model.version)
    res = Result(model.id, model.version, quantity, variant)
    now_ns = time.time_ns() if now_ns is None else now_ns
    scope = Selection(site=site, gateway=gateway, probe=probe)
    _check_name(store, scope, quantity, model.id, model.version, content_hash)
    sel = Selection(site=site, gateway=gateway, probe=probe, quantity=SPECTRUM, source=Source.RAW,
                    since_ns=since_ns, until_ns=until_ns)
    first = flt.first_time(store, sel, now_ns)
    counts: dict[tuple, int] = {}
    if first is not None:
        parts = flt.windows(dataclasses.replace(sel, since_ns=max(first, since_ns or 0)), window_ns, None, now_ns)
        pending: list[Observation] = []
        for n, part in enumerate(parts, 1):
            refs = {q: _by_key(store.columns(dataclasses.replace(part, quantity=q))) for q in (DARK, WHITE)}
            for s in store.columns(part):
                key = (s.site, s.gateway, s.probe, s.depth_cm)
                for obs in _predict_series(model, s, refs[DARK].get(key), refs[WHITE].get(key), variant, unit, kind):
                    pending.append(obs)
                    res.spectra += 1
                    res.missing += obs.flag is QualityFlag.MISSING
                    res.suspect += obs.flag is QualityFlag.SUSPECT
                    counts[key] = counts.get(key, 0) + 1
                    if len(pending) >= WRITE_BATCH:
                        store.write(pending)
                        res.written += len(pending)
                        pending = []
            if progress is not None:
                progress(n, f"window {n} of {len(parts)}, {res.spectra} spectra")
        if pending:
            store.write(pending)
            res.written += len(pending)
    # The catalogue last: readers switch to the new version once its values are all written.
    store.write([Observation(site=k[0], gateway=k[1], probe=k[2], depth_cm=k[3], quantity=versions.CATALOGUE,
                             time_ns=versions.catalogue_time_ns(quantity, model.id, model.version),
                             value=float(c), unit=quantity, flag=QualityFlag.PASS,
                             flag_test=f"sha256:{content_hash}"[:128] if content_hash else None,
                             source=Source.CALIBRATED, model_id=model.id, model_version=model.version)
                 for k, c in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))])
    res.series = len(counts)
    res.seconds = time.monotonic() - start
    return res


def _check_name(store, scope: Selection, quantity: str, model_id: str, version: str, content_hash: str) -> None:
    """Refuse a model that reuses the id and version of a different model already recalibrated here."""
    cat = dataclasses.replace(scope, site=None, gateway=None, probe=None, quantity=versions.CATALOGUE,
                              source=Source.CALIBRATED)
    for s in store.columns(cat):
        for q, mid, ver, test in zip(s.unit, s.model_id, s.model_version, s.flag_test):
            if (q, mid, ver) == (quantity, model_id, version) and test and content_hash \
                    and test != f"sha256:{content_hash}"[:128]:
                raise RecalibrationError(
                    f"model {model_id} version {version} was already recalibrated into this archive from another "
                    f"file ({test[:19]}..., this one sha256:{content_hash[:12]}...); give the new model its own "
                    "version (humus calibrate fit --model-version)")


def _by_key(stream) -> dict[tuple, dict[int, np.ndarray]]:
    out: dict[tuple, dict[int, np.ndarray]] = {}
    for s in stream:
        if s.spectra is None:
            continue
        rows = out.setdefault((s.site, s.gateway, s.probe, s.depth_cm), {})
        for t, sp in zip(s.time_ns.tolist(), s.spectra):
            if sp is not None:
                rows[t] = sp
    return out


def _predict_series(model, s: SeriesData, dark: dict | None, white: dict | None, variant: str, unit: str,
                    kind: str | None):
    common = dict(site=s.site, gateway=s.gateway, probe=s.probe, depth_cm=s.depth_cm, quantity=variant, unit=unit,
                  source=Source.CALIBRATED, model_id=model.id, model_version=model.version)
    for i, t in enumerate(s.time_ns.tolist()):
        spectrum = s.spectra[i] if s.spectra is not None else None
        raw_flag = QualityFlag(int(s.flag[i]))
        if spectrum is None or raw_flag is QualityFlag.MISSING:
            yield Observation(time_ns=t, value=math.nan, flag=QualityFlag.MISSING,
                              flag_test=s.flag_test[i] or "missing_input", **common)
            continue
        k = kind or _KINDS.get(str(s.unit[i] or "").lower()) or model.input
        d = dark.get(t) if dark else None
        w = white.get(t) if white else None
        if k == "counts" and (d is None or w is None):
            yield Observation(time_ns=t, value=math.nan, flag=QualityFlag.MISSING, flag_test="missing_reference",
                              **common)
            continue
        p = model.predict(s.wavelengths[i], spectrum, kind=k, dark=d, white=w)
        if p.flag is QualityFlag.MISSING or not math.isfinite(p.value):
            yield Observation(time_ns=t, value=math.nan, flag=QualityFlag.MISSING,
                              flag_test=p.flag_test or "calibration_missing", **common)
            continue
        flag, test = p.flag, p.flag_test or None
        if _ORDER[raw_flag] > _ORDER[flag]:
            flag, test = raw_flag, s.flag_test[i]
        unc = float(p.uncertainty) if math.isfinite(p.uncertainty) else None
        yield Observation(time_ns=t, value=float(p.value), uncertainty=unc, flag=flag,
                          flag_test=test if flag is not QualityFlag.PASS else None, **common)
