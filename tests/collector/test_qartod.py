"""collector.qartod gives exactly ioos_qc 3.x's flags (the reference, test-only) on many series."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from collector import qartod
from collector.config import FlatLineQc, GrossRangeQc, QcSettings, RateOfChangeQc, SpikeQc
from collector.quality import SeriesQc
from humus.records import QualityFlag

import ioos_qc.qartod as ref  # noqa: E402  (test-only reference implementation)

BASE_NS = 1_700_000_000 * 10**9


def _ref(fn, *args, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(np.ma.getdata(fn(*args, **kwargs))).astype(int)


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if kind == 0:
        x = rng.normal(0, 1, n)
    elif kind == 1:
        x = np.round(rng.normal(0, 1, n), 1)
    elif kind == 2:
        x = np.repeat(rng.normal(0, 1, (n + 2) // 3), 3)[:n]
    else:
        x = rng.integers(-3, 4, n).astype(float)
    for v in (np.nan, np.inf, -np.inf, 1e308, -1e308):
        if rng.random() < 0.25:
            x[rng.integers(0, n, rng.integers(1, 3))] = v
    return x


def _times(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if kind == 0:
        d = np.full(n, 10**9 * int(rng.integers(1, 900)))
    elif kind == 1:
        d = rng.integers(5 * 10**8, 3 * 10**9, n)        # sub-second steps truncate to 0 s
    elif kind == 2:
        d = np.full(n, 10**9)
        d[rng.integers(0, n)] = 0                          # a repeated time stamp
    else:
        d = rng.integers(10**9, 60 * 10**9, n)
    return BASE_NS + np.cumsum(d)


CASES = 1500


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(20261124)
    out = []
    for _ in range(CASES):
        n = int(rng.integers(1, 40))
        out.append((rng, _series(rng, n), _times(rng, n)))
    return out


def test_gross_range_matches_ioos_qc_on_many_series(cases):
    for rng, x, _ in cases:
        lo = float(rng.normal(-1, 1))
        hi = lo + abs(float(rng.normal(2, 1)))
        sus = (lo + 0.1, hi - 0.1) if hi - lo > 0.2 else None
        np.testing.assert_array_equal(qartod.gross_range(x, (hi, lo), sus),
                                      _ref(ref.gross_range_test, x, (hi, lo), sus), err_msg=str(list(x)))


def test_spike_matches_ioos_qc_on_many_series_both_methods(cases):
    for rng, x, _ in cases:
        st = float(rng.choice([0.0, 0.5, 1.0, abs(rng.normal())]))
        ft = rng.choice([None, 2.0, 3 * st])
        for method in ("average", "differential"):
            np.testing.assert_array_equal(qartod.spike(x, st, ft, method), _ref(ref.spike_test, x, st, ft, method),
                                          err_msg=f"{list(x)} {st} {ft} {method}")


def test_rate_of_change_matches_ioos_qc_including_sub_second_steps(cases):
    for rng, x, t in cases:
        th = float(abs(rng.normal(0, 0.05)))
        fth = rng.choice([None, th * 3])
        np.testing.assert_array_equal(qartod.rate_of_change(x, t, th, fth),
                                      _ref(ref.rate_of_change_test, x, t.astype("datetime64[ns]"), th, fth),
                                      err_msg=f"{list(x)} {list(np.diff(t))}")


def test_flat_line_matches_ioos_qc_on_many_series(cases):
    for rng, x, t in cases:
        if len(x) >= 3 and np.median(np.diff(t)) < 10**9:
            continue   # ioos_qc divides by a zero median step there (undefined); covered below
        s = float(rng.choice([1, 5, 30, 120, 600]))
        f = s * 2 + float(rng.choice([0, 3]))
        tol = float(rng.choice([0, 0.01, 0.5]))
        np.testing.assert_array_equal(qartod.flat_line(x, t, s, f, tol),
                                      _ref(ref.flat_line_test, x, t.astype("datetime64[ns]"), s, f, tol),
                                      err_msg=f"{list(x)} {list(np.diff(t))} {s} {f} {tol}")


@pytest.mark.parametrize("x", [[], [1.0], [np.nan], [1.0, 2.0], [np.nan, np.nan, np.nan], [np.inf, 1, 2, 3],
                               [5, 5, 5, 5, 5, 5], [1e308, 1e308, -1e308], [0, 0, 100, 0, 0]])
def test_edge_cases_match_ioos_qc(x):
    x = np.asarray(x, dtype=float)
    t = BASE_NS + np.arange(len(x), dtype=np.int64) * 60 * 10**9
    tt = t.astype("datetime64[ns]")
    np.testing.assert_array_equal(qartod.gross_range(x, (0, 10), (1, 9)), _ref(ref.gross_range_test, x, (0, 10), (1, 9)))
    np.testing.assert_array_equal(qartod.rate_of_change(x, t, 0.01), _ref(ref.rate_of_change_test, x, tt, 0.01))
    np.testing.assert_array_equal(qartod.flat_line(x, t, 120, 240, 0.1), _ref(ref.flat_line_test, x, tt, 120, 240, 0.1))
    if len(x):   # ioos_qc's spike test raises IndexError on an empty series
        np.testing.assert_array_equal(qartod.spike(x, 1, 5), _ref(ref.spike_test, x, 1, 5))


def test_gross_range_refuses_a_suspect_span_outside_the_fail_span_like_ioos_qc():
    with pytest.raises(ValueError):
        qartod.gross_range([1.0], (0, 5), (-1, 4))
    with pytest.raises(ValueError):
        ref.gross_range_test([1.0], (0, 5), (-1, 4))


def test_infinite_value_fails_gross_range_as_in_ioos_qc_not_missing():
    assert list(qartod.gross_range([np.inf, np.nan], (0, 1))) == [4, 9]


def test_streaming_flags_equal_ioos_qc_on_the_window_and_spike_comes_one_point_late():
    settings = QcSettings(gross_range=GrossRangeQc((0, 40), (5, 35)), spike=SpikeQc(1.0, 3.0),
                          rate_of_change=RateOfChangeQc(0.05), flat_line=FlatLineQc(180, 300, 0.001))
    qc = SeriesQc(settings, 60)
    rng = np.random.default_rng(3)
    values = list(20 + rng.normal(0, 0.2, 30))
    values[10] = 27.0                      # a spike
    values[20:28] = [22.0] * 8             # a flat line
    values[15] = float("nan")
    times = [BASE_NS + i * 60 * 10**9 for i in range(len(values))]
    late = {}
    for i, (t, v) in enumerate(zip(times, values)):
        verdict, lv = qc.check(t, v)
        w = slice(max(0, i + 1 - qc.maxlen), i + 1)
        xs, ts = np.array(values[w]), np.array(times[w]).astype("datetime64[ns]")
        expected = [_ref(ref.gross_range_test, xs, (0, 40), (5, 35))[-1],
                    _ref(ref.rate_of_change_test, xs, ts, 0.05)[-1],
                    _ref(ref.flat_line_test, xs, ts, 180, 300, 0.001)[-1]]
        order = {2: 0, 1: 1, 3: 2, 4: 3, 9: 4}
        assert int(verdict.flag) == max(expected, key=order.__getitem__), i
        if lv is not None:
            late[lv.time_ns] = lv
    assert times[10] in late and late[times[10]].flag is QualityFlag.FAIL and late[times[10]].test == "spike"
    state = qc.state()
    again = SeriesQc(settings, 60)
    again.restore(state)
    assert list(again.values)[-3:] == list(qc.values)[-3:] and list(again.times) == list(qc.times)


def test_streaming_fast_paths_agree_with_the_array_functions():
    from collector.quality import _gross_range_1, _rate_of_change_2, _spike_3

    rng = np.random.default_rng(7)
    for _ in range(3000):
        x = list(np.round(rng.normal(0, 1, 3), int(rng.integers(0, 3))))
        t = [BASE_NS, BASE_NS + int(rng.integers(0, 3 * 10**9)), 0]
        st, ft = float(rng.choice([0.0, 0.3, 1.0])), rng.choice([None, 0.0, 1.5])
        for m in ("average", "differential"):
            assert _spike_3(*x, st, ft, m) == qartod.spike(x, st, ft, m)[1]
        assert _rate_of_change_2(x[0], x[1], t[0], t[1], 0.2, ft) == qartod.rate_of_change(x[:2], t[:2], 0.2, ft)[1]
        assert _gross_range_1(x[0], (1, -1), (-0.5, 0.5)) == qartod.gross_range(x[:1], (1, -1), (-0.5, 0.5))[0]


def test_streaming_flat_line_of_the_last_point_agrees_with_the_array_function():
    from collector.quality import _flat_line_last

    rng = np.random.default_rng(11)
    for _ in range(2000):
        n = int(rng.integers(1, 30))
        x = list(np.repeat(np.round(rng.normal(0, 1, n), 1), int(rng.integers(1, 6)))[:n])
        if rng.random() < 0.3:
            x[int(rng.integers(0, n))] = float(rng.choice([np.nan, np.inf, 1e308]))
        step = int(rng.choice([1, 60, 900])) * 10**9
        t = list(BASE_NS + np.cumsum(rng.integers(step, step + 2 * 10**9, n)))
        s = float(rng.choice([1, 60, 120, 1800]))
        f = s * float(rng.choice([1, 2]))
        tol = float(rng.choice([0, 0.05, 0.5]))
        assert _flat_line_last(x, t, s, f, tol) == qartod.flat_line(x, t, s, f, tol)[-1], (x, s, f, tol)


def test_streaming_flat_line_keeps_agreeing_as_points_leave_the_window():
    """The window's sorted steps and its count of non-finite values are kept up to date, not recomputed:
    over long series with uneven steps, NaN and inf, the newest flag still equals the array function's."""
    rng = np.random.default_rng(23)
    for case in range(40):
        interval = int(rng.choice([1, 60]))
        fl = FlatLineQc(float(rng.choice([3, 5, 8])) * interval, float(rng.choice([8, 12])) * interval,
                        float(rng.choice([0.001, 0.05])))
        qc = SeriesQc(QcSettings(flat_line=fl), interval)
        t = BASE_NS
        values, times = [], []
        for i in range(4 * qc.maxlen + 7):
            t += int(interval * 10**9 * rng.choice([1, 1, 1, 2, 3])) + int(rng.integers(0, 10**6))
            v = float(rng.choice([20.0, 20.0, 20.01, rng.normal(20, 1)]))
            if rng.random() < 0.05:
                v = float(rng.choice([np.nan, np.inf, -np.inf]))
            values.append(v)
            times.append(t)
            verdict, _ = qc.check(t, v)
            w = slice(max(0, len(values) - qc.maxlen), len(values))
            expected = int(qartod.flat_line(values[w], times[w], fl.suspect_threshold_s, fl.fail_threshold_s,
                                            fl.tolerance)[-1])
            if np.isfinite(v):       # a NaN or inf point is MISSING whatever its window
                assert int(verdict.flag) == expected, (case, i)


