"""Strict probes of the scalar per-mode solvers (theory/modes.py): deep MSE and deep CE global
minimisers against brute-force scalar minimisation and the closed forms of reference/theory.md
3.1 (with a data weight c != 1, at and beside the thresholds), and the CE ray's psi maximiser."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from theory_helpers import deep_mse_lam_glob, deep_mse_lam_stat

from ncsim.theory import modes


def _brute_min(g, hi, n_grid=200_001):
    """Global minimiser of a scalar g on [0, hi]: a fine grid refined by golden search."""
    xs = np.linspace(0.0, hi, n_grid)
    vals = g(xs)
    i = int(np.argmin(vals))
    if i == 0:
        return 0.0, float(vals[0])
    lo_, hi_ = xs[max(i - 1, 0)], xs[min(i + 1, n_grid - 1)]
    f = lambda v: float(g(np.array([float(v)]))[0])  # noqa: E731
    x = _golden(f, lo_, hi_)
    return x, f(x)


def _golden(f, a, b, iters=200):
    """Golden-section minimisation of a unimodal f on [a, b]."""
    r = (math.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    for _ in range(iters):
        if f(c) < f(d):
            b = d
        else:
            a = c
        c, d = b - r * (b - a), a + r * (b - a)
    return (a + b) / 2


def _g_mse(K, n, lam, M, c):
    """theory.md 3.1 per-mode objective with data weight c, N = K n, s = sqrt n."""
    N, s = K * n, math.sqrt(n)
    return lambda v: c / (2 * N) * (v - s) ** 2 + M / 2 * lam * np.abs(v) ** (2.0 / M)


@pytest.mark.parametrize(("K", "n", "M", "c"), [(3, 4, 3, 0.6), (4, 5, 4, 1.7), (5, 2, 5, 2.5)])
@pytest.mark.parametrize("frac", [0.3, 0.9, 1.1])
def test_deep_mse_mode_matches_brute_force_with_data_weight(K, n, M, c, frac):
    """sigma, objective and objective_zero of mse_mode (M >= 3, c != 1) equal a brute-force
    global minimisation of c/(2N)(sigma - s)^2 + (M/2) Lambda sigma^(2/M)."""
    lam = frac * deep_mse_lam_glob(K, n, M, c)
    sol = modes.mse_mode(np.array(float(K)), np.array(float(n)), np.array(lam), M, np.array(c))
    g = _g_mse(K, n, lam, M, c)
    x, gx = _brute_min(g, 2 * math.sqrt(n))
    assert float(sol.objective_zero) == pytest.approx(c / (2 * K), rel=1e-14)
    assert float(sol.objective) == pytest.approx(gx, rel=1e-9, abs=1e-14)
    assert float(sol.sigma) == pytest.approx(x, rel=1e-6, abs=1e-9)
    assert bool(sol.collapsed) == (frac < 1)


@pytest.mark.parametrize(("K", "n", "c"), [(3, 4, 0.6), (10, 7, 1.9)])
@pytest.mark.parametrize("frac", [0.0, 0.25, 0.999, 1.0, 1.5])
def test_two_factor_mse_mode_closed_form_with_data_weight(K, n, c, frac):
    """M = 2: sigma = max(s - N Lambda / c, 0), collapsed iff Lambda < c/(K sqrt n) (strict)."""
    s, N = math.sqrt(n), K * n
    lam = frac * c / (K * s)
    sol = modes.mse_mode(np.array(float(K)), np.array(float(n)), np.array(lam), 2, np.array(c))
    expect = max(s - N * lam / c, 0.0)
    assert float(sol.sigma) == pytest.approx(expect, rel=1e-12, abs=1e-12)
    assert bool(sol.collapsed) == (frac < 1)
    assert float(sol.objective) == pytest.approx(float(_g_mse(K, n, lam, 2, c)(expect)), rel=1e-12)
    if frac < 1:
        assert float(sol.sigma_local) == pytest.approx(expect, rel=1e-12)
    else:
        assert math.isnan(float(sol.sigma_local))


@pytest.mark.parametrize(("K", "n", "M", "c"), [(4, 5, 3, 1.0), (3, 4, 4, 0.6), (2, 9, 6, 2.0)])
def test_deep_mse_jump_and_bistable_window(K, n, M, c):
    """Just below Lambda_glob sigma jumps to sqrt(n)(M-2)/(M-1); between Lambda_glob and
    Lambda_stat the origin wins but the local minimiser (the larger root) is reported; above
    Lambda_stat there is no non-zero critical point (theory.md 3.1)."""
    s = math.sqrt(n)
    lg, ls = deep_mse_lam_glob(K, n, M, c), deep_mse_lam_stat(K, n, M, c)
    assert lg < ls
    args = (np.array(float(K)), np.array(float(n)))
    below = modes.mse_mode(*args, np.array(lg * (1 - 1e-9)), M, np.array(c))
    assert bool(below.collapsed)
    assert float(below.sigma) == pytest.approx(s * (M - 2) / (M - 1), rel=1e-4)
    # the tie: Lambda set to the package's own Lambda_glob expression -> the origin wins
    lg_pkg = float(
        modes.deep_mse_expression("Lambda_glob")(
            np.array(float(K * n)), np.array(s), M, np.array(lg), np.array(c)
        )
    )
    assert lg_pkg == pytest.approx(lg, rel=1e-12)
    at = modes.mse_mode(*args, np.array(lg_pkg), M, np.array(c))
    assert not bool(at.collapsed) and float(at.sigma) == 0.0
    mid_lam = (lg + ls) / 2
    mid = modes.mse_mode(*args, np.array(mid_lam), M, np.array(c))
    assert not bool(mid.collapsed) and float(mid.sigma) == 0.0
    loc = float(mid.sigma_local)
    x_max = (s * (M - 2) / (2 * (M - 1))) ** (1 / M)
    assert loc ** (1 / M) > x_max
    # stationarity phi(x) = Lambda at x = sigma^(1/M)
    x = loc ** (1 / M)
    assert c * x ** (M - 2) * (s - x**M) / (K * n) == pytest.approx(mid_lam, rel=1e-10)
    above = modes.mse_mode(*args, np.array(ls * 1.01), M, np.array(c))
    assert math.isnan(float(above.sigma_local)) and not bool(above.collapsed)


def _ce_g(K, n, lam, M):
    """theory.md CE on the ETF ray: log(1 + (K-1)e^(-sigma/sqrt n)) + (K-1)(M/2)Lam sig^(2/M)."""
    s = math.sqrt(n)
    return lambda v: np.log1p((K - 1) * np.exp(-v / s)) + (K - 1) * M / 2 * lam * v ** (2 / M)


def test_ce_objective_by_hand():
    """ce_objective at sigma = 1.3, K = 4, n = 5, Lambda = 0.02, M = 3, evaluated by hand."""
    got = modes.ce_objective(np.array(1.3), np.array(4.0), np.array(5.0), np.array(0.02), 3)
    want = math.log(1 + 3 * math.exp(-1.3 / math.sqrt(5))) + 3 * 1.5 * 0.02 * 1.3 ** (2 / 3)
    assert float(got) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize(("K", "n", "M"), [(3, 2, 3), (4, 5, 4), (10, 3, 5)])
def test_ce_psi_max_against_mpmath_maximisation(K, n, M):
    """ce_psi_max returns the maximiser of psi(sigma) = sigma^(1-2/M)/(sqrt n (e^(sigma/sqrt n)
    + K - 1)) and its value, against an mpmath root of d log psi / d sigma."""
    s = mp.sqrt(n)
    psi = lambda v: v ** (1 - mp.mpf(2) / M) / (s * (mp.exp(v / s) + K - 1))  # noqa: E731
    dlog = lambda v: (1 - mp.mpf(2) / M) / v - mp.exp(v / s) / (s * (mp.exp(v / s) + K - 1))  # noqa: E731
    ref = mp.findroot(dlog, (mp.mpf("1e-6"), 50 * s), solver="bisect")
    sig_m, psi_max = modes.ce_psi_max(np.array(float(K)), np.array(float(n)), M)
    assert float(sig_m) == pytest.approx(float(ref), rel=1e-9)
    assert float(psi_max) == pytest.approx(float(psi(ref)), rel=1e-12)


@pytest.mark.parametrize(("K", "n", "M"), [(3, 2, 3), (4, 5, 4)])
@pytest.mark.parametrize("frac", [0.2, 0.8, 1.3])
def test_ce_ray_matches_brute_force(K, n, M, frac):
    """ce_ray (M >= 3) picks the global minimiser of the CE ray objective (brute force), at
    Lambda a fraction of psi's maximum."""
    _, psi_max = modes.ce_psi_max(np.array(float(K)), np.array(float(n)), M)
    lam = frac * float(psi_max)
    sol = modes.ce_ray(np.array(float(K)), np.array(float(n)), np.array(lam), M)
    g = _ce_g(K, n, lam, M)
    x, gx = _brute_min(g, 60 * math.sqrt(n))
    assert float(sol.objective_zero) == pytest.approx(math.log(K), rel=1e-15)
    assert float(sol.objective) == pytest.approx(gx, rel=1e-9)
    assert float(sol.sigma) == pytest.approx(x, rel=1e-6, abs=1e-9)
    if frac > 1:
        assert math.isnan(float(sol.sigma_local))


