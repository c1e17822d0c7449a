"""Fourth probe of ncsim.onset: a naive one-loop reference on boundary series, exact record
times at the ends of an interpolation, infinite and float32 records, and exact refusals."""

import math

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.onset import (
    crossing_time,
    onset_and_fn,
    onset_record,
    onset_time,
    onsets_and_fn,
    value_at,
)

ORDER = "record times must be in order (non-decreasing); sort the records by time first"


def _naive_onset(times, values, threshold, stay, interpolate):
    """Onset time and raw record index by one plain loop, as the module docstring says."""
    kept = [(i, float(t), float(v)) for i, (t, v) in enumerate(zip(times, values))
            if math.isfinite(t) and not math.isnan(v)]
    for k in range(len(kept) - stay + 1):
        if all(kept[k + m][2] < threshold for m in range(stay)):
            break
    else:
        return math.nan, None
    row, t1, v1 = kept[k]
    if not interpolate or k == 0:
        return t1, row
    _, t0, v0 = kept[k - 1]
    if math.isinf(v0) or math.isinf(v1) or t0 == t1:
        return t1, row
    if v0 > 0 and v1 > 0 and threshold > 0:
        a, b, c = math.log(v0), math.log(v1), math.log(threshold)
    else:
        a, b, c = v0, v1, threshold
    if a == b:
        return t1, row
    frac = (c - a) / (b - a)
    if frac == 0.0:
        return t0, row
    if t0 > 0:
        return t0 * (t1 / t0) ** frac, row
    return t0 + frac * (t1 - t0), row


def _boundary_series(rng, threshold):
    """Times with repeats, a start at or below 0 and untimed records; values exactly at the
    threshold, 0, negatives, +-inf, NaN, and values that rise back above."""
    size = int(rng.integers(0, 9))
    times = np.sort(rng.choice([0.5, 1.0, 2.0, 3.0, 7.0, 10.0, 30.0], size))
    if size and rng.random() < 0.3:
        times[0] = rng.choice([0.0, -2.0])
    if size > 2 and rng.random() < 0.3:
        times[int(rng.integers(0, size))] = rng.choice([np.nan, np.inf])
    specials = [threshold, threshold, 0.0, -threshold, np.inf, -np.inf, np.nan, np.nan,
                2 * threshold, threshold / 3]
    values = np.where(rng.random(size) < 0.5, rng.choice(specials, size),
                      threshold * np.exp(rng.normal(0.0, 1.5, size)))
    return times, values


@pytest.mark.parametrize("seed", range(6))
def test_onset_time_and_record_equal_a_naive_loop_on_boundary_series(seed):
    """onset_time/onset_record equal a plain loop over the records (gaps skipped, first run
    of stay below, log-log interpolation) on 150 hand-mixed boundary series."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        threshold = float(rng.choice([0.01, 0.5]))
        times, values = _boundary_series(rng, threshold)
        for stay in (1, 2, 3):
            for interpolate in (True, False):
                want, row = _naive_onset(times, values, threshold, stay, interpolate)
                got = onset_time(times, values, threshold, stay, interpolate)
                assert onset_record(times, values, threshold, stay) == row
                if math.isnan(want):
                    assert math.isnan(got)
                else:
                    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (
                        times, values, threshold, stay, interpolate, got, want)


@pytest.mark.parametrize("seed", range(3))
def test_batch_equals_one_by_one_on_boundary_series(seed):
    """onsets_and_fn over 40 series sharing times equals onset_and_fn on each, bit for bit."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        times, _ = _boundary_series(rng, 0.01)
        rows = [_boundary_series(np.random.default_rng(int(rng.integers(1 << 30))), 0.01)[1]
                for _ in range(40)]
        values = np.array([np.resize(r, times.size) if r.size else np.full(times.size, np.nan)
                           for r in rows]).reshape(40, times.size)
        fn = np.abs(values[::-1]) + 0.5
        for stay in (1, 2):
            for interpolate in (True, False):
                when, fn_on = onsets_and_fn(times, values, fn, 0.01, stay, interpolate)
                for i in range(40):
                    w, f = onset_and_fn(times, values[i], fn[i], 0.01, stay, interpolate)
                    assert (w == when[i] or (math.isnan(w) and math.isnan(when[i])))
                    assert (f == fn_on[i] or (math.isnan(f) and math.isnan(fn_on[i])))


