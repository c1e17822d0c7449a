"""Onset detection on hand-worked series, and the theory's onset / lead-time predictions
against independent closed forms (mpmath) and against exact simulated runs.

Part 1 (``ncsim.onset``): every expected number is written as a literal and derived by hand
in a comment next to it (mostly crossings chosen so that the interpolation fraction is 1/2).

Part 2 (``ncsim.theory``): references are written here from theory.md (logistic mode, its
integral, energies of the onset model, Saxe escape integral) and evaluated with mpmath; the
simulator runs use inits on which the theory is exact (label-aligned modes, within-class
variability in the null space of W, whose flow theory.md 1.2 gives in closed form).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.onset import (
    crossing_index,
    crossing_time,
    lead_time,
    onset_table,
    onset_time,
    value_at,
)
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import dynamics, equilibrium, predicted_onset
from ncsim.theory import prediction as pred_mod

NAN = math.nan
INF = math.inf


# =============================================================================================
# Part 1: ncsim.onset on hand-worked series
# =============================================================================================

def test_log_log_interpolation_hand_worked():
    """Crossing interpolated linearly in (log t, log value) between the last record above and
    the first below."""
    # ln v: ln 0.04 -> ln 0.0025, a drop of ln 16; ln(0.01/0.04) = -ln 4 is half of it, so
    # frac = 1/2 and t = exp((ln 2 + ln 8)/2) = sqrt(16) = 4
    assert onset_time([2.0, 8.0], [0.04, 0.0025], 0.01) == pytest.approx(4.0, rel=1e-14)
    # over four decades of value, the threshold two decades down: frac 1/2, t = sqrt(1*100)
    assert onset_time([1.0, 100.0], [1.0, 1e-4], 0.01) == pytest.approx(10.0, rel=1e-14)
    # without interpolation: the time of the first record below
    assert onset_time([2.0, 8.0], [0.04, 0.0025], 0.01, interpolate=False) == 8.0


def test_interpolation_is_linear_in_time_from_a_record_at_zero():
    """Earlier record at t = 0: log time is impossible, so the time is linear."""
    # frac = 1/2 in log value as above; linear in time between 0 and 6: t = 3
    assert onset_time([0.0, 6.0], [0.04, 0.0025], 0.01) == pytest.approx(3.0, rel=1e-14)


def test_interpolation_to_an_exact_zero_is_linear_in_value():
    """A record at 0 (exactly collapsed features give nc1 = 0) has no log: the value is
    interpolated linearly, the time still in log time."""
    # (0.01 - 0.02) / (0 - 0.02) = 1/2, t = sqrt(1 * 100) = 10
    assert onset_time([1.0, 100.0], [0.02, 0.0], 0.01) == pytest.approx(10.0, rel=1e-14)


def test_stay_window_with_upward_recrossing():
    """A dip below the threshold that comes back up within the window is not an onset."""
    times = [1.0, 4.0, 9.0, 16.0, 25.0, 36.0]
    values = [0.1, 0.001, 0.02, 0.04, 0.0025, 0.001]
    # stay 1: first below at t = 4; from (1, 0.1) to (4, 0.001) the threshold 0.01 is half way
    # in log value: t = sqrt(1 * 4) = 2
    assert onset_time(times, values, 0.01, stay=1) == pytest.approx(2.0, rel=1e-14)
    # stay 2: t = 4 is followed by 0.02 (above); the first two records below in a row are
    # t = 25, 36; from (16, 0.04) to (25, 0.0025) frac = ln 4 / ln 16 = 1/2: t = sqrt(400) = 20
    assert onset_time(times, values, 0.01, stay=2) == pytest.approx(20.0, rel=1e-14)
    assert onset_time(times, values, 0.01, stay=2, interpolate=False) == 25.0
    # stay 3: only two records below at the end
    assert math.isnan(onset_time(times, values, 0.01, stay=3))
    assert crossing_index(np.array(values), 0.01, 2) == 4
    assert crossing_index(np.array(values), 0.01, 3) is None


def test_nan_gaps_are_skipped_by_the_interpolation_and_the_stay_window():
    """NaN is a gap (e.g. metrics not logged before 99% accuracy): the neighbours of a gap are
    consecutive records."""
    # from (1, 0.1) to (8, 0.001) across the gap: frac 1/2, t = sqrt(8)
    got = onset_time([1.0, 2.0, 4.0, 8.0], [0.1, NAN, NAN, 0.001], 0.01)
    assert got == pytest.approx(2.8284271247461903, rel=1e-14)
    # stay 2 over a gap: 0.005 at t = 2 and 0.004 at t = 4 are consecutive finite records
    got = onset_time([1.0, 2.0, 3.0, 4.0], [0.5, 0.005, NAN, 0.004], 0.01, stay=2,
                     interpolate=False)
    assert got == 2.0


def test_infinite_metric_is_a_record_above_the_threshold_not_a_gap():
    """nc1 = +inf (no between-class spread, metrics.py) is a measured value above every
    threshold: the onset cannot come before that record, and it breaks a stay window."""
    # the metric is above the threshold at t = 2, so the crossing lies in (2, 3]; from +inf
    # the log-value interpolation puts it at the later record: t = 3 (skipping the inf record
    # as a gap would interpolate from (1, 0.02) and give sqrt(3) < 2)
    assert onset_time([1.0, 2.0, 3.0], [0.02, INF, 0.005], 0.01) == 3.0
    # stay 2: 0.005 (t = 1) is followed by inf (t = 2), so the first two in a row are t = 3, 4
    got = onset_time([1.0, 2.0, 3.0, 4.0], [0.005, INF, 0.004, 0.003], 0.01, stay=2,
                     interpolate=False)
    assert got == 3.0


def test_crossing_at_the_first_record_single_record_and_empty_series():
    # below at the first record: its time, with or without interpolation
    assert onset_time([5.0, 6.0], [0.001, 0.0005], 0.01) == 5.0
    assert onset_time([5.0], [0.001], 0.01) == 5.0
    assert onset_time([5.0], [0.001], 0.01, interpolate=False) == 5.0
    # a single record above, an empty series, a series that is all gaps: never
    assert math.isnan(onset_time([5.0], [0.5], 0.01))
    assert math.isnan(onset_time([], [], 0.01))
    assert math.isnan(onset_time([1.0, 2.0], [NAN, NAN], 0.01))
    # never below: equal to the threshold is not below
    assert math.isnan(onset_time([1.0, 2.0, 3.0], [0.5, 0.01, 0.02], 0.01))


def test_equal_times_are_accepted():
    """Two records at one time (an intervention: phase 1 ends and phase 2 starts at t1) are a
    jump; the crossing over a jump is at that time."""
    times = [1.0, 2.0, 2.0, 4.0]
    values = [0.5, 0.04, 0.0025, 0.001]
    assert onset_time(times, values, 0.01) == 2.0
    # fn at t = 2: the first of the two records (searchsorted left, no interpolation needed)
    assert value_at(times, [1.0, 2.0, 6.0, 5.0], 2.0) == 2.0


@pytest.mark.parametrize(("times", "values"), [
    ([1.0, 3.0, 2.0], [0.5, 0.02, 0.001]),
    # a record without a finite time is dropped, but t = 1 then t = 0.5 stays out of order
    ([1.0, math.nan, 0.5, 2.0], [0.5, 0.2, 0.001, 0.0005]),
])
@pytest.mark.parametrize("func", ["onset_time", "value_at", "crossing_time"])
def test_unsorted_times_are_refused(func, times, values):
    """Out-of-order records would give a crossing between unrelated records, whether or not a
    record without time sits between them."""
    call = {
        "onset_time": lambda: onset_time(times, values, 0.01),
        "value_at": lambda: value_at(times, values, 0.7),
        "crossing_time": lambda: crossing_time(times, values, 0.01),
    }[func]
    with pytest.raises(InputError, match="sort the records by time"):
        call()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stay": 0}, "stay must be an integer >= 1"),
    ({"stay": -2}, "stay must be an integer >= 1"),
    ({"stay": 1.5}, "stay must be an integer >= 1"),
    ({"threshold": NAN}, "threshold must be a finite number"),
    ({"threshold": INF}, "threshold must be a finite number"),
])
def test_bad_onset_options_are_refused(kwargs, message):
    """A NaN threshold would report every run as never collapsed; stay 0 would silently act as
    stay 1."""
    args = {"threshold": 0.01, "stay": 1, **kwargs}
    with pytest.raises(InputError, match=message):
        onset_time([1.0, 2.0], [0.5, 0.001], **args)
    with pytest.raises(InputError, match=message):
        onset_time([], [], **args)  # refused whatever the series


def test_mismatched_shapes_are_refused():
    with pytest.raises(InputError, match="1-D of equal length"):
        onset_time(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(InputError, match="1-D of equal length"):
        value_at([1.0, 2.0], [1.0], 1.5)


def test_value_at_hand_worked():
    """fn at a time: linear in (log time, log value), as a crossing; linear in time from a
    record at t = 0, linear in value from a value <= 0."""
    # log-time fraction of 10 in [1, 100] is 1/2: the geometric mean sqrt(3 * 5)
    assert value_at([1.0, 100.0], [3.0, 5.0], 10.0) == pytest.approx(math.sqrt(15.0),
                                                                       rel=1e-14)
    # from t = 0: linear time fraction 1/4, still geometric in the value: 3 (5/3)^(1/4)
    assert value_at([0.0, 4.0], [3.0, 5.0], 1.0) == pytest.approx(3.0 * (5.0 / 3.0) ** 0.25,
                                                                   rel=1e-14)
    # a value of 0 (exact collapse): linear in value, 0 + (2 - 0)/2 = 1
    assert value_at([1.0, 100.0], [0.0, 2.0], 10.0) == pytest.approx(1.0, rel=1e-14)
    assert value_at([1.0, 100.0], [-1.0, 3.0], 10.0) == pytest.approx(1.0, rel=1e-14)
    # no interpolation: the record at or after the time
    assert value_at([1.0, 100.0], [3.0, 5.0], 10.0, interpolate=False) == 5.0
    assert value_at([1.0, 100.0], [3.0, 5.0], 1.0, interpolate=False) == 3.0
    # outside the records: the nearest end; a NaN time: NaN
    assert value_at([1.0, 100.0], [3.0, 5.0], 0.5) == 3.0
    assert value_at([1.0, 100.0], [3.0, 5.0], 200.0) == 5.0
    assert math.isnan(value_at([1.0, 100.0], [3.0, 5.0], NAN))
    assert math.isnan(value_at([], [], 1.0))
    # a gap at the requested time: interpolated between the finite neighbours (as the first
    # case: sqrt(15))
    assert value_at([1.0, 10.0, 100.0], [3.0, NAN, 5.0], 10.0) == pytest.approx(math.sqrt(15.0),
                                                                                 rel=1e-14)


def test_crossing_time_hand_worked():
    """First time fn crosses a level, in (log t, log fn)."""
    # falling 8 -> 2: ln(4/8) / ln(2/8) = 1/2, t = sqrt(1 * 16) = 4; "auto" picks "below"
    assert crossing_time([1.0, 16.0], [8.0, 2.0], 4.0) == pytest.approx(4.0, rel=1e-14)
    assert crossing_time([1.0, 16.0], [8.0, 2.0], 4.0, "below") == pytest.approx(4.0, rel=1e-14)
    # rising 2 -> 8: same fraction; "auto" picks "above"
    assert crossing_time([1.0, 16.0], [2.0, 8.0], 4.0) == pytest.approx(4.0, rel=1e-14)
    # "below" on a series that starts below the level: the first record
    assert crossing_time([1.0, 16.0], [2.0, 8.0], 4.0, "below") == 1.0
    # "above" on a falling series that never comes back up: never
    assert math.isnan(crossing_time([1.0, 16.0], [8.0, 2.0], 9.0, "above"))
    assert crossing_time([1.0, 16.0], [8.0, 2.0], 4.0, interpolate=False) == 16.0
    # a NaN level: never (the lead time is then unknown, not an error)
    assert math.isnan(crossing_time([1.0, 16.0], [8.0, 2.0], NAN))


def test_crossing_time_refuses_a_bad_direction_even_on_an_empty_series():
    with pytest.raises(InputError, match="allowed: below, above, auto"):
        crossing_time([], [], 1.0, direction="down")
    with pytest.raises(InputError, match="allowed: below, above, auto"):
        crossing_time([1.0], [2.0], 1.0, direction="down")


def test_lead_time_hand_worked():
    """Lead = onset time - first time fn crosses the level (4 in both series below)."""
    falling = ([1.0, 16.0], [8.0, 2.0])
    assert lead_time(*falling, onset=10.0, level=4.0) == pytest.approx(6.0, rel=1e-14)
    # onset before the fn crossing: negative lead
    assert lead_time(*falling, onset=3.0, level=4.0) == pytest.approx(-1.0, rel=1e-14)
    # the direction is passed on: "above" on a series that starts above the level crosses at
    # its first record (t = 1): lead 10 - 1 = 9
    assert lead_time(*falling, onset=10.0, level=4.0, direction="above") == 9.0
    assert math.isnan(lead_time(*falling, onset=NAN, level=4.0))
    assert math.isnan(lead_time(*falling, onset=10.0, level=1.0))  # fn never reaches 1


def test_lead_time_between_two_metric_series():
    """End to end on one table: onset of nc1 and the fn crossing, both hand-worked."""
    t = np.array([2.0, 8.0, 32.0])
    nc1 = np.array([0.5, 0.04, 0.0025])
    fn = np.array([8.0, 2.0, 1.0])
    onset = onset_time(t, nc1, 0.01)
    # nc1: between (8, 0.04) and (32, 0.0025): frac 1/2, t = sqrt(8 * 32) = 16
    assert onset == pytest.approx(16.0, rel=1e-14)
    # fn: 8 -> 2 over [2, 8], level 4: frac 1/2, t = sqrt(16) = 4; lead 16 - 4 = 12
    assert lead_time(t, fn, onset, 4.0) == pytest.approx(12.0, rel=1e-14)
    # fn at onset (16 is half way from 8 to 32 in log time): sqrt(2 * 1)
    assert value_at(t, fn, onset) == pytest.approx(math.sqrt(2.0), rel=1e-14)


def test_onset_table_metric_stay_columns_and_row_order():
    """onset_table with a chosen metric, stay window and column names, rows shuffled."""
    frame = pd.DataFrame({
        "run": ["a", "a", "a", "b", "b", "b", "b"],
        "epoch": [2.0, 8.0, 1.0, 1.0, 2.0, 3.0, 4.0],
        "nc1": [0.04, 0.0025, 0.5, 0.5, 0.005, 0.02, 0.004],
        "nc1_trace": [1.0] * 7,  # never below: would give NaN if it were used
        "feat": [3.0, 5.0, 9.0, 7.0, 6.0, 5.0, 4.0],
    }).sample(frac=1.0, random_state=3)
    table = onset_table(frame, metric="nc1", threshold=0.01, fn_column="feat",
                        time_column="epoch", group="run")
    # a: sorted (1, 0.5), (2, 0.04), (8, 0.0025): crossing from (2, 0.04) to (8, 0.0025) at
    # t = 4 (frac 1/2); fn at 4, half way from 2 to 8 in log time: sqrt(3 * 5)
    assert table.loc["a", "onset_time"] == pytest.approx(4.0, rel=1e-14)
    assert table.loc["a", "fn_at_onset"] == pytest.approx(math.sqrt(15.0), rel=1e-14)
    # b, no interpolation: first record below at t = 2, fn there 6
    table = onset_table(frame, metric="nc1", interpolate=False, fn_column="feat",
                        time_column="epoch", group="run")
    assert (table.loc["b", "onset_time"], table.loc["b", "fn_at_onset"]) == (2.0, 6.0)
    # b with stay 2: 0.005 is followed by 0.02, so no two records below in a row: never
    table = onset_table(frame, metric="nc1", stay=2, fn_column="feat", time_column="epoch",
                        group="run")
    assert math.isnan(table.loc["b", "onset_time"])
    assert math.isnan(table.loc["b", "fn_at_onset"])
    # a with stay 2: its only record below is the last one: never
    assert math.isnan(table.loc["a", "onset_time"])


# =============================================================================================
# Part 2: theory predictions
# =============================================================================================

@pytest.fixture(autouse=True)
def _mpmath_precision():
    """30 digits for the mpmath references, restored after each test."""
    with mp.workdps(30):
        yield


def _first_root(f, lo: float, hi: float, points: int = 600) -> float:
    """First sign change of f on a geometric grid of [lo, hi], refined by mpmath (anderson on
    the bracketing interval); inf when f keeps its sign."""
    grid = [mp.mpf(lo) * (mp.mpf(hi) / lo) ** (mp.mpf(i) / (points - 1)) for i in range(points)]
    vals = [f(t) for t in grid]
    for i in range(points - 1):
        if mp.sign(vals[i]) != mp.sign(vals[i + 1]):
            return float(mp.findroot(f, (grid[i], grid[i + 1]), solver="anderson"))
    return INF


def _logistic(t, z0, zinf, r):
    """theory.md 1.2: z(t) = z_inf / (1 + (z_inf/z0 - 1) e^(-2 r t))."""
    return zinf / (1 + (zinf / z0 - 1) * mp.exp(-2 * r * t))


def _logistic_integral(t, z0, zinf, r):
    """int_0^t z: z_inf t + z_inf/(2r) ln((1 + c e^(-2rt)) / (1 + c)), c = z_inf/z0 - 1 (its
    derivative is z_inf - z_inf c e^(-2rt) / (1 + c e^(-2rt)) = z)."""
    c = zinf / z0 - 1
    return zinf * t + zinf / (2 * r) * mp.log((1 + c * mp.exp(-2 * r * t)) / (1 + c))


def _onset_model_reference(bias: str, K: int, n: int, d: int, lam: float, a: float,
                           threshold: float) -> tuple[float, float, float, float]:
    """(onset, fn crossing, lead, delta) of the onset model of ncsim.theory.prediction (its
    module docstring) for MSE with lambda_W = lambda_H = lam, in closed form.

    The mode Jacobian [[-lam, g], [g, -lam]], g = 1/(K sqrt n), has e_+ = (1, 1)/sqrt 2 (rate
    g - lam) and e_- = (1, -1)/sqrt 2 (rate -lam - g, e_-,h^2 = 1/2). The growing part starts
    at w0 = h0 = sqrt(d) a / sqrt 2 and stays balanced (the mode ODE is symmetric), so
    h^2 = w h = z(t) is the logistic of theory.md 1.2 with z0 = d a^2 / 2, r = g - lam,
    z_inf = sqrt(n)(1 - K sqrt(n) lam), and int w^2 / N = int z / N in closed form.
    fn* = sqrt(alpha / sqrt n) (no bias) or sqrt((K-1)/K alpha / sqrt n) (free bias),
    alpha = 1 - K sqrt(n) lam (theory.md 1.1).
    """
    K_, n_, d_, lam_, a_ = (mp.mpf(x) for x in (K, n, d, lam, a))
    N = K_ * n_
    g = 1 / (K_ * mp.sqrt(n_))
    z0, r = d_ * a_ ** 2 / 2, g - lam_
    zinf = mp.sqrt(n_) * (1 - K_ * mp.sqrt(n_) * lam_)
    r_w = K_ if bias == "none" else K_ - 1
    e0 = a_ ** 2 * d_ * (N - K_)

    def energies(t):
        z = _logistic(t, z0, zinf, r)
        between = (K_ - 1) * (z + d_ * a_ ** 2 / 2 * mp.exp(-2 * (lam_ + g) * t))
        integ = _logistic_integral(t, z0, zinf, r) / N
        within = e0 * mp.exp(-2 * lam_ * t) * ((d_ - r_w) / d_ + r_w / d_ * mp.exp(-2 * integ))
        mean = z if bias == "none" else d_ * a_ ** 2 * mp.exp(-2 * lam_ * t)
        return between, within, mean

    def fn(t):
        b, w, m = energies(t)
        return mp.sqrt((b + w + m) / N)

    alpha = 1 - K_ * mp.sqrt(n_) * lam_
    h2 = alpha / mp.sqrt(n_) * (1 if bias == "none" else (K_ - 1) / K_)
    fn_star = mp.sqrt(h2)
    delta = -0.05 if fn(0) <= fn_star else 0.05
    onset = _first_root(lambda t: energies(t)[1] / energies(t)[0] - threshold, 1e-3, 4000)
    cross = _first_root(lambda t: fn(t) - (1 + delta) * fn_star, 1e-3, 4000)
    return onset, cross, onset - cross, delta


@pytest.mark.parametrize(("bias", "a"), [("none", 1e-3), ("free", 0.1), ("free", 1.0)])
def test_predicted_onset_equals_closed_form_for_equal_decays(bias, a):
    """MSE, lambda_W = lambda_H: the prediction's ODE + brentq against the closed-form
    logistic energies (mpmath root); small init (negative lead, fn from below), init near fn*
    (positive lead) and a large init (fn from above, delta = +0.05)."""
    K, n, d, lam, thr = 4, 5, 20, 0.01, 0.01
    onset, cross, lead, delta = _onset_model_reference(bias, K, n, d, lam, a, thr)
    pred = predicted_onset("mse", bias, K, n, d, lam, lam, a, thr)
    assert pred.regime == "ok"
    assert pred.delta == delta
    assert pred.onset_time == pytest.approx(onset, rel=1e-8)
    assert pred.fn_cross_time == pytest.approx(cross, rel=1e-8)
    assert pred.lead_time == pytest.approx(lead, rel=1e-7, abs=1e-8 * max(onset, cross))
    expected_sign = {1e-3: -1, 0.1: 1, 1.0: 1}[a]
    assert np.sign(pred.lead_time) == expected_sign


def _onset_model_ode_reference(loss: str, bias: str, K: int, n: int, d: int, lw: float,
                               lh: float, a: float, threshold: float
                               ) -> tuple[float, float, float]:
    """(onset, fn crossing, delta) of the onset model (prediction's module docstring) for any
    decays, written here: eigenvectors of [[-lW, g], [g, -lH]] in closed form (e_ = (g, mu +
    lW) normalised), the mode ODE (MSE: theory.md 1.2; CE: drive 1/(sqrt(n)(e^m + K - 1)),
    m = w h / sqrt n, kappa = (1 - sum_i p_i^2)/(K - 1), the trace of the softmax Hessian over
    the K - 1 centred directions), DOP853 at rtol 1e-12, brentq on the first sign change."""
    from scipy.optimize import brentq

    N, s = K * n, math.sqrt(n)
    g = 1.0 / (K * s)
    root = math.sqrt(((lw - lh) / 2) ** 2 + g * g)
    mu_p, mu_m = -(lw + lh) / 2 + root, -(lw + lh) / 2 - root
    e_p = np.array([g, mu_p + lw]) / math.hypot(g, mu_p + lw)
    e_mh2 = (mu_m + lw) ** 2 / (g * g + (mu_m + lw) ** 2)

    def rhs(t, y):
        w, h, _ = y
        if loss == "mse":
            drive, kappa = (s - w * h) / N, 1.0
        else:
            m = w * h / s
            drive = 1.0 / (s * (math.exp(m) + K - 1))
            p = 1.0 / (1.0 + (K - 1) * math.exp(-m))
            q = (1.0 - p) / (K - 1)
            kappa = (1.0 - p * p - (K - 1) * q * q) / (K - 1)
        return [drive * h - lw * w, drive * w - lh * h, kappa * w * w / N]

    r_w = min(K if (loss == "mse" and bias == "none") else K - 1, d)

    def curves(t, y):
        h, integ = y[1], y[2]
        between = (K - 1) * (h * h + d * a * a * e_mh2 * np.exp(2 * mu_m * t))
        within = (a * a * d * (N - K) * np.exp(-2 * lh * t)
                  * ((d - r_w) / d + r_w / d * np.exp(-2 * integ)))
        mean = h * h if (loss == "mse" and bias == "none") else d * a * a * np.exp(-2 * lh * t)
        return within / between, np.sqrt((between + within + mean) / N)

    t_max = float(np.clip(40.0 / min(lw, lh, mu_p), 1e3, 1e8))
    sol = solve_ivp(rhs, (0.0, t_max), [*(math.sqrt(d) * a * e_p), 0.0], method="DOP853",
                    rtol=1e-12, atol=1e-15, dense_output=True)
    assert sol.success
    grid = np.concatenate([[0.0], np.geomspace(1e-3, t_max, 20000)])
    nc1, fn = curves(grid, sol.sol(grid))
    fn_star = float(equilibrium(loss, bias, K, n, lw, lh).fn_star)
    delta = -0.05 if fn[0] <= fn_star else 0.05

    def first(values, level, which, falling):
        """The first crossing of ``level`` in the given direction (a pass the other way, as
        a fn starting beyond the level, does not count)."""
        above = values - level
        if falling:
            change = np.flatnonzero((above[:-1] > 0) & (above[1:] <= 0))
        else:
            change = np.flatnonzero((above[:-1] < 0) & (above[1:] >= 0))
        assert change.size, "the reference never crosses"
        i = int(change[0])
        return brentq(lambda t: curves(t, sol.sol(t))[which] - level, grid[i], grid[i + 1],
                      xtol=1e-13, rtol=1e-13)

    # NC1 falls through the threshold; fn rises through (1 - 0.05) fn* or falls through
    # (1 + 0.05) fn*
    return (first(nc1, threshold, 0, falling=True),
            first(fn, (1 + delta) * fn_star, 1, falling=delta > 0), delta)


@pytest.mark.parametrize(("loss", "bias", "lw", "lh", "a"), [
    ("ce", "none", 0.005, 0.02, 0.05),
    ("mse", "free", 0.03, 0.005, 0.2),
])
def test_predicted_onset_equals_an_independent_solve_for_unequal_decays(loss, bias, lw, lh, a):
    """Unequal decays (e_+ and e_- not (1, +-1)/sqrt 2, no closed form) and CE: the
    prediction against the onset model solved independently here."""
    K, n, d, thr = 4, 5, 20, 0.01
    onset, cross, delta = _onset_model_ode_reference(loss, bias, K, n, d, lw, lh, a, thr)
    pred = predicted_onset(loss, bias, K, n, d, lw, lh, a, thr)
    assert pred.regime == "ok"
    assert pred.delta == delta
    assert pred.onset_time == pytest.approx(onset, rel=1e-7)
    assert pred.fn_cross_time == pytest.approx(cross, rel=1e-7)
    assert pred.lead_time == pytest.approx(onset - cross, abs=1e-7 * max(onset, cross))


def test_prediction_mode_ode_is_the_theory_md_mode_ode():
    """The prediction's right-hand side against the mode ODEs written from theory.md 1.2
    (MSE) and from the CE loss on the ETF ray, and its within-class rate (kappa = mean
    eigenvalue of the softmax Hessian on the centred logits, computed here with numpy)."""
    K, n, lw, lh = 4, 5, 0.01, 0.03
    s, N = math.sqrt(n), K * n
    rng = np.random.default_rng(0)
    for w, h in rng.uniform(-2.0, 3.0, size=(5, 2)):
        dw, dh, dint = pred_mod._mode_rhs("mse", K, n, lw, lh)(0.0, np.array([w, h, 0.0]))
        assert (dw, dh, dint) == pytest.approx(
            [(s - w * h) * h / N - lw * w, (s - w * h) * w / N - lh * h, w * w / N], rel=1e-13)
        # CE: every sample's logits are (w h / sqrt n)(e_k - 1/K); per mode dL/dsigma =
        # -1/(sqrt(n)(e^m + K - 1)) with m = w h / sqrt(n)
        m = w * h / s
        drive = 1.0 / (s * (math.exp(m) + K - 1))
        z = m * (np.eye(K)[0] - 1.0 / K)
        p = np.exp(z) / np.exp(z).sum()
        hess = np.diag(p) - np.outer(p, p)
        basis = np.linalg.qr(np.eye(K) - 1.0 / K)[0][:, : K - 1]  # centred space
        kappa = np.trace(basis.T @ hess @ basis) / (K - 1)
        dw, dh, dint = pred_mod._mode_rhs("ce", K, n, lw, lh)(0.0, np.array([w, h, 0.0]))
        assert (dw, dh, dint) == pytest.approx(
            [drive * h - lw * w, drive * w - lh * h, kappa * w * w / N], rel=1e-12)


def test_predicted_onset_is_zero_when_nc1_starts_below_the_threshold():
    """The model's nc1_trace at t = 0 is (N - K)/(K - 1) (energies a^2 d (N - K) over
    (K - 1) d a^2 (e_+,h^2 + e_-,h^2)); a threshold above it, or n = 1 (no within-class
    variability, nc1_trace = 0 for all t), is an onset at t = 0, as onset_time gives for a
    series below the threshold at its first record."""
    # K = 4, n = 2: nc1(0) = 4/3 < 2
    pred = predicted_onset("mse", "none", 4, 2, 20, 0.01, 0.01, 1e-3, threshold=2.0)
    assert pred.onset_time == 0.0
    assert pred.regime == "ok"
    pred = predicted_onset("ce", "free", 4, 1, 20, 0.01, 0.01, 1e-3)
    assert pred.onset_time == 0.0
    assert pred.lead_time == pytest.approx(-pred.fn_cross_time, rel=1e-15)
    # just below the initial value the onset is after t = 0
    pred = predicted_onset("mse", "none", 4, 2, 20, 0.01, 0.01, 1e-3, threshold=1.3)
    assert 0.0 < pred.onset_time < 10.0


def test_predicted_lead_is_nan_when_fn_never_crosses_its_level():
    """K = 4, n = 5, d = 20, lambda = 0.01, init 0.14: fn starts within 5% below fn* and
    never falls to 0.95 fn*, so there is no crossing: the lead is undefined (NaN, as
    lead_time gives on a simulated series without a crossing), not onset - inf = -inf."""
    pred = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 0.14)
    assert math.isfinite(pred.onset_time) and pred.onset_time > 0
    assert pred.fn_cross_time == math.inf
    assert math.isnan(pred.lead_time)
    # a crossing that does happen gives lead = onset - crossing
    pred = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 1e-3)
    assert math.isfinite(pred.fn_cross_time)
    assert pred.lead_time == pred.onset_time - pred.fn_cross_time


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": NAN}, "threshold must be a finite number > 0"),
    ({"threshold": 0.0}, "threshold must be a finite number > 0"),
    ({"threshold": -1.0}, "threshold must be a finite number > 0"),
    ({"init_scale": 0.0}, "init_scale must be a finite number > 0"),
    ({"init_scale": -0.1}, "init_scale must be a finite number > 0"),
    ({"init_scale": NAN}, "init_scale must be a finite number > 0"),
])
def test_predicted_onset_refuses_bad_arguments(kwargs, message):
    """A negative init std gave the prediction of its absolute value, NaN ones an ODE-solver
    error, a zero threshold 'no_onset'."""
    args = {"loss": "mse", "bias": "none", "K": 4, "n": 5, "d": 20, "lambda_w": 0.01,
            "lambda_h": 0.01, "init_scale": 0.01, "threshold": 0.01, **kwargs}
    with pytest.raises(InputError, match=message):
        predicted_onset(**args)


def test_growth_rate_changes_sign_at_the_collapse_threshold():
    """theory.md 1.2: the origin is unstable iff K sqrt(n lambda_W lambda_H) < 1; mu is the
    largest eigenvalue of the mode Jacobian [[-lW, g], [g, -lH]], g = 1/(K sqrt n)."""
    K, n, lw = 4, 5, 0.02
    lh_c = 1.0 / (K * K * n * lw)  # K sqrt(n lw lh_c) = 1
    for factor in (0.5, 1.0, 2.0):
        lh = lh_c * factor
        g = 1.0 / (K * math.sqrt(n))
        ref = float(max(mp.eig(mp.matrix([[-lw, g], [g, -lh]]))[0], key=lambda e: e.real).real)
        mu = float(dynamics.growth_rate(K, n, lw, lh))
        assert mu == pytest.approx(ref, rel=1e-12, abs=1e-15)
        assert np.sign(round(mu, 14)) == {0.5: 1, 1.0: 0, 2.0: -1}[factor]


def test_escape_time_against_theory_md_numbers_and_mpmath():
    """theory.md 4.2 (K = 4, n = 5, lambda = 0, u0 = 1e-4 end to end, u_f = s/2): exact
    escape 186.9 / 445.6 / 1038.2 and asymptotic 192.7 / 447.2 / 1037.9 for M = 3 / 4 / 6.
    The exact value is also (N/M) int du / (u^(2-2/M)(s - u)) evaluated with mpmath; with
    weight decay, int da / (da/dt), da/dt = (s - a^M) a^(M-1)/N - lambda a."""
    K, n = 4, 5
    N, s = K * n, math.sqrt(n)
    exact_md = {3: 186.9, 4: 445.6, 6: 1038.2}
    asym_md = {3: 192.7, 4: 447.2, 6: 1037.9}
    for M in (3, 4, 6):
        a0, a_end = 1e-4 ** (1.0 / M), (s / 2) ** (1.0 / M)
        got = dynamics.escape_time(K, n, a0, a_end, M - 1)
        ref = N / M * mp.quad(lambda u, M=M: 1 / (u ** (2 - mp.mpf(2) / M) * (s - u)),
                              [mp.mpf("1e-4"), mp.mpf(s) / 2])
        assert got == pytest.approx(float(ref), rel=1e-8)
        assert got == pytest.approx(exact_md[M], abs=0.05)
        asym = float(dynamics.escape_time_asymptotic(K, n, a0, M - 1))
        assert asym == pytest.approx(asym_md[M], abs=0.05)
    # with weight decay (above the basin root: da/dt > 0 on the way)
    lam, M = 0.005, 3
    a0, a_end = 0.3, 1.0
    ref = mp.quad(lambda a: 1 / ((s - a ** M) * a ** (M - 1) / N - lam * a), [a0, a_end])
    assert dynamics.escape_time(K, n, a0, a_end, M - 1, lam) == pytest.approx(float(ref),
                                                                               rel=1e-8)


# ---------------------------------------------------------------------------------------------
# simulator runs on which the theory is exact

K_X, N_X, D_X = 3, 2, 5           # K classes, n per class, d >= K + 1 (a null direction of W)
T_END_X = 400.0
SOLVER_X = SolverSpec(t_end=T_END_X, rtol=1e-11, atol=1e-14, gtol=0, records=1200)


def _aligned_arrays(loss: str, w0: float, h0: float, eps_null: float, eps_range: float
                    ) -> dict:
    """Label-aligned W (K x d) and H (d x N) with mode amplitudes (w0, h0), plus within-class
    deviations +-eps_null along e_{r} (a null direction of W) and +-eps_range along e_0 (in
    the row space of W) for every class.

    Modes: MSE without bias, the K uncentred ones (u_c = e_c, v_c = class indicator / sqrt n);
    CE, the K - 1 centred ones (u = Q, the centred orthonormal basis, v = indicators Q / sqrt n).
    Here r = number of modes, U0 = [e_0 .. e_(r-1)] in feature space.
    """
    K, n, d = K_X, N_X, D_X
    N = K * n
    ind = np.kron(np.eye(K), np.ones((n, 1)))  # (N, K) class indicators
    u = np.eye(K) if loss == "mse" else np.linalg.qr(np.eye(K) - 1.0 / K)[0][:, : K - 1]
    r = u.shape[1]
    v = ind @ u / math.sqrt(n)  # (N, r) orthonormal
    U0 = np.eye(d)[:, :r]
    H = h0 * U0 @ v.T
    W = w0 * u @ U0.T
    sign = np.tile([1.0, -1.0], N // 2)  # +- within each class (n = 2): zero class means
    H[r, :] += eps_null * sign
    H[0, :] += eps_range * sign
    assert np.allclose(H @ ind, (h0 * U0 @ v.T) @ ind)  # class means untouched
    return {"H": H, "W": [W]}


# (loss, lambda_W, lambda_H, w0, h0, eps_null, eps_range)
EXACT_RUNS = [
    ("mse", 0.02, 0.02, 0.1, 0.1, 0.05, 0.0),     # 0: onset / fn* / lead in closed form
    ("mse", 0.02, 0.02, 1e-3, 1e-3, 1e-3, 0.0),   # 1: early and late nc1 rates
    ("mse", 0.01, 0.03, 0.2, 0.05, 0.0, 1e-5),    # 2: unequal decays, within in range(W)
    ("ce", 0.01, 0.02, 0.4, 0.2, 0.03, 0.0),      # 3: CE mode ODE
]


@pytest.fixture(scope="module")
def exact_runs():
    specs = []
    for loss, lw, lh, w0, h0, e_null, e_range in EXACT_RUNS:
        model = ModelSpec(loss=loss, bias="none", classes=K_X, per_class=N_X, dim=D_X)
        init = InitSpec(kind="arrays", arrays=_aligned_arrays(loss, w0, h0, e_null, e_range))
        specs.append(RunSpec(model=model, reg=Regularization(lw, lh), init=init,
                             solver=SOLVER_X))
    res = simulate(specs)
    out = []
    for _, row in res.runs.iterrows():
        part = res.trajectories[res.trajectories["run_id"] == row["run_id"]]
        assert row["status"] == "ok"
        out.append((row, part))
    return out


def _mode_amplitudes(loss: str, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) from the records: |W|_F = sqrt(r) w; |mu_c - mu_G| = h sqrt((K-1)/(K n)) for
    every class (both the uncentred and the centred mode sets)."""
    r = K_X if loss == "mse" else K_X - 1
    w = part["w_norm"].to_numpy() / math.sqrt(r)
    h = part["class_mean_norm"].to_numpy() / math.sqrt((K_X - 1) / (K_X * N_X))
    return w, h


