"""Aggregation to regular intervals against values worked out by hand, flags respected."""

from __future__ import annotations

import math

import numpy as np
import pytest

from humus.cli import main
from humus.records import Observation, QualityFlag, Source
from observatory.aggregate import aggregate, parse_every
from observatory.store import SeriesData
from observatory.stores import open_store

DAY = 86400 * 10**9
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

# Two UTC days and a third with nothing usable.
#        day 1: 1.0 (pass, u .1), 3.0 (pass, u .2), 100 (fail), 2.0 (not evaluated, u .2)
#        day 2: 5.0 (suspect, u .5), 4.0 (pass, u .1)
#        day 3: NaN (missing), 9.0 (fail)
ROWS = [(0, 1.0, 0.1, 1), (6, 3.0, 0.2, 1), (12, 100.0, 0.1, 4), (18, 2.0, 0.2, 2),
        (24, 5.0, 0.5, 3), (30, 4.0, 0.1, 1),
        (48, math.nan, math.nan, 9), (50, 9.0, 0.1, 4)]


def _series() -> SeriesData:
    t = np.array([T0 + h * 3600 * 10**9 for h, *_ in ROWS], dtype=np.int64)
    n = len(ROWS)
    return SeriesData("s", "g", "p", 10.0, "vwc", Source.CALIBRATED, time_ns=t,
                      value=np.array([r[1] for r in ROWS]), uncertainty=np.array([r[2] for r in ROWS]),
                      flag=np.array([r[3] for r in ROWS], dtype=np.uint8), unit=np.array(["m3/m3"] * n, dtype=object),
                      flag_test=np.array([None] * n, dtype=object), model_id=np.array(["m"] * n, dtype=object),
                      model_version=np.array(["1"] * n, dtype=object))


def test_mean_uses_pass_and_not_evaluated_by_default():
    a = aggregate(_series(), DAY, "mean")
    assert a.time_ns.tolist() == [T0, T0 + DAY, T0 + 2 * DAY]
    assert a.value[0] == pytest.approx(2.0)                      # (1 + 3 + 2) / 3, the failed 100 left out
    assert a.uncertainty[0] == pytest.approx(math.sqrt(0.01 + 0.04 + 0.04) / 3)
    assert a.value[1] == pytest.approx(4.0)                      # the suspect 5 left out
    assert a.uncertainty[1] == pytest.approx(0.1)
    assert math.isnan(a.value[2]) and a.flag[2] == 9 and a.flag_test[2] == "no_usable_value"
    assert a.flag.tolist() == [2, 1, 9]                          # the worst flag among the values used
    assert list(a.model_version) == ["1", "1", "1"]


def test_min_max_count_and_a_looser_flag():
    lo = aggregate(_series(), DAY, "min", QualityFlag.SUSPECT)
    hi = aggregate(_series(), DAY, "max", QualityFlag.SUSPECT)
    n = aggregate(_series(), DAY, "count", QualityFlag.SUSPECT)
    assert lo.value[:2].tolist() == [1.0, 4.0] and lo.uncertainty[:2].tolist() == [0.1, 0.1]
    assert hi.value[:2].tolist() == [3.0, 5.0] and hi.uncertainty[:2].tolist() == [0.2, 0.5]
    assert n.value.tolist() == [3.0, 2.0, 0.0] and list(n.unit) == ["1"] * 3
    assert hi.flag.tolist() == [2, 3, 9]
    everything = aggregate(_series(), DAY, "max", QualityFlag.FAIL)
    assert everything.value.tolist() == [100.0, 5.0, 9.0]


def test_bins_are_aligned_on_utc_midnight_and_intervals_parse():
    a = aggregate(_series(), 12 * 3600 * 10**9, "count")
    # hours 0, 6 | 12, 18 | 24, 30 | (36-48 holds nothing, so no row) | 48, 50
    assert a.time_ns.tolist() == [T0, T0 + DAY // 2, T0 + DAY, T0 + 2 * DAY]
    assert a.value.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert parse_every("15m") == 15 * 60 * 10**9 and parse_every("1w") == 7 * DAY
    for bad in ("0d", "1y", "soon", "1.5h"):
        with pytest.raises(ValueError, match="like 15m, 1h, 1d or 1w"):
            parse_every(bad)


def test_humus_query_every_prints_the_aggregates(store_url, capsys):
    s = open_store(store_url)
    s.write([Observation("s", "g", "p", "vwc", T0 + h * 3600 * 10**9, v, "m3/m3", depth_cm=10.0, uncertainty=u,
                         flag=QualityFlag(f), source=Source.CALIBRATED, model_id="m", model_version="1")
             for h, v, u, f in ROWS if f != 9])
    s.close()
    assert main(["query", "--store", store_url, "--every", "1d", "--agg", "mean", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("2026-01-01T00:00:00Z,") and ",2.0," in lines[1]
    assert ",4.0," in lines[2] and lines[3].split(",")[12] == "missing"
    assert main(["query", "--store", store_url, "--every", "1y"]) == 2
    assert "like 15m, 1h, 1d or 1w" in capsys.readouterr().err
