"""Onset, fn at onset, lead time and vanishing on analytic series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.onset import (
    crossing_time,
    is_vanishing,
    lead_time,
    onset_table,
    onset_time,
    value_at,
)


def test_power_law_crossing_is_exact_in_log_time():
    # nc1 = t^-2 is a straight line in (log t, log nc1): interpolation is exact
    times = np.geomspace(1, 1000, 13)
    values = times**-2.0
    assert onset_time(times, values, threshold=1e-3) == pytest.approx(math.sqrt(1e3), rel=1e-12)
    # without interpolation: the first record below
    first = times[np.flatnonzero(values < 1e-3)[0]]
    assert onset_time(times, values, 1e-3, interpolate=False) == first


def test_stay_requires_consecutive_records_below():
    times = np.arange(1.0, 9.0)
    values = np.array([1.0, 0.005, 0.5, 0.004, 0.003, 0.002, 0.5, 0.001])
    assert onset_time(times, values, 0.01, stay=1, interpolate=False) == 2.0
    assert onset_time(times, values, 0.01, stay=3, interpolate=False) == 4.0
    assert math.isnan(onset_time(times, values, 0.01, stay=5))


def test_gaps_are_skipped_and_never_crossing_is_nan():
    times = np.array([10.0, 20, 30, 40, 50])
    values = np.array([np.nan, np.nan, 0.5, 0.02, 0.005])
    assert onset_time(times, values, 0.01, interpolate=False) == 50.0
    assert math.isnan(onset_time(times, np.full(5, 0.5), 0.01))
    assert math.isnan(onset_time(times, np.full(5, np.nan), 0.01))


def test_first_record_below_gives_its_time():
    assert onset_time(np.array([0.0, 1.0]), np.array([0.001, 0.0005]), 0.01) == 0.0


def test_value_at_and_crossing_and_lead():
    times = np.geomspace(1, 100, 21)
    fn = 10 * times**-0.5  # falls from 10 to 1
    assert value_at(times, fn, 10.0) == pytest.approx(10 * 10**-0.5, rel=1e-12)
    assert crossing_time(times, fn, 2.0) == pytest.approx(25.0, rel=1e-12)
    assert crossing_time(times, 1 / fn, 0.5, direction="above") == pytest.approx(25.0, rel=1e-12)
    assert lead_time(times, fn, onset=60.0, level=2.0) == pytest.approx(35.0, rel=1e-12)
    assert math.isnan(lead_time(times, fn, onset=math.nan, level=2.0))
    with pytest.raises(InputError, match="direction"):
        crossing_time(times, fn, 2.0, direction="sideways")


def test_vanishing():
    assert is_vanishing(np.array([0.1, 1.0, 0.5, 1e-4]))
    assert not is_vanishing(np.array([0.1, 1.0, 0.9]))
    assert is_vanishing(np.zeros(3))


def test_onset_table_groups_runs():
    t = np.geomspace(1, 1000, 13)
    frame = pd.concat([
        pd.DataFrame({"run_id": "a", "time": t, "nc1_trace": t**-2.0, "fn": t * 0 + 3.0}),
        pd.DataFrame({"run_id": "b", "time": t, "nc1_trace": t * 0 + 1.0, "fn": t}),
    ])
    table = onset_table(frame, threshold=1e-3)
    assert table.loc["a", "onset_time"] == pytest.approx(math.sqrt(1e3))
    assert table.loc["a", "fn_at_onset"] == pytest.approx(3.0)
    assert math.isnan(table.loc["b", "onset_time"])
    with pytest.raises(InputError, match="lacks column"):
        onset_table(frame.drop(columns="fn"))


def test_mismatched_lengths_rejected():
    with pytest.raises(InputError, match="equal length"):
        onset_time(np.arange(3.0), np.arange(4.0))
