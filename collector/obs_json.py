"""One observation as the JSON text of the wire contract, written without a dict per observation.

The spool stores each observation as the JSON object `humus.wire` defines
(`observation_to_dict`, compact separators), and a batch is those texts
joined. Encoding that dict with `json.dumps` was a tenth of the collector's
CPU per observation; here the parts that repeat from one poll to the next
(probe and quantity, unit, flag, source and depth, flag test and model) are
encoded once and cached, and only the time, the value and the uncertainty
are written per observation. The text is byte for byte what
``json.dumps(observation_to_dict(o), separators=(",", ":"), allow_nan=False)``
gives (tests/collector/test_obs_json.py compares them), key order included.
"""

from __future__ import annotations

import json
import math
from typing import Any

from humus.records import Observation
from humus.wire import observation_to_dict

_CACHE_MAX = 4096
"""Entries per fragment cache; a cache that grows past this is emptied (a config with that many
series is not a gateway's, and the cost is only a re-encode)."""

_heads: dict[tuple, str] = {}
_middles: dict[tuple, str] = {}
_tails: dict[tuple, str] = {}


def _dump(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), allow_nan=False)


def _number(v: Any) -> str:
    """A JSON number as json.dumps writes it: float repr for floats; ValueError for NaN or inf."""
    if type(v) is float and v - v == 0:
        return float.__repr__(v)
    return _dump(v)


def _cached(cache: dict[tuple, str], key: tuple, make: Any) -> str:
    text = cache.get(key)
    if text is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        text = cache[key] = make()
    return text


def observation_json(o: Observation) -> str:
    """`o` as its wire JSON object (site and gateway live on the batch)."""
    if o.wavelengths_nm is not None or type(o.value) is not float:
        return _dump(observation_to_dict(o))      # spectra and unusual values: the reference encoder
    head = _cached(_heads, (o.probe, o.quantity),
                   lambda: f'{{"probe":{_dump(o.probe)},"quantity":{_dump(o.quantity)},"time_ns":')
    depth = o.depth_cm
    # The type is part of the key: 10 and 10.0 are equal keys but different JSON.
    middle = _cached(_middles, (o.unit, int(o.flag), o.source.value, depth, type(depth)),
                     lambda: (f',"unit":{_dump(o.unit)},"flag":{int(o.flag)},"source":{_dump(o.source.value)}'
                              + ("" if depth is None else f',"depth_cm":{_number(depth)}')))
    tail = _cached(_tails, (o.flag_test, o.model_id, o.model_version),
                   lambda: "".join(f',"{k}":{_dump(v)}' for k, v in (("flag_test", o.flag_test),
                                                                       ("model_id", o.model_id),
                                                                       ("model_version", o.model_version))
                                   if v is not None))
    v = o.value
    value = "null" if math.isnan(v) else _number(v)
    u = o.uncertainty
    unc = "" if u is None else f',"uncertainty":{_number(u)}'
    rev = f',"rev":{_number(o.revision)}' if o.revision else ""
    t = o.time_ns
    time_text = int.__repr__(t) if type(t) is int else _number(t)
    return f'{head}{time_text},"value":{value}{middle}{unc}{tail}{rev}}}'
