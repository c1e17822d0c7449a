"""Onset, fn at onset, crossings and vanishing on hand-built series with hand-worked answers."""

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.onset import (
    crossing_time,
    lead_time,
    onset_and_fn,
    onset_table,
    onset_time,
    onsets_and_fn,
    value_at,
)


def _both(times, values, fn, **rule):
    """(scalar, batched) results of one series; the batch must give the scalar's bits."""
    scalar = onset_and_fn(times, values, fn, **rule)
    when, fn_on = onsets_and_fn(times, np.asarray([values], float), np.asarray([fn], float),
                                **rule)
    return scalar, (float(when[0]), float(fn_on[0]))


def _same_bits(a, b):
    """Equal floats, NaN equal to NaN."""
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_log_log_crossing_and_fn_worked_by_hand():
    """1 -> 1e-4 over t 1 -> 100 meets 1e-2 half way in log: t = 10; fn 1 -> 100 gives 10."""
    scalar, batch = _both([1.0, 100.0], [1.0, 1e-4], [1.0, 100.0], threshold=1e-2)
    assert scalar == pytest.approx((10.0, 10.0), rel=1e-12)
    assert _same_bits(scalar, batch)


def test_a_gap_is_skipped_in_the_interpolation():
    """A NaN record between is a gap: the crossing interpolates t = 1 -> 3: sqrt(3)."""
    scalar, batch = _both([1.0, 2.0, 3.0], [1.0, math.nan, 1e-4], [1.0, 1.0, 1.0],
                          threshold=1e-2)
    assert scalar[0] == pytest.approx(math.sqrt(3.0), rel=1e-12)
    assert scalar[1] == 1.0
    assert _same_bits(scalar, batch)


def test_a_record_at_the_threshold_is_not_below():
    """values == threshold is not a crossing: the onset is at the next record below."""
    scalar, batch = _both([1.0, 2.0, 3.0], [1.0, 0.01, 0.001], [5.0, 6.0, 7.0],
                          threshold=0.01, interpolate=False)
    assert scalar == (3.0, 7.0)
    assert _same_bits(scalar, batch)


def test_a_run_that_starts_below_has_its_onset_at_the_first_record():
    """Already below at the first record: onset = t[0], fn at onset = fn[0], no interpolation."""
    scalar, batch = _both([2.0, 3.0], [1e-3, 1e-4], [4.0, 9.0], threshold=0.01)
    assert scalar == (2.0, 4.0)
    assert _same_bits(scalar, batch)


def test_a_run_that_never_crosses_has_nan_onset_and_fn():
    """No record below: (NaN, NaN) from both paths."""
    scalar, batch = _both([1.0, 2.0], [1.0, 0.5], [1.0, 2.0], threshold=0.01)
    assert math.isnan(scalar[0]) and math.isnan(scalar[1])
    assert _same_bits(scalar, batch)


def test_from_a_record_at_time_zero_the_interpolation_is_linear_in_time():
    """t 0 -> 10, 1 -> 1e-4, threshold 1e-2: log-value half way, linear time: t = 5."""
    assert onset_time([0.0, 10.0], [1.0, 1e-4], threshold=1e-2) == pytest.approx(5.0, rel=1e-12)


def test_from_a_record_at_plus_inf_the_crossing_is_the_later_record():
    """nc1 = +inf (no between-class spread) is above every threshold; onset at the next record."""
    scalar, batch = _both([1.0, 2.0, 3.0], [1.0, math.inf, 1e-3], [3.0, 5.0, 4.0],
                          threshold=0.01)
    assert scalar == (3.0, 4.0)
    assert _same_bits(scalar, batch)


def test_stay_counts_records_that_are_not_gaps():
    """stay=2: the first two non-gap records below are t = 5 and 7 (gap at 6); the crossing is
    interpolated from t = 4 (value 1) to t = 5 (1e-3): 4 (5/4)^(2/3)."""
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    values = [1.0, 1e-3, 1.0, 1.0, 1e-3, math.nan, 1e-3]
    scalar, batch = _both(times, values, [1.0] * 7, threshold=0.01, stay=2)
    assert scalar[0] == pytest.approx(4.0 * 1.25 ** (2.0 / 3.0), rel=1e-12)
    assert _same_bits(scalar, batch)


def test_value_at_past_the_last_record_is_the_last_finite_value():
    """After the last finite record value_at holds the last finite value (not NaN)."""
    assert value_at([1.0, 2.0, 4.0], [3.0, 5.0, 7.0], 10.0) == 7.0
    assert value_at([1.0, 2.0, 4.0], [3.0, 5.0, math.nan], 10.0) == 5.0


def test_fn_at_onset_after_the_last_fn_record_is_the_last_finite_fn():
    """An onset record without fn, later than every fn record: fn at onset is the last fn."""
    times, values = [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1e-3]
    fn = [2.0, 3.0, math.nan, math.nan]
    scalar, batch = _both(times, values, fn, threshold=0.01, interpolate=False)
    assert scalar == (4.0, 3.0)
    assert _same_bits(scalar, batch)


def test_crossing_time_skips_an_infinite_fn_record():
    """fn = +inf is skipped by crossing_time: 1 -> 100 over t 1 -> 3 meets 10 at sqrt(3)."""
    t = crossing_time([1.0, 2.0, 3.0], [1.0, math.inf, 100.0], 10.0, direction="above")
    assert t == pytest.approx(math.sqrt(3.0), rel=1e-12)


def test_lead_time_of_an_infinite_onset_is_nan():
    """lead_time is NaN when the onset is missing, an inf onset ("never") included."""
    times, fn = [1.0, 2.0, 3.0], [1.0, 10.0, 100.0]
    assert lead_time(times, fn, 5.0, 10.0) == 3.0
    assert math.isnan(lead_time(times, fn, math.inf, 10.0))
    assert math.isnan(lead_time(times, fn, math.nan, 10.0))


def _table(final_fn):
    """One run: nc1_trace crosses 0.01 at t = 2; fn peaks at 1 and ends at ``final_fn``."""
    return pd.DataFrame({"run_id": ["a"] * 3, "time": [1.0, 2.0, 3.0],
                         "nc1_trace": [1.0, 1e-3, 1e-4], "fn": [1.0, 0.5, final_fn]})


def test_onset_table_default_vanish_tol_is_the_simulators_1e_3():
    """Default vanish_tol 1e-3: final fn 5e-3 x peak is not vanishing, 5e-4 x peak is."""
    kept = onset_table(_table(5e-3), interpolate=False)
    assert not bool(kept.loc["a", "vanishing"])
    assert kept.loc["a", "onset_time"] == 2.0 and kept.loc["a", "fn_at_onset"] == 0.5
    gone = onset_table(_table(5e-4), interpolate=False)
    assert bool(gone.loc["a", "vanishing"])
    assert math.isnan(gone.loc["a", "onset_time"]) and math.isnan(gone.loc["a", "fn_at_onset"])


def test_onset_table_rows_follow_the_order_runs_first_appear():
    """The result rows are in the order of the runs' first records (no sorting of run ids)."""
    parts = [_table(1.0).assign(run_id=r) for r in ("z", "b", "m")]
    out = onset_table(pd.concat(parts, ignore_index=True))
    assert list(out.index) == ["z", "b", "m"]
