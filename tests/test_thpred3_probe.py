"""Third mutation probe of ncsim.theory.prediction: d < K, unequal-decay regularised bias,
zero decays, regimes of a missing onset and the grazing branches of the crossing search."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from ncsim.errors import InputError
from ncsim.theory import prediction
from ncsim.theory.prediction import _ModeCurves, predicted_onset


def _absolute_energies(curves, times):
    """(between, within, mean) of the curves at ``times``, out of their units of unit^2."""
    *scaled, unit = curves.energies(times, curves.states)
    return [e * unit ** 2 for e in scaled]


def _e_minus_h2(lw, lh, g):
    """Squared h-component of the decaying eigenvector of [[-lw, g], [g, -lh]] and its
    eigenvalue (closed form: e_- proportional to (g, mu_- + lw))."""
    mu_m = -(lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + g * g)
    return (mu_m + lw) ** 2 / (g * g + (mu_m + lw) ** 2), mu_m


def _e_plus(lw, lh, g):
    """Growing eigenvector (g, mu_+ + lw) normalised (first component > 0)."""
    mu_p = -(lw + lh) / 2 + math.sqrt(((lw - lh) / 2) ** 2 + g * g)
    v = np.array([g, mu_p + lw])
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("bias", ["none", "free"])
def test_within_energy_for_d_below_k_decays_entirely_with_the_modes(bias):
    """d = 2 < K = 4 (MSE): range(W) is all of the d directions (r_W = min(K or K - 1, d) =
    d), so the within-class energy is e0 e^(-2 lh t) e^(-2 int w^2 / N), solved here."""
    K, n, d, lw, lh, a = 4, 5, 2, 0.01, 0.02, 0.1
    s, N, g = math.sqrt(n), K * n, 1 / (K * math.sqrt(n))

    def rhs(t, y):
        w, h, _ = y
        return [(s - w * h) * h / N - lw * w, (s - w * h) * w / N - lh * h, w * w / N]

    times = np.array([0.0, 1.0, 20.0, 100.0, 300.0])
    sol = solve_ivp(rhs, (0, 300), [*(math.sqrt(d) * a * _e_plus(lw, lh, g)), 0.0],
                    method="DOP853", t_eval=times, rtol=1e-12, atol=1e-15)
    within = a * a * d * (N - K) * np.exp(-2 * lh * times) * np.exp(-2 * sol.y[2])
    curves = prediction._curves("mse", bias, K, n, d, lw, lh, a, times)
    np.testing.assert_allclose(_absolute_energies(curves, times)[1], within, rtol=1e-7)


def test_reg_bias_mean_energy_with_unequal_decays():
    """MSE, regularised bias, lambda_W != lambda_H: the mean energy's decaying part uses the
    h-component of the decaying eigenvector of the mean-mode Jacobian (coupling g lb/(1+lb)),
    not that of the growing one; mean mode solved here from its own e_+."""
    K, n, d, lw, lh, lb, a = 4, 5, 20, 0.002, 0.05, 0.5, 0.1
    s, N = math.sqrt(n), K * n
    g0 = lb / (1 + lb) / (K * s)
    h2m, mu_m = _e_minus_h2(lw, lh, g0)

    def rhs(t, y):
        w0, h0, beta = y
        r = s - w0 * h0 - math.sqrt(N) * beta
        return [r * h0 / N - lw * w0, r * w0 / N - lh * h0, r / math.sqrt(N) - lb * beta]

    times = np.array([0.0, 1.0, 10.0, 50.0, 200.0])
    sol = solve_ivp(rhs, (0, 200), [*(math.sqrt(d) * a * _e_plus(lw, lh, g0)), 0.0],
                    method="DOP853", t_eval=times, rtol=1e-12, atol=1e-15)
    mean = sol.y[1] ** 2 + d * a * a * h2m * np.exp(2 * mu_m * times)
    curves = prediction._curves("mse", "reg", K, n, d, lw, lh, a, times, lb)
    np.testing.assert_allclose(_absolute_energies(curves, times)[2], mean, rtol=1e-7)


def test_zero_decays_onset_is_the_logistic_closed_form():
    """lambda_W = lambda_H = 0 (MSE, no bias): "no_minimiser", default horizon 40 / g
    (clipped), and the onset of the logistic mode z = h^2, z' = 2 (s - z) z / N, with
    int w^2 / N = ln(1 + z0 (e^(rt) - 1) / s) / 2, r = 2 s / N (closed form + brentq)."""
    K, n, d, a, thr = 4, 5, 20, 1e-3, 0.01
    s, N, g = math.sqrt(n), K * n, 1 / (K * math.sqrt(n))
    z0, r = d * a * a / 2, 2 * s / N

    def nc1(t):
        grow = 1 + z0 * math.expm1(r * t) / s
        z = s * z0 * math.exp(r * t) / (s + z0 * math.expm1(r * t))
        between = (K - 1) * (z + d * a * a / 2 * math.exp(-2 * g * t))
        within = a * a * d * (N - K) * ((d - K) / d + K / d / grow)
        return within / between - thr

    want = brentq(nc1, 1.0, 1e3, xtol=1e-12, rtol=1e-13)
    pred = predicted_onset("mse", "none", K, n, d, 0.0, 0.0, a, thr)
    assert pred.regime == "no_minimiser"
    assert pred.onset_time == pytest.approx(want, rel=1e-7)
    assert math.isnan(pred.lead_time) and math.isnan(pred.fn_cross_time)
    assert prediction._horizon("mse", "none", 10, 100, 20, 0.0, 0.0, 0.1, 0.01) == 4000.0


def test_zero_weight_decay_has_no_minimiser():
    """lambda_W = 0 < lambda_H (one layer): "no_minimiser", fn*, delta and lead NaN."""
    pred = predicted_onset("mse", "none", 4, 5, 20, 0.0, 0.01, 0.1)
    assert pred.regime == "no_minimiser"
    assert 0 < pred.onset_time < math.inf
    assert math.isnan(pred.lead_time) and math.isnan(pred.fn_cross_time)
    assert math.isnan(pred.delta)


def test_one_layer_vanishing_point_never_collapses():
    """K sqrt(n lw lh) = 1.2 > 1: "vanishing", onset inf (never), the rest NaN."""
    pred = predicted_onset("mse", "none", 2, 4, 10, 0.3, 0.3, 0.1)
    assert pred.regime == "vanishing"
    assert pred.onset_time == math.inf
    assert all(math.isnan(x) for x in (pred.lead_time, pred.fn_cross_time, pred.delta))


def test_no_onset_takes_precedence_over_the_small_d_flag():
    """d = 10 < 5K with no crossing in the horizon: regime "no_onset", not "approximate"."""
    pred = predicted_onset("mse", "none", 4, 5, 10, 0.01, 0.01, 1e-3, t_max=1.0)
    assert pred.regime == "no_onset" and pred.onset_time == math.inf
    assert predicted_onset("mse", "none", 4, 5, 10, 0.01, 0.01, 1e-3).regime == (
        "approximate: d < 5K")


def test_lead_is_nan_when_fn_crosses_but_nc1_never_does():
    """Threshold 1e-40 (never reached): onset inf, lead NaN (not -inf), while the fn crossing
    is that of the default threshold (fn does not depend on it)."""
    args = ("mse", "none", 4, 5, 20, 0.01, 0.01, 0.5)
    pred = predicted_onset(*args, threshold=1e-40)
    ref = predicted_onset(*args)
    assert pred.regime == "no_onset" and pred.onset_time == math.inf
    assert math.isnan(pred.lead_time)
    assert math.isfinite(ref.fn_cross_time)
    assert pred.fn_cross_time == ref.fn_cross_time


def _first(t, states):
    """The curve: the first state component."""
    return np.asarray(states)[:, 0]


def test_grid_crossing_not_confirmed_by_the_dense_solution_is_the_grid_time():
    """Grid says y crosses 0 upward on [1, 2], the dense solution (constant -1 from the grid
    state at t = 1) stays below: the crossing is the grid's own time t1 = 2, not t0."""
    grid = np.array([0.0, 1.0, 2.0, 3.0])
    states = np.array([[-1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    curves = _ModeCurves(lambda t, y: [0.0, 0.0, 0.0], grid, states, None, 1)
    assert curves.first_crossing(_first, 0.0, "up") == 2.0


class _DenseSolution:
    """Stands in for solve_ivp's result: its ``sol(t)`` is the state (value(t), 0, 0)."""

    def __init__(self, value) -> None:
        self.sol = lambda t: np.array([value(float(t)), 0.0, 0.0])


@pytest.mark.parametrize(("at_t0", "expected"), [(0.5, 1.0), (0.4, 1.0), (0.6, 2.0)])
def test_a_grazing_cell_is_decided_by_the_dense_solution_at_its_ends(monkeypatch, at_t0,
                                                                     expected):
    """Grazing, "down" to 0.5: the grid has 1 at t0 = 1 and 0 at t1 = 2, but the cell's dense
    solution is at 0.6 at both ends. It crosses at t0 when its t0 value is at the level or past
    it (0.5, 0.4), else at the grid's own time t1 (0.6 at both ends: never crossed)."""
    monkeypatch.setattr(prediction, "solve_ivp", lambda *a, **k: _DenseSolution(
        lambda t: at_t0 if t == 1.0 else 0.6))
    grid = np.array([0.0, 1.0, 2.0])
    states = np.array([[1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]])
    curves = _ModeCurves(lambda t, y: [0.0, 0.0, 0.0], grid, states, None, 1)
    assert curves.first_crossing(_first, 0.5, "down") == expected


@pytest.mark.parametrize("direction", ["Up", "", "both"])
def test_crossing_search_refuses_an_unknown_direction(direction):
    """first_crossing takes "up" or "down" only: anything else is a ValueError naming it."""
    grid = np.array([0.0, 1.0])
    curves = _ModeCurves(lambda t, y: [0.0, 0.0, 0.0], grid, np.zeros((2, 3)), None, 1)
    with pytest.raises(ValueError, match=rf"^crossing direction must be 'up' or 'down', "
                                         rf"got {direction!r}$"):
        curves.first_crossing(_first, 1.0, direction)


ARGS = ("mse", "none", 2, 2, 10, 0.05, 0.05, 0.3)


@pytest.mark.parametrize("d", [0, -3, 2.5])
def test_dimension_below_one_or_fractional_is_refused(d):
    """d must be an integer >= 1: 0, negatives and 2.5 are refused with the exact message."""
    args = {"loss": "mse", "bias": "none", "K": 2, "n": 2, "d": d, "lambda_w": 0.05,
            "lambda_h": 0.05, "init_scale": 0.3}
    with pytest.raises(InputError, match=rf"^dimension d must be an integer >= 1, got {d!r}$"):
        predicted_onset(**args)


@pytest.mark.parametrize("t_max", [0.0, -5.0, math.inf, math.nan])
def test_bad_horizon_is_refused(t_max):
    """t_max must be a finite number > 0: 0, negative, inf and NaN are refused."""
    with pytest.raises(InputError, match=r"^t_max must be a finite number > 0 \(or None for "
                                         r"the default\), got "):
        predicted_onset(*ARGS, t_max=t_max)


@pytest.mark.parametrize("delta", [math.inf, math.nan])
def test_non_finite_delta_is_refused(delta):
    """delta = inf or NaN is refused (finite number > -1), not turned into a level."""
    with pytest.raises(InputError, match=r"^delta must be a finite number > -1 \(the fn level "
                                         r"\(1 \+ delta\) fn\* must be > 0\), got "):
        predicted_onset(*ARGS, delta=delta)


@pytest.mark.parametrize(("lw", "lh"), [(0.01, 0.0), (0.0, 0.01)])
def test_deep_zero_decay_has_no_minimiser(lw, lh):
    """Deep head (L = 2) with a zero weight or feature decay: "no_minimiser", onset NaN."""
    pred = predicted_onset("mse", "none", 4, 5, 20, lw, lh, 0.3, depth=2)
    assert pred.regime == "no_minimiser"
    assert all(math.isnan(x) for x in (pred.onset_time, pred.lead_time, pred.fn_cross_time,
                                       pred.delta))


def test_metastable_onset_is_the_escape_time_to_half_the_local_sigma():
    """Deep MSE (K=4, n=5, d=20, L=2, lambda = 0.063: origin global, collapsed state local):
    onset = escape time of the balanced flow a' = (s - a^3) a^2 / N - lambda a from
    a sqrt(d/2) = 0.759 to (sigma_local / 2)^(1/3) = 0.782, sigma_local the upper root of
    (sigma - s)/N + lambda sigma^(-1/3) = 0 (brentq + quad here: 5.518)."""
    from scipy.integrate import quad

    K, n, d, lam, a, M = 4, 5, 20, 0.063, 0.24, 3
    s, N = math.sqrt(n), K * n
    sigma = brentq(lambda x: (x - s) / N + lam * x ** (2 / M - 1), 0.5, s, xtol=1e-15,
                   rtol=1e-15)
    want = quad(lambda x: 1 / ((s - x ** M) * x ** (M - 1) / N - lam * x),
                a * math.sqrt(d / 2), (sigma / 2) ** (1 / M), epsabs=0, epsrel=1e-13,
                limit=200)[0]
    pred = predicted_onset("mse", "none", K, n, d, lam, lam, a, depth=2)
    assert pred.regime == "escape_time_only: metastable"
    assert pred.onset_time == pytest.approx(want, rel=1e-9)