def test_a_record_at_the_threshold_puts_the_interpolated_onset_on_its_own_time_exactly():
    """metric 0.01 at t = 10 (not below), 0.001 at t = 20: the log-log crossing of 0.01 is
    t = 10 exactly (exp(log 10) is not 10), in onset_time and in the batch."""
    times, values = np.array([10.0, 20.0]), np.array([0.01, 0.001])
    assert onset_time(times, values, 0.01) == 10.0
    assert onset_record(times, values, 0.01) == 1
    when, fn_on = onsets_and_fn(times, values[None], np.array([[3.0, 5.0]]), 0.01)
    assert when[0] == 10.0 and fn_on[0] == 3.0


def test_a_crossing_onto_a_record_at_the_level_is_that_records_time_exactly():
    """fn 5 at t = 10, 1 at t = 20, level 1: crossing_time is 20 exactly (the log-log formula
    at frac = 1 gives 20 + 1 ulp) and value_at there gives the level back."""
    times, fn = np.array([10.0, 20.0]), np.array([5.0, 1.0])
    cross = crossing_time(times, fn, 1.0, "below")
    assert cross == 20.0
    assert value_at(times, fn, cross) == 1.0


def test_a_crossing_onto_a_record_whose_log_rounds_to_the_thresholds_is_that_records_time():
    """v1 = the float just below 1000 (log equal to log 1000 in doubles), threshold 1000:
    the onset is t1 = 20 exactly, not the log-time formula's 20 + 1 ulp."""
    v1 = math.nextafter(1000.0, 0.0)
    assert onset_time([10.0, 20.0], [2000.0, v1], 1000.0) == 20.0


def test_a_crossing_down_to_minus_inf_is_at_the_minus_inf_record():
    """metric 1 at t = 1, -inf at t = 2, threshold 0.5: -inf is below every threshold and the
    crossing next to an infinite record is that record's time, 2 (not 1), single and batch."""
    times, values = np.array([1.0, 2.0]), np.array([1.0, -np.inf])
    assert onset_time(times, values, 0.5) == 2.0
    when, fn_on = onsets_and_fn(times, values[None], np.array([[4.0, 6.0]]), 0.5)
    assert when[0] == 2.0 and fn_on[0] == 6.0


def test_onset_record_is_an_index_into_the_given_records_gaps_counted():
    """A NaN record before the crossing: onset_record gives the index in the given arrays (3),
    not among the kept records (2); with an untimed record too (4)."""
    assert onset_record([1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 0.5, 0.001], 0.01) == 3
    assert onset_record([1.0, np.nan, 2.0, 3.0, 4.0], [1.0, 0.0, np.nan, 0.5, 0.001], 0.01) == 4


def test_float32_series_are_read_as_float64():
    """float32(0.01) = 0.0099999998 is below the threshold 0.01 (compared in float64), and a
    float32 series gives the float64 series' onset bit for bit, single and batch."""
    t32 = np.array([1.0, 2.0, 3.0], np.float32)
    v32 = np.array([1.0, 0.01, 0.001], np.float32)
    assert onset_time(t32, v32, 0.01, interpolate=False) == 2.0
    assert onset_record(t32, v32, 0.01) == 1
    t64, v64 = t32.astype(np.float64), v32.astype(np.float64)
    assert onset_time(t32, v32, 0.01) == onset_time(t64, v64, 0.01)
    when32, fn32 = onsets_and_fn(t32, v32[None], v32[None], 0.01)
    when64, fn64 = onsets_and_fn(t64, v64[None], v64[None], 0.01)
    assert when32[0] == when64[0] and fn32[0] == fn64[0]
    assert when32.dtype == np.float64


def test_no_records_with_stay_above_one_is_no_onset():
    """An empty series, or one with only gaps, with stay = 2: NaN onset and no record."""
    assert math.isnan(onset_time([], [], 0.01, stay=2))
    assert onset_record([], [], 0.01, stay=2) is None
    assert math.isnan(onset_time([1.0, 2.0], [np.nan, np.nan], 0.01, stay=2))
    assert all(math.isnan(x) for x in onset_and_fn([], [], [], 0.01, stay=3))


