"""observatory.query: times as people type them, numpy arrays out of every backend."""

from __future__ import annotations

import numpy as np
import pytest

from humus.records import Observation, QualityFlag, Source
from observatory import query
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
H = 3600 * 10**9


@pytest.mark.parametrize("text, expected", [
    ("2026-01-01", T0),
    ("2026-01-01T01:00", T0 + H),
    ("2026-01-01T01:00:00Z", T0 + H),
    ("2026-01-01T03:00:00+02:00", T0 + H),
    ("2026-01-01T00:00:00.000000123Z", T0 + 123),
    ("2026-01-01T00:00:00.5", T0 + 500_000_000),
    ("now", T0 + 10 * H),
    ("-1h", T0 + 9 * H),
    ("-90m", T0 + 10 * H - 90 * 60 * 10**9),
    ("-7d", T0 + 10 * H - 7 * 24 * H),
    ("-2w", T0 + 10 * H - 14 * 24 * H),
])
def test_times_are_iso_8601_in_utc_or_relative_to_now(text, expected):
    assert query.parse_time(text, now_ns=T0 + 10 * H) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "-1y", "1h", ""])
def test_a_time_that_is_neither_iso_nor_relative_is_refused_with_examples(text):
    with pytest.raises(query.TimeError, match="ISO 8601"):
        query.parse_time(text)


def test_format_time_shows_the_digits_the_time_has():
    assert query.format_time(T0) == "2026-01-01T00:00:00Z"
    assert query.format_time(T0 + 5 * 10**8) == "2026-01-01T00:00:00.500Z"
    assert query.format_time(T0 + 1) == "2026-01-01T00:00:00.000000001Z"


def _archive(url: str) -> None:
    rng = np.random.default_rng(0)
    wl = tuple(np.linspace(1350.0, 2550.0, 128).tolist())
    obs = []
    for i in range(96):
        t = T0 + i * 15 * 60 * 10**9
        flag = QualityFlag.SUSPECT if i % 10 == 0 else QualityFlag.PASS
        obs.append(Observation("site-a", "gw-1", "teros-1", "vwc", t, 0.2 + i / 1000, "m3/m3", depth_cm=10.0,
                               uncertainty=0.02, flag=flag))
        if i % 24 == 0:
            obs.append(Observation("site-a", "gw-1", "nir-1", "reflectance", t, tuple(rng.random(128).tolist()), "1",
                                   depth_cm=5.0, wavelengths_nm=wl))
            obs.append(Observation("site-a", "gw-1", "nir-1", "soc", t, 2.0 + i / 100, "%", uncertainty=0.3,
                                   source=Source.CALIBRATED, model_id="pls", model_version="1"))
    store = open_store(url)
    store.write(obs)
    store.close()


def test_series_gives_numpy_arrays_from_a_store_url(store_url):
    _archive(store_url)
    (vwc,) = query.series(store_url, probe="teros-1", since="2026-01-01T06:00", until="2026-01-01T12:00")
    assert len(vwc) == 24 and vwc.time_ns[0] == T0 + 6 * H
    assert np.allclose(vwc.value, 0.2 + np.arange(24, 48) / 1000)
    assert vwc.flag.tolist().count(3) == 2  # i = 30, 40
    cal = query.series(store_url, source="calibrated")
    assert [(s.quantity, len(s), s.model_id[0]) for s in cal] == [("soc", 4, "pls")]
    assert len(list(query.observations(store_url, quantity="soc", limit=2))) == 2


def test_spectra_come_back_as_a_matrix_with_their_wavelengths(store_url):
    _archive(store_url)
    (refl,) = query.series(store_url, quantity="reflectance")
    times, matrix, wavelengths = query.spectra_matrix(refl)
    assert matrix.shape == (4, 128) and matrix.dtype == np.float64
    assert np.array_equal(wavelengths, np.linspace(1350.0, 2550.0, 128))
    assert times.tolist() == [T0 + k * 6 * H for k in range(4)]
    assert np.array_equal(matrix[0], np.random.default_rng(0).random(128))


def test_bad_filters_are_refused_with_one_message():
    with pytest.raises(query.StoreError, match="not 'raw' or 'calibrated'"):
        query.selection(source="cooked")
