"""The batched onset rules (``onsets_and_fn``, ``are_vanishing``) against the per-series
functions they stand for, bit for bit, on series built to reach every branch."""

import math

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.onset import are_vanishing, is_vanishing, onset_and_fn, onsets_and_fn


def _same(a: float, b: float) -> bool:
    """Equal bit for bit, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _series_batch(rng: np.random.Generator, runs: int, records: int, times: np.ndarray):
    """Metric and fn series with gaps, infinities, zeros, negatives and plateaus."""
    decay = np.exp(-rng.uniform(0.0, 3.0, (runs, 1)) * np.log1p(np.abs(times))[None, :])
    values = decay * rng.uniform(0.05, 2.0, (runs, 1)) * rng.uniform(0.7, 1.3, (runs, records))
    fn = np.cumsum(rng.uniform(0.0, 0.3, (runs, records)), axis=1) + 0.01
    for array, specials in ((values, (np.nan, np.inf, -np.inf, 0.0, -0.02, 0.01)),
                            (fn, (np.nan, np.inf, 0.0, -0.5))):
        spots = rng.random(array.shape) < 0.08
        array[spots] = rng.choice(specials, size=int(spots.sum()))
    values[: runs // 8, records // 2:] = np.nan  # runs that stopped early
    fn[runs // 8: runs // 4] = np.nan  # no fn at all
    values[runs // 4: runs // 3] = 5.0  # never below
    return values, fn


def _times(rng: np.random.Generator, records: int, kind: str) -> np.ndarray:
    times = np.sort(rng.uniform(0.0, 50.0, records))
    if kind == "from_zero":
        times[0] = 0.0
    elif kind == "negative_start":
        times[:2] = (-3.0, -1.0)
    elif kind == "repeated":  # two records at one time, twice (an intervention's two sides)
        times[5], times[20] = times[4], times[19]
    elif kind == "untimed":  # records without a finite time are dropped
        times[[3, 11]] = np.nan
        times[-1] = np.inf
    return times


@pytest.mark.parametrize("kind", ["plain", "from_zero", "negative_start", "repeated", "untimed"])
@pytest.mark.parametrize("stay", [1, 2, 3])
@pytest.mark.parametrize("interpolate", [True, False])
def test_batch_equals_the_per_series_rule(kind, stay, interpolate):
    """Every series' onset time and fn at onset equal ``onset_and_fn``'s bit for bit."""
    rng = np.random.default_rng(100 * stay + len(kind) + int(interpolate))
    records = 40
    times = _times(rng, records, kind)
    values, fn = _series_batch(rng, 96, records, times)
    for threshold in (0.3, 0.01, 0.0):
        when, fn_on = onsets_and_fn(times, values, fn, threshold, stay, interpolate)
        expected = [onset_and_fn(times, values[i], fn[i], threshold, stay, interpolate)
                    for i in range(values.shape[0])]
        assert all(_same(when[i], e[0]) and _same(fn_on[i], e[1])
                   for i, e in enumerate(expected)), (kind, stay, interpolate, threshold)
        if threshold > 0:  # both outcomes are exercised (0 is crossed by the rare negatives)
            assert 0 < np.isfinite(when).sum() < values.shape[0]


def test_fn_missing_at_the_crossing_record_takes_its_neighbours():
    """A crossing record without fn at a time shared with the record before it: fn comes from
    the later records only (the other side of the jump is skipped), as per series."""
    times = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
    values = np.array([[1.0, 0.5, 0.2, 0.005, 0.004, 0.003],
                       [1.0, 0.5, 0.2, 0.1, 0.004, 0.003]])
    fn = np.array([[1.0, 2.0, 3.0, np.nan, 5.0, 6.0],
                   [1.0, 2.0, 3.0, 4.0, np.nan, 6.0]])
    when, fn_on = onsets_and_fn(times, values, fn, 0.01)
    # between (t, fn) = (2, 2) and (4, 5) in (log t, log fn); not 3.0, the record before the
    # jump at t = 3
    frac = math.log(1.5) / math.log(2.0)
    assert when[0] == 3.0 and fn_on[0] == pytest.approx(2.0 * 2.5 ** frac, rel=1e-14)
    assert fn_on[0] == onset_and_fn(times, values[0], fn[0], 0.01)[1]
    expected = onset_and_fn(times, values[1], fn[1], 0.01)
    assert _same(when[1], expected[0]) and _same(fn_on[1], expected[1])
    assert 4.0 > when[1] > 3.0 and 6.0 > fn_on[1] > 4.0


def test_stay_longer_than_the_records_and_empty_batches():
    """No run of ``stay`` records fits: no onset; no series or no records: empty answers."""
    times = np.array([1.0, 2.0])
    when, fn_on = onsets_and_fn(times, np.array([[0.0, 0.0]]), np.ones((1, 2)), 0.01, stay=3)
    assert np.isnan(when).all() and np.isnan(fn_on).all()
    when, fn_on = onsets_and_fn(times, np.zeros((0, 2)), np.zeros((0, 2)))
    assert when.shape == fn_on.shape == (0,)
    when, _ = onsets_and_fn(np.zeros(0), np.zeros((3, 0)), np.zeros((3, 0)))
    assert np.isnan(when).all() and when.shape == (3,)


def test_gaps_are_skipped_by_the_run_of_stay():
    """Two records below with a gap between them are consecutive records (gaps skipped)."""
    times = np.arange(1.0, 7.0)
    values = np.array([[1.0, 0.001, np.nan, 0.002, 1.0, 1.0],
                       [1.0, 0.001, 1.0, 0.002, 0.003, 1.0]])
    when, _ = onsets_and_fn(times, values, np.ones_like(values), 0.01, stay=2,
                            interpolate=False)
    assert when[0] == 2.0 and when[1] == 4.0


@pytest.mark.parametrize("args, match", [
    ((np.ones(3), np.ones(3), np.ones(3)), r"times \(T,\) and values \(R, T\)"),
    ((np.ones(3), np.ones((2, 4)), np.ones((2, 4))), r"times \(T,\) and values \(R, T\)"),
    ((np.ones(3), np.ones((2, 3)), np.ones((2, 2))), "one value per record of each series"),
    ((np.array([1.0, 3.0, 2.0]), np.ones((1, 3)), np.ones((1, 3))), "must be in order"),
    ((np.ones(3), [["a", "b", "c"]], np.ones((1, 3))), "values must be a sequence of numbers"),
])
def test_bad_batches_are_refused(args, match):
    """Shapes, order and content are checked with one clear message."""
    with pytest.raises(InputError, match=match):
        onsets_and_fn(*args)


@pytest.mark.parametrize("threshold, stay, match", [
    (math.nan, 1, "finite number"), ("0.1", 1, "finite number"), (0.1, 0, "integer >= 1"),
    (0.1, 1.5, "integer >= 1"),
])
def test_bad_rules_are_refused(threshold, stay, match):
    """The threshold and ``stay`` are checked as for one series."""
    with pytest.raises(InputError, match=match):
        onsets_and_fn(np.ones(2), np.ones((1, 2)), np.ones((1, 2)), threshold, stay)


def _vanishing_written_out(row: np.ndarray, vanish_tol: float) -> bool:
    """The vanishing rule by hand: the last finite fn below vanish_tol x the largest, or no
    positive fn at all; never with a tolerance of 0 or without a finite fn."""
    finite = [float(v) for v in row if math.isfinite(v)]
    if vanish_tol <= 0 or not finite:
        return False
    return max(finite) <= 0 or finite[-1] < vanish_tol * max(finite)


@pytest.mark.parametrize("vanish_tol", [1e-3, 0.5, 0.0])
def test_are_vanishing_equals_is_vanishing(vanish_tol):
    """Each row's answer equals ``is_vanishing``'s (which is the batch rule on one row) and
    the rule written out by hand, for every kind of row."""
    rng = np.random.default_rng(7)
    fn = rng.uniform(0.0, 2.0, (200, 12)) * np.geomspace(1.0, 1e-4, 12)[None, :] ** rng.uniform(
        0.0, 1.0, (200, 1))
    spots = rng.random(fn.shape) < 0.15
    fn[spots] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0], size=int(spots.sum()))
    fn[:10] = np.nan
    fn[10:20] = 0.0
    fn[20:25] = -1.0
    fn[25:27] = np.linspace(1.0, 1e-3, 12)  # last = 1e-3 x peak: not below it
    fn[27:29] = np.linspace(1.0, 0.5, 12)  # last = 0.5 x peak
    got = are_vanishing(fn, vanish_tol)
    expected = [_vanishing_written_out(row, vanish_tol) for row in fn]
    assert got.tolist() == expected
    assert [is_vanishing(row, vanish_tol) for row in fn] == expected
    if vanish_tol > 0:
        assert 0 < got.sum() < len(got)


def test_are_vanishing_refuses_bad_input():
    """A tolerance outside [0, 1) and a single series are refused; no records: none vanish."""
    with pytest.raises(InputError, match=r"vanish_tol must be a number in \[0, 1\)"):
        are_vanishing(np.ones((2, 3)), 1.0)
    with pytest.raises(InputError, match=r"\(R, T\) array"):
        are_vanishing(np.ones(3))
    assert are_vanishing(np.zeros((4, 0))).tolist() == [False] * 4
