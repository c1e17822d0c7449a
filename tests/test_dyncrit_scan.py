"""Extreme-parameter scan of ncsim.theory.dynamics and ncsim.theory.critical: the aligned
mode flow's fate and basin root, the logistic closed forms at z0 = 0, the NC1 early rate at
large equal decays, and invariants that held (checked against independent references
written here: the mode ODE in log-amplitudes, mpmath quadratures, the logistic closed form)."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from ncsim.theory import critical, dynamics, modes

K4, N5 = 4, 5


def _ref_fate(loss, K, n, a0, decays, horizon=3e3):
    """Fate of the aligned mode flow integrated in x_j = log a_j (no event, no absolute
    tolerance on a_j), classified at t = horizon / min(decays) by u / sigma_local."""
    lams = np.array(decays, dtype=float)
    M = lams.size
    lam = math.prod(decays) ** (1 / M)
    sol = modes.mse_mode(K, n, lam, M) if loss == "mse" else modes.ce_ray(K, n, lam, M)
    target = float(sol.sigma_local)
    s, N = math.sqrt(n), K * n

    def drive(u):
        if loss == "mse":
            return (s - u) / N
        return 1 / (s * (math.exp(u / s) + K - 1)) if u / s < 700 else 0.0

    def rhs(t, x):
        lu = float(x.sum())
        return drive(math.exp(min(lu, 700.0))) * np.exp(np.minimum(lu - 2 * x, 700.0)) - lams

    r = solve_ivp(rhs, (0.0, horizon / lams.min()), np.full(M, math.log(a0)),
                  method="LSODA", rtol=1e-11, atol=1e-11)
    q = math.exp(float(r.y[:, -1].sum())) / target
    if abs(q - 1) < 1e-6:
        return "collapse"
    return "origin" if q < 1e-10 else "undecided"


# --- findings (fixed): each failed before ------------------------------------------------


@pytest.mark.parametrize("loss,a0,decays", [
    ("mse", 5e-3, (1e-7, 1e-7, 1.0)),
    ("ce", 1e-2, (10.0, 1e-9, 1e-9))])
def test_aligned_fate_does_not_stop_at_a_transient_dip(loss, a0, decays):
    """A fast factor falls first, so u dips below 1e-10 sigma_local, then the slow ones grow:
    the log-amplitude flow (no event) collapses, and aligned_fate must say so."""
    assert _ref_fate(loss, K4, N5, a0, decays) == "collapse"
    assert dynamics.aligned_fate(loss, K4, N5, a0, decays) == "collapse"


def test_aligned_basin_root_with_a_fast_factor_matches_the_flow():
    """MSE K=4 n=5 decays (1e-7, 1e-7, 1): the basin root of the log-amplitude flow (bisected
    here: 0.99 x 2.8275e-3 -> origin, 1.01 x -> collapse) is what aligned_basin_root returns."""
    decays, want = (1e-7, 1e-7, 1.0), 2.8275e-3
    assert _ref_fate("mse", K4, N5, 0.99 * want, decays) == "origin"
    assert _ref_fate("mse", K4, N5, 1.01 * want, decays) == "collapse"
    got = dynamics.aligned_basin_root("mse", K4, N5, decays)
    assert abs(got / want - 1) < 0.01


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_fate_of_equal_decays_near_the_fold_is_a0_above_a_u(loss):
    """Equal decays Lambda_stat (1 - 1e-6), a0 = 2 a_u: the docstring's rule (collapse iff
    a0 > a_u) says 'collapse'; the 1-D flow from there falls monotonically to sigma_local."""
    M = 3
    if loss == "mse":
        stat = float(critical.deep_thresholds(K4, N5, 0.01, 2).Lambda_stat)
    else:
        stat = float(modes.ce_psi_max(np.array(4.0), np.array(5.0), M)[1])
    lam = stat * (1 - 1e-6)
    a_u = float(critical.basin_threshold(loss, K4, N5, lam, 2))
    assert dynamics.aligned_fate(loss, K4, N5, 2 * a_u, (lam,) * M) == "collapse"


def test_one_layer_aligned_fate_below_lambda_crit_is_not_origin():
    """M = 2, equal decays 0.99 lambda_crit, a0 = 1e-12: the origin is a saddle and the
    logistic closed form rises to z_inf (finite half time), so the fate is 'collapse'."""
    lam = 0.99 / (K4 * math.sqrt(N5))
    assert math.isfinite(float(dynamics.logistic_half_time(1e-24, K4, N5, lam)))
    assert float(dynamics.logistic(1e9, 1e-24, K4, N5, lam)) > 0.02
    assert dynamics.aligned_fate("mse", K4, N5, 1e-12, (lam, lam)) == "collapse"


def test_ce_aligned_fate_of_a_large_init_with_spread_decays_collapses():
    """CE, a0 = 1e4, decays (0.1, 0.01, 1e-3, 1e-4): the log-amplitude flow collapses; so
    must aligned_fate (not NaN read as 'undecided')."""
    decays = (0.1, 0.01, 1e-3, 1e-4)
    assert _ref_fate("ce", K4, N5, 1e4, decays, horizon=1e3) == "collapse"
    assert dynamics.aligned_fate("ce", K4, N5, 1e4, decays) == "collapse"


@pytest.mark.parametrize("t,K,n,lam", [(1e3, 2, 1, 1.0), (1e8, 4, 5, 0.0)])
def test_logistic_from_zero_stays_zero(t, K, n, lam):
    """z0 = 0 is a fixed point of dz/dt = 2 z (r - z/N): z(t) = 0 for every t, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(dynamics.logistic(t, 0.0, K, n, lam)) == 0.0