def test_simulated_onset_fn_star_and_lead_equal_the_closed_form(exact_runs):
    """MSE, aligned balanced init z0 = 0.01, within-class +-eps in null(W): theory.md 1.2
    gives z(t) logistic, the within part decays as e^(-lambda t) exactly, so
    nc1_trace = eps^2 e^(-2 lam t) n K / ((K-1) z(t)), fn = sqrt(z/n + eps^2 e^(-2 lam t)).
    Onset and the fn crossing of 0.95 fn* (fn* = sqrt(z_inf / n), theory.md 1.1) are solved
    with mpmath; the simulated onset, fn at onset and lead time must agree."""
    row, part = exact_runs[0]
    lam, eps, thr = 0.02, 0.05, 0.01
    K, n = K_X, N_X
    s = mp.sqrt(n)
    z0, r, zinf = mp.mpf("0.01"), 1 / (K * s) - lam, s * (1 - K * s * lam)

    def nc1(t):
        return eps ** 2 * mp.exp(-2 * lam * t) * n * K / ((K - 1) * _logistic(t, z0, zinf, r))

    def fn(t):
        return mp.sqrt(_logistic(t, z0, zinf, r) / n + eps ** 2 * mp.exp(-2 * lam * t))

    fn_star = float(mp.sqrt(zinf / n))
    assert float(equilibrium("mse", "none", K, n, lam, lam).fn_star) == pytest.approx(
        fn_star, rel=1e-12)
    t = part["time"].to_numpy()
    ref_nc1 = np.array([float(nc1(x)) for x in t])
    ref_fn = np.array([float(fn(x)) for x in t])
    np.testing.assert_allclose(part["nc1_trace"].to_numpy(), ref_nc1, rtol=1e-8)
    np.testing.assert_allclose(part["fn"].to_numpy(), ref_fn, rtol=1e-8)
    # the onset machinery on the simulated records = on the exact values at the same times
    assert row["onset_time"] == pytest.approx(onset_time(t, ref_nc1, thr), rel=1e-8)
    # exact onset (mpmath root): the log-log interpolation between records (spacing
    # d ln t = 0.0085) is second order, well inside 1e-5
    onset = _first_root(lambda x: nc1(x) - thr, 1e-2, T_END_X)
    cross = _first_root(lambda x: fn(x) - 0.95 * fn_star, 1e-2, T_END_X)
    assert 1.0 < onset < 100.0 and 1.0 < cross < 100.0
    assert row["onset_time"] == pytest.approx(onset, rel=1e-5)
    assert row["fn_at_onset"] == pytest.approx(float(fn(onset)), rel=1e-5)
    assert row["fn_star_theory"] == pytest.approx(fn_star, rel=1e-12)
    # lead time: on the records it equals the lead of the exact values at the same times;
    # against the exact crossing times, the interpolation error of the two crossings
    lead = lead_time(t, part["fn"].to_numpy(), row["onset_time"], 0.95 * fn_star)
    lead_records = lead_time(t, ref_fn, onset_time(t, ref_nc1, thr), 0.95 * fn_star)
    assert lead == pytest.approx(lead_records, rel=1e-7)
    assert crossing_time(t, part["fn"].to_numpy(), 0.95 * fn_star) == pytest.approx(cross,
                                                                                    rel=1e-4)
    assert lead == pytest.approx(onset - cross, abs=1e-4 * cross)
    assert lead < 0  # nc1 reaches 0.01 while fn is still growing towards fn*


