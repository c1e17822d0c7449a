"""Closed forms against the formulas stated in reference/theory.md (to 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from ncsim.theory import (
    basin_threshold,
    deep_thresholds,
    dynamics,
    equilibrium,
    escape_time,
    escape_time_asymptotic,
    growth_rate,
    lambda_crit,
    logistic,
    logistic_half_time,
    logistic_integral,
    ufm,
)

POINTS = [(4, 5, 0.01, 0.02), (3, 2, 1e-3, 5e-4), (10, 20, 1e-4, 3e-4), (4, 5, 0.002, 0.002)]


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=tol, atol=1e-14)


@pytest.mark.parametrize("K,n,lw,lh", POINTS)
def test_mse_one_layer(K, n, lw, lh):
    r = np.sqrt(n * lw * lh)
    alpha = max(1 - K * r, 0)
    e = equilibrium("mse", "none", K, n, lw, lh)
    close(e.w_norm_star ** 2, np.sqrt(n * lh / lw) * alpha)
    close(e.fn_star ** 2, np.sqrt(lw / (n * lh)) * alpha)
    close(e.objective_star, K * (r - K / 2 * r ** 2))
    close(e.logit_true, alpha)
    f = equilibrium("mse", "free", K, n, lw, lh)
    close(f.w_norm_star ** 2, (K - 1) / K * max(np.sqrt(n * lh / lw) - K * n * lh, 0))
    close(f.fn_star ** 2, (K - 1) / K * np.sqrt(lw / (n * lh)) * alpha)
    close(f.objective_star, (K - 1) * (r - K / 2 * r ** 2))
    close(f.bias_star, 1 / K)


@pytest.mark.parametrize("lb", [0.3, 2.0, 50.0])
def test_mse_reg_bias(lb):
    K, n, lw, lh = 4, 5, 0.01, 0.02
    r = np.sqrt(n * lw * lh)
    alpha, alpha0 = 1 - K * r, max(1 - K * r * (1 + lb) / lb, 0)
    e = equilibrium("mse", "reg", K, n, lw, lh, lb)
    rho, rho0 = np.sqrt(n * lh / lw) * alpha, np.sqrt(n * lh / lw) * alpha0
    close(e.w_norm_star ** 2, rho * (K - 1) / K + rho0 / K)  # diagonal of W W^T
    close(e.bias_star, (1 - alpha0) / (K * (1 + lb)))


@pytest.mark.parametrize("K,n,lw,lh", POINTS)
def test_ce_one_layer(K, n, lw, lh):
    r = np.sqrt(n * lw * lh)
    e = equilibrium("ce", "none", K, n, lw, lh)
    log = np.log(1 / r - (K - 1))
    close(e.w_norm_star ** 2, (K - 1) / K * np.sqrt(n * lh / lw) * log)
    close(e.fn_star ** 2, (K - 1) / K * np.sqrt(lw / (n * lh)) * log)
    close(e.margin_star, log)
    close(e.loss_star, -np.log(1 - (K - 1) * r))
    from ncsim.theory import symbols as S
    prob = ufm.derive_ce()["prob_star"].subs({S.K: K, S.n: n, S.Lam: np.sqrt(lw * lh)})
    close(float(prob), 1 - (K - 1) * r)


def test_one_layer_threshold_and_torch():
    for K, n in [(4, 5), (10, 20)]:
        close(lambda_crit("mse", "none", K, n), 1 / (K * np.sqrt(n)))
        close(lambda_crit("ce", "free", K, n, ratio=4.0), 1 / (K * np.sqrt(n) * 2))
    lam = torch.tensor([1e-3, 1e-2, 0.2], dtype=torch.float64)
    et = equilibrium("ce", "none", 4, 5, lam, lam)
    en = equilibrium("ce", "none", 4, 5, lam.numpy(), lam.numpy())
    assert isinstance(et.fn_star, torch.Tensor)
    close(et.fn_star.numpy(), en.fn_star)
    assert et.collapsed.tolist() == [True, True, False]


@pytest.mark.parametrize("M", [3, 4, 6])
def test_deep_thresholds(M):
    K, n = 4, 5
    N, s = K * n, np.sqrt(n)
    lam = np.array([1e-3, 0.02, 0.05])
    th = deep_thresholds(K, n, lam, M - 1)
    close(th.tau_glob, (M - 1) / (M - 2) * ((M - 2) * N * lam) ** (M / (2 * (M - 1))))
    close(th.tau_stat, 2 * (M - 1) / (M - 2) * (N * lam * (M - 2) / M) ** (M / (2 * (M - 1))))
    close(th.sigma_jump, s * (M - 2) / (M - 1))
    # g(sigma_jump) = g(0) at Lambda_glob, and the jump is a stationary point
    sj, lg = th.sigma_jump[0], th.Lambda_glob[0]
    g = lambda x: (x - s) ** 2 / (2 * N) + M / 2 * lg * x ** (2 / M)  # noqa: E731
    close(g(sj), g(0.0))


def test_deep_lambda_crit_matches_theory_md():
    got = [float(lambda_crit("mse", "none", 4, 5, L)) for L in (2, 3, 5)]
    np.testing.assert_allclose(got, [0.05802, 0.04550, 0.03295], atol=6e-6)


def test_deep_first_order_jump():
    lc = float(lambda_crit("mse", "none", 4, 5, 2))
    below = equilibrium("mse", "none", 4, 5, lc * (1 - 1e-9), lc * (1 - 1e-9), depth=2)
    above = equilibrium("mse", "none", 4, 5, lc * (1 + 1e-9), lc * (1 + 1e-9), depth=2)
    assert bool(below.collapsed) and not bool(above.collapsed)
    np.testing.assert_allclose(below.sigma, np.sqrt(5) / 2, rtol=1e-6)
    assert np.isfinite(above.sigma_local)  # still a metastable collapsed state


def test_basin_root():
    K, n, lam, M = 4, 5, 0.01, 3
    a_u = float(basin_threshold("mse", K, n, lam, M - 1))
    close((np.sqrt(n) - a_u ** M) * a_u ** (M - 2), K * n * lam)
    assert a_u < (np.sqrt(n) * (M - 2) / (2 * (M - 1))) ** (1 / M)
    np.testing.assert_allclose(a_u, K * n * lam / np.sqrt(n), rtol=0.02)


def test_growth_rate_formula():
    K, n, lw, lh = 4, 5, 0.01, 0.03
    mu = -(lw + lh) / 2 + np.sqrt(((lw - lh) / 2) ** 2 + 1 / (K ** 2 * n))
    close(growth_rate(K, n, lw, lh), mu)


@pytest.mark.parametrize("lam", [0.0, 0.01, 0.08])
def test_logistic_vs_ode(lam):
    K, n, z0 = 4, 5, 1e-3
    N, s = K * n, np.sqrt(n)
    ts = np.linspace(0, 300, 31)
    sol = solve_ivp(lambda t, z: 2 * z * ((s - z) / N - lam), (0, 300), [z0], t_eval=ts,
                    rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(logistic(ts, z0, K, n, lam), sol.y[0], rtol=1e-8)
    th = float(logistic_half_time(z0, K, n, lam))
    np.testing.assert_allclose(logistic(th, z0, K, n, lam), (s - N * lam) / 2, rtol=1e-10)
    # the scalar mode ODE of (w, h) with w = h reproduces z = w h
    wsol = solve_ivp(lambda t, y: [(s - y[0] * y[1]) * y[1] / N - lam * y[0],
                                   (s - y[0] * y[1]) * y[0] / N - lam * y[1]],
                     (0, 300), [np.sqrt(z0)] * 2, t_eval=ts, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(wsol.y[0] * wsol.y[1], sol.y[0], rtol=1e-7)
    integ = solve_ivp(lambda t, y: [float(logistic(t, z0, K, n, lam))], (0, 300), [0.0],
                      rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(logistic_integral(300.0, z0, K, n, lam), integ.y[0, -1],
                               rtol=1e-8)


def test_logistic_solves_ode_symbolically():
    d = dynamics.derive()
    from ncsim.theory.dynamics import r_sym, z_inf
    from ncsim.theory.symbols import t, z0
    z = d["logistic"]
    assert sp.simplify(sp.diff(z, t) - 2 * r_sym * z * (1 - z / z_inf)) == 0
    assert sp.simplify(z.subs(t, 0) - z0) == 0


def test_escape_times():
    K, n = 4, 5
    for depth, a0 in [(2, 0.05), (3, 0.1), (5, 0.3)]:
        M = depth + 1
        exact = escape_time(K, n, a0, (np.sqrt(n) / 2) ** (1 / M), depth)
        asym = float(escape_time_asymptotic(K, n, a0, depth))
        assert 0.5 < exact / asym < 1.1
    trapped = escape_time(K, n, 0.9 * float(basin_threshold("mse", K, n, 0.01, 2)), 1.0, 2,
                          0.01)
    assert trapped == np.inf