@pytest.mark.parametrize("t,K,n,lam", [(1e3, 2, 1, 0.1), (1e8, 4, 5, 0.0)])
def test_logistic_integral_from_zero_is_zero(t, K, n, lam):
    """z0 = 0: z stays 0, so int_0^t z = 0 (finite, as the docstring promises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(dynamics.logistic_integral(t, 0.0, K, n, lam)) == 0.0


@pytest.mark.parametrize("lam", [1.0, 10.0])
def test_nc1_early_rate_at_large_equal_decays_is_2g(lam):
    """Equal decays: mu = g - lambda, so 2(lambda_H + mu) = 2 g = 2/(K sqrt n) exactly."""
    early, _ = dynamics.nc1_rates(1000, 10000, lam, lam)
    assert abs(float(early) / 2e-5 - 1) < 1e-14


# --- invariants that held -------------------------------------------------------------------


@pytest.mark.parametrize("loss,K,n,depth,frac", [
    ("mse", 2, 1, 2, 1e-9), ("mse", 1000, 10, 3, 0.5), ("mse", 3, 10000, 5, 0.999),
    ("ce", 100, 1, 2, 1e-6), ("ce", 10, 100, 3, 0.9), ("ce", 4, 5, 5, 0.1)])
def test_aligned_fate_of_equal_decays_splits_at_basin_threshold(loss, K, n, depth, frac):
    """Equal decays at frac x Lambda_stat: 1 + 1e-4 of a_u collapses, 1 - 1e-4 of it goes
    to the origin (the docstring's rule a0 > a_u), over K 2..1000, n 1..1e4, depth 2..5."""
    M = depth + 1
    if loss == "mse":
        stat = float(critical.deep_thresholds(K, n, 0.01, depth).Lambda_stat)
    else:
        stat = float(modes.ce_psi_max(np.array(float(K)), np.array(float(n)), M)[1])
    lam = frac * stat
    a_u = float(critical.basin_threshold(loss, K, n, lam, depth))
    assert dynamics.aligned_fate(loss, K, n, a_u * (1 + 1e-4), (lam,) * M) == "collapse"
    assert dynamics.aligned_fate(loss, K, n, a_u * (1 - 1e-4), (lam,) * M) == "origin"


@pytest.mark.parametrize("K,n,depth,a0", [(2, 1, 2, 1e-12), (4, 5, 3, 1e-12),
                                          (2, 1, 5, 1e-6), (1000, 10000, 2, 1e-12)])
def test_escape_time_of_a_tiny_init_against_mpmath(K, n, depth, a0):
    """lambda = 0: t = N/M int u^(2/M - 2)/(s - u) du from a0^M to s/2 (mpmath in log u)
    within 1e-14, and within 1e-4 of the small-init asymptote N a0^(2-M)/((M-2) s)."""
    M, s, N = depth + 1, math.sqrt(n), K * n
    with mp.workdps(30):
        v0, v1 = M * mp.log(a0), mp.log(s / 2)
        want = N / mp.mpf(M) * mp.quad(lambda v: mp.e ** (v * (mp.mpf(2) / M - 1))
                                       / (s - mp.e ** v), mp.linspace(v0, v1, 30))
    got = dynamics.escape_time(K, n, a0, (s / 2) ** (1 / M), depth, 0.0)
    assert abs(got / float(want) - 1) < 1e-14
    asym = float(dynamics.escape_time_asymptotic(K, n, a0, depth))
    assert abs(got / asym - 1) < 1e-4


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_basin_threshold_is_finite_just_below_the_fold_and_nan_just_above(loss):
    """Lambda_stat (1 -+ 1e-9) (K=10, n=100, L=3): a finite lower root below the fold,
    NaN (no non-zero critical point) above it."""
    K, n, depth = 10, 100, 3
    if loss == "mse":
        stat = float(critical.deep_thresholds(K, n, 0.01, depth).Lambda_stat)
    else:
        stat = float(modes.ce_psi_max(np.array(10.0), np.array(100.0), depth + 1)[1])
    assert math.isfinite(float(critical.basin_threshold(loss, K, n, stat * (1 - 1e-9), depth)))
    assert math.isnan(float(critical.basin_threshold(loss, K, n, stat * (1 + 1e-9), depth)))


# --- how aligned_fate decides ---------------------------------------------------------------


def _no_integration(monkeypatch):
    """Make any ODE solve in theory.dynamics fail the test (the answer must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("integrated although the start decides the fate")

    monkeypatch.setattr(dynamics, "solve_ivp", refuse)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_fate_at_the_collapsed_state_needs_no_integration(loss, monkeypatch):
    """Equal decays, a0 = sigma_local^(1/M): the start is the critical point, "collapse"."""
    lam, M = 0.01, 3
    sol = modes.mse_mode(K4, N5, lam, M) if loss == "mse" else modes.ce_ray(K4, N5, lam, M)
    a0 = float(sol.sigma_local) ** (1 / M)
    _no_integration(monkeypatch)
    assert dynamics.aligned_fate(loss, K4, N5, a0, (lam,) * M) == "collapse"


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_fate_inside_the_certified_basin_needs_no_integration(loss, monkeypatch):
    """A start with G a0^(M-2) <= lambda_min / 2 (G = drive(0): 1/(K sqrt n) for both losses)
    lies where the energy provably falls: "origin" at once; the reference flow agrees."""
    decays = (0.04, 0.01, 0.005)  # M = 3 factors
    g = 1 / (K4 * math.sqrt(N5))
    a0 = 0.9 * min(decays) / (2 * g)  # G x^(M/2 - 1) = G a0 for M = 3
    assert _ref_fate(loss, K4, N5, a0, decays) == "origin"
    _no_integration(monkeypatch)
    assert dynamics.aligned_fate(loss, K4, N5, a0, decays) == "origin"


@pytest.mark.parametrize("M", [3, 4])
def test_one_layer_rule_and_the_certificate_agree_with_the_reference_flow(M):
    """Spread decays and a0 over four decades: every fate equals the event-free reference
    flow's (integrated in log amplitudes to 3000 / min(decays))."""
    decays = (0.05, 0.002, 0.01, 0.0005)[:M]
    for loss in ("mse", "ce"):
        for a0 in (1e-3, 1e-2, 1e-1, 1.0, 10.0):
            assert dynamics.aligned_fate(loss, K4, N5, a0, decays) == _ref_fate(
                loss, K4, N5, a0, decays), (loss, a0)


def test_aligned_fate_refuses_amplitudes_that_left_the_floats(monkeypatch):
    """An ODE that ends (status 0) at non-finite amplitudes raises ArithmeticError, not a
    fate read from NaN."""
    import types

    monkeypatch.setattr(dynamics, "solve_ivp", lambda *a, **k: types.SimpleNamespace(
        status=0, message="", y=np.full((3, 1), np.nan), t_events=[[], []]))
    with pytest.raises(ArithmeticError, match="left the floats"):
        dynamics.aligned_fate("mse", K4, N5, 0.5, (0.04, 0.04, 0.005))


def test_one_layer_aligned_fate_is_collapse_wherever_a_critical_point_exists(monkeypatch):
    """M = 2: "collapse" without integrating below lambda_crit (the origin is a saddle),
    "origin" above it (no non-zero critical point); lambda_crit = 1/(K sqrt n)."""
    crit = 1 / (K4 * math.sqrt(N5))
    _no_integration(monkeypatch)
    for loss in ("mse", "ce"):
        assert dynamics.aligned_fate(loss, K4, N5, 1e-12, (0.5 * crit, 1.9 * crit)) == "collapse"
        assert dynamics.aligned_fate(loss, K4, N5, 10.0, (1.1 * crit, 1.1 * crit)) == "origin"