def test_simulated_nc1_rates_and_logistic_half_time(exact_runs):
    """dynamics.nc1_rates: early d ln(nc1)/dt = -2(lambda_H + mu) while z << z_inf (here
    z/z_inf < 1e-5 for t < 2), late -2 lambda_H once z = z_inf (t >= 300, e^(-2rt) < 1e-50);
    dynamics.logistic and logistic_half_time against the simulated z = h^2 (w = h)."""
    row, part = exact_runs[1]
    lam, K, n = 0.02, K_X, N_X
    t = part["time"].to_numpy()
    log_nc1 = np.log(part["nc1_trace"].to_numpy())
    early, late = (float(x) for x in dynamics.nc1_rates(K, n, lam, lam))
    sel = (t > 0.05) & (t < 2.0)
    slope = np.polyfit(t[sel], log_nc1[sel], 1)[0]
    assert -slope == pytest.approx(early, rel=1e-4)
    sel = t > 300.0
    slope = np.polyfit(t[sel], log_nc1[sel], 1)[0]
    assert -slope == pytest.approx(late, rel=1e-6)
    w, h = _mode_amplitudes("mse", part)
    np.testing.assert_allclose(w, h, rtol=1e-9)
    z0 = 1e-6
    np.testing.assert_allclose(h * h, dynamics.logistic(t, z0, K, n, lam), rtol=1e-8)
    t_half = float(dynamics.logistic_half_time(z0, K, n, lam))
    zinf = math.sqrt(n) * (1 - K * math.sqrt(n) * lam)
    # t_1/2 = ln(z_inf / z0 - 1) / (2 r), theory.md 1.2
    assert t_half == pytest.approx(math.log(zinf / z0 - 1) / (2 * (1 / (K * math.sqrt(n)) - lam)),
                                   rel=1e-12)
    got = crossing_time(t, h * h, zinf / 2, direction="above")
    assert got == pytest.approx(t_half, rel=1e-4)