def test_the_saved_window_is_compact_exact_and_the_earlier_form_still_restores():
    settings = QcSettings(gross_range=GrossRangeQc((0, 40), (5, 35)), flat_line=FlatLineQc(30, 60, 0.001))
    qc = SeriesQc(settings, 1)
    rng = np.random.default_rng(5)
    for i in range(100):
        v = float("nan") if i == 70 else float("inf") if i == 80 else round(20 + float(rng.normal(0, 0.1)), 2)
        qc.check(BASE_NS + i * 10**9, v)
    state = qc.state()
    assert len(state) < 600 and '"dt":1000000000' in state      # 63 points: 1.7 KB in the earlier form
    legacy = json.dumps([list(qc.times), [None if v != v else v for v in qc.values], list(qc.flags)])
    for saved in (state, legacy):
        again = SeriesQc(settings, 1)
        again.restore(saved)
        assert list(again.times) == list(qc.times) and list(again.flags) == list(qc.flags)
        assert [repr(v) for v in again.values] == [repr(v) for v in qc.values]
        assert again.state() == state
    qc.check(BASE_NS + 101 * 10**9, 20.0)             # a missed poll: steps differ, times listed
    again = SeriesQc(settings, 1)
    again.restore(qc.state())
    assert '"t":[' in qc.state() and list(again.times) == list(qc.times) and again.state() == qc.state()
    assert list(again.flags) == list(qc.flags)
