"""Probe tests for ncsim.metrics and ncsim.onset: edges that mutation testing found unpinned.

Each test pins one behaviour that a plausible wrong implementation (an off-by-one, a dropped
input check, a changed resolution factor) would change while the rest of the suite passes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import StreamingNC, cdnv, class_statistics, nc1, nc_metrics
from ncsim.onset import (
    crossing_index,
    crossing_time,
    is_vanishing,
    onset_and_fn,
    onset_record,
    onset_time,
    value_at,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _two_close_classes(gap_in_noise_levels):
    """K = 3, p = 1: classes 0 and 1 with means `gap` rounding levels s_n apart, class 2 at 1.

    Every |h| <= 1, so s_n = 8 eps (sqrt(3) + 1); each class has within-class spread 0.25^2.
    """
    sn = 8.0 * torch.finfo(F64).eps * (3**0.5 + 1.0)
    d = gap_in_noise_levels * sn
    h = torch.tensor([-0.25, 0.25, d - 0.25, d + 0.25, 1.0, 1.0], dtype=F64).reshape(1, 6, 1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    return h, y, sn


def test_mean_noise_of_the_close_class_example_is_the_documented_level():
    """The example's rounding level is 8 eps (sqrt(K) + sqrt(p)) max|h| with max|h| = 1."""
    h, y, sn = _two_close_classes(2.0)
    stats = class_statistics(h, y, 3)
    assert float(stats.mean_noise[0]) == pytest.approx(sn, rel=1e-12)


def test_cdnv_pair_closer_than_four_noise_levels_counts_as_coincident():
    """Two class means 2 s_n apart are not resolved (cut at 4 s_n): their pair, with
    within-class variance, makes cdnv +inf rather than a huge finite ratio."""
    h, y, _ = _two_close_classes(2.0)
    assert float(cdnv(h, y, 3)[0]) == math.inf
    w = torch.eye(3, 1, dtype=F64).unsqueeze(0)
    assert float(nc_metrics(h, y, 3, w)["cdnv"][0]) == math.inf


def test_cdnv_pair_beyond_four_noise_levels_is_resolved_and_finite():
    """Two class means 6 s_n apart are resolved: cdnv is finite (and enormous), not inf."""
    h, y, sn = _two_close_classes(6.0)
    got = float(cdnv(h, y, 3)[0])
    assert math.isfinite(got)
    # the close pair dominates: (0.0625 + 0.0625) / 2 / (6 s_n)^2, over 3 pairs
    assert got == pytest.approx(0.0625 / (6.0 * sn) ** 2 / 3.0, rel=1e-2)


@pytest.mark.parametrize("call", ["nc1", "class_statistics", "streaming"])
def test_boolean_labels_are_refused(call):
    """Boolean labels are not class indices: every entry point raises InputError."""
    h = torch.arange(8, dtype=F64).reshape(1, 4, 2)
    y = torch.tensor([True, False, True, False])
    with pytest.raises(InputError, match="labels must be an integer tensor, got torch.bool"):
        if call == "nc1":
            nc1(h, y, 2)
        elif call == "class_statistics":
            class_statistics(h, y, 2)
        else:
            StreamingNC(2, 2).update(h[0], y)


@pytest.mark.parametrize("p", [0, -1, 2.0, True])
def test_streaming_refuses_a_feature_dimension_below_one_or_not_an_int(p):
    """StreamingNC needs an integer p >= 1 (0, negatives, floats and bools are refused)."""
    with pytest.raises(InputError, match="feature dimension p must be an int >= 1"):
        StreamingNC(3, p)


# --------------------------------------------------------------------------------------------
# onset
# --------------------------------------------------------------------------------------------


def test_a_run_of_exactly_stay_records_counts():
    """With as many records as ``stay`` and all below the threshold, the onset is the first."""
    vals = np.array([1e-3, 2e-3, 3e-3])
    assert crossing_index(vals, 0.01, stay=3) == 0
    assert onset_time([1.0, 2.0, 3.0], vals, 0.01, stay=3) == 1.0
    assert crossing_index(vals[:2], 0.01, stay=3) is None


def test_stay_run_that_ends_on_the_last_record():
    """A run of ``stay`` records below that ends on the last record is an onset (at its first)."""
    t = [1.0, 2.0, 3.0, 4.0]
    v = [1.0, 0.5, 1e-3, 1e-3]
    assert crossing_index(np.array(v), 0.01, stay=2) == 2
    assert onset_record(t, v, 0.01, stay=2) == 2
    assert onset_time(t, v, 0.01, stay=2, interpolate=False) == 3.0