def _solve_mode_ode(loss: str, lw: float, lh: float, w0: float, h0: float, t: np.ndarray
                    ) -> np.ndarray:
    """The prediction's mode ODE (w, h, int kappa w^2 / N) at the times t, by DOP853."""
    rhs = pred_mod._mode_rhs(loss, K_X, N_X, lw, lh)
    sol = solve_ivp(rhs, (0.0, float(t[-1])), [w0, h0, 0.0], method="DOP853", t_eval=t,
                    rtol=1e-12, atol=1e-15)
    assert sol.success
    return sol.y


@pytest.mark.parametrize("i", [2, 3], ids=["mse-unequal-decays", "ce"])
def test_prediction_mode_ode_follows_the_simulated_aligned_flow(exact_runs, i):
    """With a label-aligned init the flow stays on the modes, so the simulated (w, h) must
    follow the prediction's mode ODE; the within-class part decays as theory.md 1.2 says:
    in null(W) at e^(-lambda_H t) exactly, in range(W) (MSE) at e^(-lambda_H t - int w^2/N)
    (to O(eps^2) = 1e-10 relative). nc1_trace and onset_time follow from them."""
    loss, lw, lh, w0, h0, e_null, e_range = EXACT_RUNS[i]
    row, part = exact_runs[i]
    t = part["time"].to_numpy()
    w_ref, h_ref, integ = _solve_mode_ode(loss, lw, lh, w0, h0, t)
    w, h = _mode_amplitudes(loss, part)
    np.testing.assert_allclose(w, w_ref, rtol=1e-7)
    np.testing.assert_allclose(h, h_ref, rtol=1e-7)
    # tr Sigma_W: one deviation of size eps per sample; compared while the deviations are
    # well above the solver's atol (1e-14; they start at eps = 1e-5 .. 0.03)
    within = (e_null ** 2 * np.exp(-2 * lh * t)
              + e_range ** 2 * np.exp(-2 * lh * t - 2 * integ))
    live = within > 1e-4 * within[0]
    assert live.sum() > 500
    np.testing.assert_allclose(part["within_energy"].to_numpy()[live], within[live], rtol=1e-7)
    # tr Sigma_B = (K - 1)/(K n) h^2 for both mode sets
    ref_nc1 = within / ((K_X - 1) / (K_X * N_X) * h_ref ** 2)
    np.testing.assert_allclose(part["nc1_trace"].to_numpy()[live], ref_nc1[live], rtol=1e-7)
    thr = float(ref_nc1[0]) / 100.0
    want = onset_time(t, ref_nc1, thr)
    assert math.isfinite(want)
    assert onset_time(t, part["nc1_trace"].to_numpy(), thr) == pytest.approx(want, rel=1e-7)