@pytest.mark.parametrize("M", [2, 3, 4])
def test_ce_ray_without_decay_diverges(M):
    """Lambda = 0: the CE ray minimiser runs off to infinity (collapsed, objective reported 0)."""
    sol = modes.ce_ray(np.array(4.0), np.array(5.0), np.array(0.0), M)
    assert math.isinf(float(sol.sigma)) and bool(sol.collapsed)
    assert float(sol.objective) == 0.0


@pytest.mark.parametrize("M", [2, 3, 5])
def test_mse_mode_torch_matches_numpy(M):
    """mse_mode gives the same sigma on torch float64 tensors as on numpy arrays."""
    K = np.array([3.0, 4.0, 10.0])
    n = np.array([4.0, 5.0, 7.0])
    lam = (
        np.array([0.5, 0.9, 1.2]) * np.array([deep_mse_lam_glob(3, 4, 3, 1.0)] * 3)
        if M > 2
        else np.array([0.01, 0.05, 0.2])
    )
    a = modes.mse_mode(K, n, lam, M, np.ones(3))
    Kt, nt, lt, ct = (torch.tensor(v) for v in (K, n, lam, np.ones(3)))
    b = modes.mse_mode(Kt, nt, lt, M, ct)
    np.testing.assert_allclose(b.sigma.numpy(), a.sigma, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(b.collapsed.numpy(), a.collapsed)


@pytest.mark.parametrize(("K", "n", "depth"), [(3, 2, 2), (4, 5, 2), (10, 20, 3)])
def test_deep_ce_ray_ties_at_lambda_crit_go_to_the_origin(K, n, depth):
    """At Lambda_crit (and a hair above it, where the objective gap is within rounding) the
    deep CE ray is not collapsed; clearly below it is (the tie rule of modes.CE_TIE)."""
    from ncsim.theory import critical

    lc = float(critical.Lambda_crit("ce", np.array(float(K)), np.array(float(n)), depth))
    lams = np.array([lc, lc * (1 + 1e-14), lc * (1 - 1e-9)])
    sol = modes.ce_ray(np.full(3, float(K)), np.full(3, float(n)), lams, depth + 1)
    assert sol.collapsed.tolist() == [False, False, True]
    assert sol.sigma[0] == 0.0 and sol.sigma[1] == 0.0


@pytest.mark.parametrize(("K", "n"), [(3, 2), (4, 5), (10, 7)])
def test_two_factor_ce_ray_at_its_threshold_has_no_local_state(K, n):
    """M = 2 CE ray at Lambda = 1/(K sqrt n) exactly: origin, and sigma_local is NaN (strict)."""
    lam = 1 / (K * np.sqrt(float(n)))
    sol = modes.ce_ray(np.array(float(K)), np.array(float(n)), np.array(lam), 2)
    assert not bool(sol.collapsed) and math.isnan(float(sol.sigma_local))


@pytest.mark.parametrize("M", [3, 4, 6])
@pytest.mark.parametrize("lam", [1e-17, 1e-20])
def test_deep_mse_mode_with_a_vanishing_decay_sits_at_sqrt_n(M, lam):
    """A positive Lambda far below rounding gives sigma = sqrt(n) to rounding, never NaN/0."""
    sol = modes.mse_mode(np.array(4.0), np.array(5.0), np.array(lam), M, np.array(1.0))
    assert bool(sol.collapsed)
    assert float(sol.sigma) == pytest.approx(math.sqrt(5), rel=1e-12)