def test_value_at_after_the_last_record_is_the_last_finite_value():
    """Past the last record value_at holds the last finite value (NaN records skipped)."""
    t = [1.0, 2.0, 3.0]
    assert value_at(t, [3.0, 4.0, math.nan], 5.0) == 4.0
    assert value_at(t, [3.0, 4.0, 6.0], 10.0, interpolate=False) == 6.0


def test_value_at_before_the_first_record_is_the_first_value():
    """Before the first finite record value_at takes that record's value (no extrapolation, no
    wrap-around to the last record)."""
    t = [1.0, 2.0, 4.0]
    v = [3.0, 5.0, 100.0]
    assert value_at(t, v, 0.5) == 3.0
    assert value_at(t, v, 0.5, interpolate=True) == 3.0
    assert value_at(t, [math.nan, 5.0, 100.0], 1.0) == 5.0


def test_crossing_time_at_the_first_record_is_its_time():
    """A series that starts beyond the level crosses at its first record, even with
    interpolation on (no segment before it)."""
    t = [1.0, 2.0, 3.0]
    assert crossing_time(t, [0.5, 2.0, 3.0], 1.0, "below") == 1.0
    assert crossing_time(t, [0.5, 2.0, 3.0], 1.0, "below", interpolate=False) == 1.0
    assert crossing_time(t, [2.0, 0.1, 0.1], 1.0, "above") == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda t: onset_time(t, [1.0, 0.1, 1e-3]),
        lambda t: onset_and_fn(t, [1.0, 0.1, 1e-3], [1.0, 1.0, 1.0]),
        lambda t: value_at(t, [1.0, 2.0, 3.0], 1.5),
        lambda t: crossing_time(t, [1.0, 2.0, 3.0], 1.5),
    ],
    ids=["onset_time", "onset_and_fn", "value_at", "crossing_time"],
)
def test_unordered_times_are_refused(call):
    """Times out of order raise InputError in every series function."""
    with pytest.raises(InputError, match=r"record times must be in order \(non-decreasing\)"):
        call([3.0, 1.0, 2.0])


def test_records_without_a_finite_time_are_dropped():
    """A record at a NaN time is dropped, even if its metric is below the threshold: the
    onset comes from the timed records (here interpolated in log-log between t = 1 and 4)."""
    t = [1.0, math.nan, 4.0]
    v = [1.0, 1e-4, 1e-4]
    assert onset_record(t, v, 0.01) == 2
    # log v falls from 0 to -4 over log t from 0 to log 4: level -2 at t = 2
    assert onset_time(t, v, 0.01) == pytest.approx(2.0, rel=1e-12)
    when, fn_on = onset_and_fn(t, v, [5.0, 7.0, 5.0], 0.01)
    assert when == pytest.approx(2.0, rel=1e-12) and fn_on == pytest.approx(5.0, rel=1e-12)


# --------------------------------------------------------------------------------------------
# two bugs this probe found (fixed): text in fn, an onset at a -inf record
# --------------------------------------------------------------------------------------------


def test_non_numeric_fn_raises_input_error():
    """fn that holds text is refused with InputError, like times and values."""
    with pytest.raises(InputError, match="fn must be a sequence of numbers"):
        onset_and_fn([1.0, 2.0], [1.0, 1e-3], ["a", "b"])


def test_onset_at_a_minus_inf_record_is_that_record_s_time():
    """A -inf metric is below every threshold: the onset is its record's time (as from a
    +inf record), never the record before, whose metric was above; fn is that record's."""
    assert onset_time([1.0, 2.0, 3.0], [1.0, -math.inf, 1e-3], 0.01) == 2.0
    assert onset_and_fn([1.0, 2.0, 3.0], [1.0, -math.inf, 1e-3], [4.0, 5.0, 6.0], 0.01) == (
        2.0, 5.0)


@pytest.mark.parametrize("tol", [math.nan, -0.1, 1.0, "0.1"])
def test_is_vanishing_refuses_a_tolerance_outside_zero_one(tol):
    """vanish_tol must be a number in [0, 1): NaN no longer passes as 'never vanishing'."""
    with pytest.raises(InputError, match="vanish_tol"):
        is_vanishing([1.0, 1e-9], tol)