def test_spectral_init_onset_and_half_time_in_the_simulator():
    """Package spectral init (every factor singular value a on the K modes, z0 = a^2): NC1 is
    0 from the start, so the simulated and the theory onset are both 0; fn^2 = z/n exactly,
    so fn reaches sqrt(z_inf / (2n)) at the logistic half time."""
    K, n, lam, a = K_X, N_X, 0.02, 0.1
    model = ModelSpec(loss="mse", bias="none", classes=K, per_class=n, dim=D_X)
    spec = RunSpec(model=model, reg=Regularization(lam, lam),
                   init=InitSpec(kind="spectral", scale=a, seed=2),
                   solver=SolverSpec(t_end=100.0, rtol=1e-11, atol=1e-14, gtol=0, records=1200))
    res = simulate(spec)
    row, part = res.runs.iloc[0], res.trajectories
    assert row["status"] == "ok"
    assert row["onset_time"] == 0.0 and row["onset_time_theory"] == 0.0
    t, fn = part["time"].to_numpy(), part["fn"].to_numpy()
    np.testing.assert_allclose(fn ** 2 * n, dynamics.logistic(t, a * a, K, n, lam), rtol=1e-8)
    zinf = math.sqrt(n) * (1 - K * math.sqrt(n) * lam)
    t_half = float(dynamics.logistic_half_time(a * a, K, n, lam))
    assert crossing_time(t, fn, math.sqrt(zinf / (2 * n))) == pytest.approx(t_half, rel=1e-5)