def test_one_record_and_a_crossing_at_the_last_record():
    """One record below: onset at it (interpolated or not); one above: none; stay 2 on one
    record: none; a crossing at the last record interpolates from the one before."""
    for interpolate in (True, False):
        assert onset_time([5.0], [0.001], 0.01, interpolate=interpolate) == 5.0
        assert math.isnan(onset_time([5.0], [0.5], 0.01, interpolate=interpolate))
    assert math.isnan(onset_time([5.0], [0.001], 0.01, stay=2))
    when = onset_time([1.0, 100.0], [1.0, 1e-4], 0.01)
    assert when == pytest.approx(10.0, rel=1e-12)


def test_batch_refuses_two_dimensional_times_with_its_message():
    """times (1, 3) with values (1, 3) is refused by onsets_and_fn with the exact message."""
    with pytest.raises(InputError) as err:
        onsets_and_fn(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)))
    assert str(err.value) == ("onsets_and_fn takes times (T,) and values (R, T), got (1, 3) "
                              "and (1, 3)")


def test_a_one_element_array_threshold_is_refused_not_unwrapped():
    """Only a 0-d array is the number it holds: array([0.01]) as a threshold is refused with
    the exact message, by onset_time and by the batch."""
    message = "onset threshold must be a finite number (not text or a bool), got array([0.01])"
    with pytest.raises(InputError) as err:
        onset_time([1.0, 2.0], [1.0, 0.001], threshold=np.array([0.01]))
    assert str(err.value) == message
    with pytest.raises(InputError) as err:
        onsets_and_fn([1.0, 2.0], [[1.0, 0.001]], [[1.0, 1.0]], threshold=np.array([0.01]))
    assert str(err.value) == message
    assert onset_time([1.0, 2.0], [1.0, 0.001], threshold=np.array(0.01)) == pytest.approx(
        2.0 ** (2.0 / 3.0), rel=1e-12)


@pytest.mark.parametrize("times", [[2.0, np.nan, 1.0], [2.0, np.inf, 1.0]])
def test_times_out_of_order_around_an_untimed_record_are_refused(times):
    """Finite times 2 then 1 with an untimed record between: refused with the exact message by
    onset_time and by the batch (the untimed record does not hide the disorder)."""
    with pytest.raises(InputError) as err:
        onset_time(times, [1.0, 1.0, 1.0])
    assert str(err.value) == ORDER
    with pytest.raises(InputError) as err:
        onsets_and_fn(times, np.ones((2, 3)), np.ones((2, 3)))
    assert str(err.value) == ORDER


def test_text_series_are_refused_naming_the_argument_and_its_type():
    """A text series: the message names the argument, the type and numpy's reason."""
    with pytest.raises(InputError) as err:
        onset_time([1.0, 2.0], ["a", "b"])
    assert str(err.value) == ("values must be a sequence of numbers, got list: could not "
                              "convert string to float: 'a'")
    with pytest.raises(InputError) as err:
        onset_time("abc", [1.0])
    assert str(err.value) == ("times must be a sequence of numbers, got str: could not "
                              "convert string to float: 'abc'")


def test_the_first_crossing_wins_when_the_metric_rises_back_and_falls_again():
    """Below at t = 2, back above at 3, below again at 4 and after: onset 2 (record 1), and
    with stay 2 the run starting at 4 (record 3); NaN records after the crossing change
    nothing."""
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    values = [1.0, 0.001, 0.5, 0.002, 0.003, np.nan]
    assert onset_time(times, values, 0.01, interpolate=False) == 2.0
    assert onset_record(times, values, 0.01) == 1
    assert onset_record(times, values, 0.01, stay=2) == 3
    assert onset_time(times, values, 0.01, stay=2, interpolate=False) == 4.0
    assert math.isnan(onset_time(times, values, 0.01, stay=3))


def test_fn_at_an_interpolated_onset_on_a_jump_after_a_gap_is_the_crossing_records():
    """A gap, then two records at t = 2 (0.5, then 0.001 below): the onset is 2 and fn at
    onset is the crossing record's (9), not the other side's (7), with interpolation on."""
    times = [1.0, 1.5, 2.0, 2.0]
    values = [1.0, np.nan, 0.5, 0.001]
    fn = [1.0, 1.0, 7.0, 9.0]
    assert onset_and_fn(times, values, fn, 0.01) == (2.0, 9.0)
    assert onset_record(times, values, 0.01) == 3
