"""Onset time and fn at onset together (``ncsim.onset.onset_and_fn``): equal to
``onset_time`` and ``value_at`` on ordinary series, and the crossing record's fn at a jump
(two records at one time, the two sides of an intervention)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.onset import onset_and_fn, onset_table, onset_time, value_at

# an intervention at t = 20 triples fn and lowers the metric below 0.01: two records at t = 20
JUMP_TIMES = np.array([0.0, 10.0, 20.0, 20.0, 30.0])
JUMP_METRIC = np.array([1.0, 0.5, 0.02, 0.005, 0.001])
JUMP_FN = np.array([5.0, 4.0, 3.0, 9.0, 8.0])


@pytest.mark.parametrize("interpolate", [False, True])
def test_onset_at_a_jump_takes_the_crossing_record(interpolate):
    """The metric crosses at the second record of t = 20: the onset is 20 exactly (no
    exp(log t) rounding) and fn at onset is that record's 9, not the first record's 3."""
    when, fn = onset_and_fn(JUMP_TIMES, JUMP_METRIC, JUMP_FN, 0.01, interpolate=interpolate)
    assert when == 20.0 and fn == 9.0
    assert onset_time(JUMP_TIMES, JUMP_METRIC, 0.01, interpolate=interpolate) == 20.0


def test_onset_at_the_first_record_of_a_jump():
    """Below already before the jump: the onset is in the segment 10 -> 20 (log-log: 0.5 ->
    0.005 meets 0.05 half way, t = sqrt(200)); a record-exact onset at t = 20 with the
    crossing on the first of the two records takes that record's fn."""
    metric = np.array([1.0, 0.5, 0.005, 0.004, 0.001])
    when, fn = onset_and_fn(JUMP_TIMES, metric, JUMP_FN, 0.05)
    assert when == pytest.approx(math.sqrt(200.0), rel=1e-14)
    assert fn == pytest.approx(math.sqrt(4.0 * 3.0), rel=1e-14)
    when, fn = onset_and_fn(JUMP_TIMES, metric, JUMP_FN, 0.01, interpolate=False)
    assert (when, fn) == (20.0, 3.0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("interpolate", [False, True])
@pytest.mark.parametrize("stay", [1, 2])
def test_same_as_onset_time_and_value_at_without_jumps(seed, interpolate, stay):
    """With distinct record times the pair is exactly (onset_time, value_at at it), gaps in
    either series included."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([[0.0], np.geomspace(0.1, 1e3, 24)])
    metric = np.exp(np.cumsum(rng.normal(-0.3, 0.6, times.size)))
    fn = np.exp(np.cumsum(rng.normal(0.0, 0.3, times.size)))
    metric[rng.choice(times.size, 4, replace=False)] = np.nan
    fn[rng.choice(times.size, 4, replace=False)] = np.nan
    threshold = float(np.nanquantile(metric, 0.3))
    when, fn_on = onset_and_fn(times, metric, fn, threshold, stay, interpolate)
    want = onset_time(times, metric, threshold, stay, interpolate)
    assert when == want or (math.isnan(when) and math.isnan(want))
    want_fn = value_at(times, fn, want, interpolate)
    assert fn_on == want_fn or (math.isnan(fn_on) and math.isnan(want_fn))


def test_no_onset_and_a_gap_in_fn_at_the_crossing_record():
    """No crossing: both NaN. The crossing record's fn missing: fn at onset falls back to
    value_at, as for any time (without interpolation: the next finite record)."""
    times = np.array([1.0, 2.0, 4.0, 8.0])
    assert all(map(math.isnan, onset_and_fn(times, [1.0, 0.5, 0.2, 0.1], [1, 2, 3, 4], 0.01)))
    when, fn = onset_and_fn(times, [1.0, 0.5, 0.005, 0.001], [1.0, 2.0, np.nan, 8.0], 0.01,
                            interpolate=False)
    assert (when, fn) == (4.0, 8.0)


def test_bad_fn_series_is_refused():
    with pytest.raises(InputError, match="fn must have one value per record"):
        onset_and_fn([1.0, 2.0], [0.5, 0.001], [1.0], 0.01)


def test_onset_table_keeps_the_order_of_equal_times():
    """onset_table sorts by time with a stable sort: the two records at t = 20 keep their
    order (rows given shuffled otherwise), so the jump is read as written."""
    frame = pd.DataFrame({"run_id": "r", "time": JUMP_TIMES, "m": JUMP_METRIC, "fn": JUMP_FN})
    order = [4, 0, 2, 3, 1]  # the pair keeps its relative order, the rest is shuffled
    table = onset_table(frame.iloc[order], metric="m", interpolate=False)
    assert table.loc["r", "onset_time"] == 20.0 and table.loc["r", "fn_at_onset"] == 9.0
